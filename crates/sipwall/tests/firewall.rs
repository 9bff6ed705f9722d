//! `sipwall firewall` against the kernel, in network namespaces the tests create and
//! always delete: the plan loads as one transaction, traffic through a veth pair is
//! accepted or dropped as the policy says (and the named counters rise), an unconfirmed
//! apply is rolled back, a confirmed one stays, and a refused transaction leaves the
//! previous ruleset in place.
//!
//! They need root, `nft` and `ip` (`scripts/test` installs the tools); without them they
//! fail and say what is missing.
//!
//! No leak detector runs here: these tests never start the proxy (`sipwall run`), only
//! `sipwall firewall`, so nothing of the inside is ever forwarded; the traffic through
//! the veth pair is the tests' own.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SIPWALL: &str = env!("CARGO_BIN_EXE_sipwall");

/// Fails the test, naming what is missing, when the kernel tests cannot run.
fn require_kernel_tools() {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
    });
    let has = |tool: &str, arg: &str| Command::new(tool).arg(arg).output().is_ok();
    let missing = match (root, has("nft", "--version"), has("ip", "-V")) {
        (false, _, _) => Some("root"),
        (_, false, _) => Some("nft (Debian package nftables)"),
        (_, _, false) => Some("ip (Debian package iproute2)"),
        _ => None,
    };
    if let Some(what) = missing {
        panic!("the firewall tests need {what}");
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace of these tests (deleted when dropped, also when the test fails),
/// with a small number unique within this test run, for interface names and addresses.
struct Netns {
    ns: common::netns::Netns,
    n: u32,
}

impl Netns {
    fn new() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Netns {
            ns: common::netns::Netns::new(&format!("fw{n}")),
            n,
        }
    }

    fn name(&self) -> &str {
        &self.ns.name
    }

    /// `program args` inside the namespace.
    fn output(&self, program: &str, args: &[&str]) -> Output {
        let command: Vec<&str> = std::iter::once(program)
            .chain(args.iter().copied())
            .collect();
        self.ns.output(&command)
    }

    /// Like `output`, but the command must succeed.
    fn exec(&self, program: &str, args: &[&str]) -> String {
        let output = self.output(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Loads an nft script in the namespace.
    fn load(&self, script: &str) {
        let mut child = self
            .ns
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write the script");
        assert!(child.wait().expect("wait for nft").success(), "{script}");
    }

    fn sipwall(&self, args: &[&str]) -> Output {
        self.output(SIPWALL, args)
    }

    /// `nft list table inet NAME`, or an empty string if there is none.
    fn table(&self, name: &str) -> String {
        let output = self.output("nft", &["list", "table", "inet", name]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Packets counted by the rule of table inet sipwall named `name`.
    fn packets(&self, name: &str) -> u64 {
        let listing = self.table("sipwall");
        let comment = format!("comment \"{name}\"");
        let line = listing
            .lines()
            .find(|l| l.trim_end().ends_with(&comment))
            .unwrap_or_else(|| panic!("no rule {name} in\n{listing}"));
        let after = line.split("packets ").nth(1).expect("a counter");
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a packet count")
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().expect(program);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        text(&output)
    );
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A configuration whose `[firewall]` section is `firewall` plus a state directory of
/// its own; returns its path (the directory is removed with `dir`).
fn write_config(dir: &Path, firewall: &str) -> PathBuf {
    let path = dir.join("sipwall.toml");
    let text = format!(
        "[listen]\nudp = [\"127.0.0.1:5060\"]\n[inner]\naddress = \"127.0.0.1:5070\"\n\
         [upstream]\naddress = \"127.0.0.1:5080\"\n[keys]\n\
         current = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
         [firewall]\nstate_dir = \"{}\"\n{firewall}\n",
        dir.join("state").display()
    );
    std::fs::write(&path, text).expect("write the configuration");
    path
}

fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(seconds),
            "{what}: not within {seconds} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A table made by hand, standing for whatever was there before an apply.
const HAND_MADE: &str =
    "table inet sipwall {\n chain marker {\n  counter comment \"hand-made\"\n }\n}\n";

#[test]
fn the_plan_of_the_example_needs_no_kernel() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sipwall.toml");
    let output = Command::new(SIPWALL)
        .args([
            "firewall",
            "plan",
            "--config",
            example,
            "--nft",
            "/nonexistent/nft",
        ])
        .output()
        .expect("run sipwall");
    let plan = text(&output);
    assert!(output.status.success(), "{plan}");
    assert!(
        plan.contains("delete table inet sipwall\ntable inet sipwall {"),
        "{plan}"
    );
    assert!(plan.contains("comment \"sip udp\"") && plan.contains("comment \"rtp\""));
    assert!(
        plan.contains("prerouting, priority raw") && plan.contains("add table inet sipwall_bans")
    );
}

#[test]
fn apply_loads_the_table_and_confirm_keeps_it() {
    require_kernel_tools();
    let netns = Netns::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "admin_networks = [\"192.0.2.0/24\"]");
    let config = config.to_str().expect("utf-8 path");

    let output = netns.sipwall(&["firewall", "apply", "--config", config, "--confirm", "2"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("sipwall firewall confirm"),
        "{}",
        text(&output)
    );
    let table = netns.table("sipwall");
    for rule in [
        "sip udp",
        "admin networks",
        "established",
        "invalid",
        "reject",
    ] {
        assert!(
            table.contains(&format!("comment \"{rule}\"")),
            "{rule}:\n{table}"
        );
    }
    assert!(table.contains("192.0.2.0/24"), "{table}");
    assert!(
        netns
            .table("sipwall_bans")
            .contains("hook prerouting priority raw")
    );

    let output = netns.sipwall(&["firewall", "confirm", "--config", config]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("rollback is cancelled"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        netns.table("sipwall").contains("comment \"sip udp\""),
        "rolled back anyway"
    );

    let again = netns.sipwall(&["firewall", "confirm", "--config", config]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("nothing awaits confirmation"),
        "{}",
        text(&again)
    );

    let status = netns.sipwall(&["firewall", "status", "--config", config]);
    let report = text(&status);
    assert!(status.status.success(), "{report}");
    assert!(
        report.contains("table inet sipwall (hook input)"),
        "{report}"
    );
    assert!(report.lines().any(|l| l.ends_with("  sip udp")), "{report}");
    assert!(report.contains("set ban4: 0 element(s)"), "{report}");
    assert!(!report.contains("rollback armed"), "{report}");

    // Applying again replaces the table rather than adding to it, and never touches
    // another table.
    netns.exec("nft", &["add table inet neighbour"]);
    let output = netns.sipwall(&["firewall", "apply", "--config", config, "--no-rollback"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        netns
            .table("sipwall")
            .matches("comment \"sip udp\"")
            .count(),
        1
    );
    assert!(
        netns
            .exec("nft", &["list", "tables"])
            .contains("table inet neighbour")
    );
}

#[test]
fn an_unconfirmed_apply_is_rolled_back() {
    require_kernel_tools();
    let netns = Netns::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "admin_networks = [\"192.0.2.0/24\"]");
    let config = config.to_str().expect("utf-8 path");

    // No table before: the rollback removes it, and leaves the ban table.
    let output = netns.sipwall(&["firewall", "apply", "--config", config, "--confirm", "2"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("there was none"),
        "{}",
        text(&output)
    );
    assert!(netns.table("sipwall").contains("comment \"sip udp\""));
    wait_until("rollback to no table", 10, || {
        netns.table("sipwall").is_empty()
    });
    assert!(
        !netns.table("sipwall_bans").is_empty(),
        "the ban table is not rolled back"
    );

    // A table before: the rollback restores it.
    netns.load(HAND_MADE);
    let output = netns.sipwall(&["firewall", "apply", "--config", config, "--confirm", "2"]);
    assert!(output.status.success(), "{}", text(&output));
    let status = netns.sipwall(&["firewall", "status", "--config", config]);
    assert!(
        text(&status).contains("rollback armed"),
        "{}",
        text(&status)
    );
    assert!(!netns.table("sipwall").contains("hand-made"));
    wait_until("rollback to the hand-made table", 10, || {
        netns.table("sipwall").contains("hand-made")
    });
    assert!(!netns.table("sipwall").contains("sip udp"));
    let log = std::fs::read_to_string(dir.path().join("state/rollback.log")).expect("log");
    assert!(
        log.contains("previous inet sipwall table restored"),
        "{log}"
    );
    let late = netns.sipwall(&["firewall", "confirm", "--config", config]);
    assert!(text(&late).contains("last rollback"), "{}", text(&late));
}

#[test]
fn a_refused_transaction_leaves_the_previous_ruleset_in_place() {
    require_kernel_tools();
    let netns = Netns::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "admin_networks = [\"192.0.2.0/24\"]");
    let config = config.to_str().expect("utf-8 path");
    netns.load(HAND_MADE);

    // An nft that appends a bad statement to the end of every script it loads: the
    // transaction fails after the table was deleted and recreated in it.
    let fake = dir.path().join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = -f ]; then\n  { cat; echo 'add rule inet sipwall input not a rule'; } | nft -f -\n\
         else\n  exec nft \"$@\"\nfi\n",
    )
    .expect("write the fake nft");
    run("chmod", &["+x", fake.to_str().expect("utf-8 path")]);
    for nft in [fake.to_str().expect("utf-8 path"), "/nonexistent/nft"] {
        let output = netns.sipwall(&[
            "firewall",
            "apply",
            "--config",
            config,
            "--confirm",
            "30",
            "--nft",
            nft,
        ]);
        let said = text(&output);
        assert!(!output.status.success(), "{said}");
        assert!(said.contains("previous ruleset is unchanged"), "{said}");
        if nft == "/nonexistent/nft" {
            assert!(said.contains("running /nonexistent/nft"), "{said}");
        } else {
            assert!(said.contains("Error:"), "nft's own message: {said}");
        }
        let table = netns.table("sipwall");
        assert!(
            table.contains("hand-made") && !table.contains("sip udp"),
            "{table}"
        );
        // Nothing is left armed.
        let confirm = netns.sipwall(&["firewall", "confirm", "--config", config]);
        assert!(text(&confirm).contains("nothing awaits confirmation"));
    }
}

/// A veth pair between this (root) namespace and `netns`: host side `.1`/`::1` and the
/// extra sources `.5`/`::5`, namespace side `.2`/`::2`.
struct Link {
    host: [IpAddr; 2],
    other_source: [IpAddr; 2],
    target: [IpAddr; 2],
}

fn veth(netns: &Netns) -> Link {
    let id = (std::process::id() % 1000) * 8 + netns.n;
    let (host_if, ns_if) = (format!("swh{id}"), format!("swn{id}"));
    let octet = 16 + id % 200;
    run(
        "ip",
        &[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ],
    );
    run("ip", &["link", "set", &ns_if, "netns", netns.name()]);
    for address in [
        format!("10.254.{octet}.1/24"),
        format!("10.254.{octet}.5/24"),
    ] {
        run("ip", &["addr", "add", &address, "dev", &host_if]);
    }
    for address in [
        format!("fd00:5:{octet}::1/64"),
        format!("fd00:5:{octet}::5/64"),
    ] {
        run(
            "ip",
            &["-6", "addr", "add", &address, "dev", &host_if, "nodad"],
        );
    }
    run("ip", &["link", "set", &host_if, "up"]);
    netns.exec(
        "ip",
        &[
            "addr",
            "add",
            &format!("10.254.{octet}.2/24"),
            "dev",
            &ns_if,
        ],
    );
    netns.exec(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("fd00:5:{octet}::2/64"),
            "dev",
            &ns_if,
            "nodad",
        ],
    );
    netns.exec("ip", &["link", "set", &ns_if, "up"]);
    let ip = |text: String| -> IpAddr { text.parse().expect("an address") };
    Link {
        host: [
            ip(format!("10.254.{octet}.1")),
            ip(format!("fd00:5:{octet}::1")),
        ],
        other_source: [
            ip(format!("10.254.{octet}.5")),
            ip(format!("fd00:5:{octet}::5")),
        ],
        target: [
            ip(format!("10.254.{octet}.2")),
            ip(format!("fd00:5:{octet}::2")),
        ],
    }
}

/// Sends one datagram from `from` to `to`:`port` and tells whether it reached the
/// namespace's stack: no listener there, so an accepted datagram comes back as an ICMP
/// port unreachable (connection refused), and a dropped one as silence.
fn udp_reaches(from: IpAddr, to: IpAddr, port: u16) -> bool {
    let socket = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(SocketAddr::new(to, port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(800)))
        .expect("timeout");
    socket
        .send(b"OPTIONS sip:probe SIP/2.0\r\n\r\n")
        .expect("send");
    let mut buf = [0u8; 64];
    match socket.recv(&mut buf) {
        Err(error) if error.kind() == ErrorKind::ConnectionRefused => true,
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn traffic_is_accepted_and_dropped_as_the_policy_says() {
    require_kernel_tools();
    let netns = Netns::new();
    let link = veth(&netns);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        &format!(
            "blocklist = [\"{}\", \"{}\"]\nfinal_action = \"drop\"\n\
             sip_packets_per_second = 5\nsip_burst = 5\n",
            link.other_source[0], link.other_source[1]
        ),
    );
    let config = config.to_str().expect("utf-8 path");
    let output = netns.sipwall(&["firewall", "apply", "--config", config, "--no-rollback"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("admin_networks is empty"),
        "the lock-out warning"
    );

    for family in 0..2 {
        let (host, other, target) = (
            link.host[family],
            link.other_source[family],
            link.target[family],
        );
        // SIP is open to all (over IPv6 this also needs neighbour discovery to pass).
        assert!(udp_reaches(host, target, 5060), "SIP from {host}");
        // The blocklisted source is dropped first, and its rule counts it.
        let rule = ["blocklist", "blocklist ipv6"][family];
        let before = netns.packets(rule);
        assert!(
            !udp_reaches(other, target, 5060),
            "SIP from blocklisted {other}"
        );
        assert!(netns.packets(rule) > before, "{rule} counted nothing");
        // A port nothing opens is dropped by the last rule.
        let before = netns.packets("drop");
        assert!(!udp_reaches(host, target, 9999), "port 9999 from {host}");
        assert!(netns.packets("drop") > before);
        // SSH is for admin networks only, and there are none.
        let ssh =
            TcpStream::connect_timeout(&SocketAddr::new(target, 22), Duration::from_millis(700));
        assert!(
            matches!(&ssh, Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock),
            "SSH from {host}: {ssh:?}"
        );
    }

    // A flood to the SIP port: above 5 packets per second (burst 5), the excess is
    // dropped by the per-source rate.
    let socket = UdpSocket::bind(SocketAddr::new(link.host[0], 0)).expect("bind");
    for _ in 0..40 {
        let _ = socket.send_to(b"x", SocketAddr::new(link.target[0], 5060));
    }
    wait_until("the SIP rate to drop", 3, || {
        netns.packets("sip rate udp") >= 20
    });
    let report = text(&netns.sipwall(&["firewall", "status", "--config", config]));
    assert!(
        report.lines().any(|l| l.ends_with("  sip rate udp")),
        "{report}"
    );
}

#[test]
fn audit_reports_each_setting_and_fails_when_one_is_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let set = |key: &str, value: &str| {
        let path = dir.path().join(key.replace('.', "/"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, format!("{value}\n")).expect("write");
    };
    let keys = [
        ("net.ipv4.conf.all.rp_filter", "1"),
        ("net.ipv4.tcp_syncookies", "1"),
        ("net.ipv4.conf.all.accept_redirects", "0"),
    ];
    for (key, value) in keys {
        set(key, value);
    }
    let audit = || {
        Command::new(SIPWALL)
            .args(["firewall", "audit", "--proc-sys"])
            .arg(dir.path())
            .output()
            .expect("run sipwall")
    };
    let output = audit();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("net.ipv4.conf.all.log_martians"),
        "absent keys are listed"
    );

    set("net.ipv4.tcp_syncookies", "0");
    let output = audit();
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains("sysctl -w net.ipv4.tcp_syncookies=1"),
        "{report}"
    );
    assert!(report.contains("net.ipv4.tcp_syncookies = 1"), "{report}");
    assert!(report.contains("/etc/sysctl.d/"), "{report}");
}
