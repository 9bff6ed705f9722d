//! End-to-end attacks on a registrar behind sipwall, with the tools attackers use.
//!
//! Peers: Debian's Kamailio as the registrar (`tests/peers/kamailio.cfg` with
//! `WITH_LEAK`: like many misconfigured PBXs it answers REGISTERs for unknown users
//! `404 Not Found` before challenging, so that enumeration works against it), with the
//! numeric extensions 1001-1006 in db_text; Debian's sipvicious (`svwar`, `svmap`,
//! `svcrack`); sipp for the flood, a legitimate call load and an office of forty phones.
//!
//! Every attack comes from its own loopback address (127.0.0.20-127.0.0.41), apart from
//! the phones and the trusted peer (127.0.0.1) and from the inside (the registrar on
//! 127.0.0.2, the edge's inner address 127.0.0.3). The tools run through a small
//! Python wrapper that binds their socket to that address (svwar and svcrack ignore
//! `-b`) and, for the runs that pose as a phone, replaces the `friendly-scanner`
//! user agent sipvicious always sends by a desk phone's.
//!
//! The tests run one at a time (they measure rates on a small shared machine), each with
//! its own Kamailio and sipwall; every process is bounded by `timeout` and stopped when
//! the test ends. The leak detector of `common` checks that nothing of the registrar
//! (address, port, host name, marker header, product name) reached the attackers or the
//! phones. Missing tools fail the tests; `scripts/test` installs `kamailio`,
//! `sip-tester` and `sipvicious`.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::kamailio::{Kamailio, copy_dir, kamcmd, peers, require};
use common::{
    Guard, PUBLIC_IP, Sipwall, UPSTREAM_IP, config, free_port, sipp, sipp_counts, start_sipwall,
    work_dir,
};

/// The user agent of an ordinary desk phone.
const PHONE_UA: &str = "Yealink SIP-T46S 66.86.0.15";
/// The registrar's numeric extensions (their passwords are in `tests/peers/dbtext`).
const EXTENSIONS: [&str; 6] = ["1001", "1002", "1003", "1004", "1005", "1006"];
/// The range the enumerations scan: the real extensions and twelve that do not exist.
const SCAN_RANGE: &str = "995-1012";
/// 1001's password.
const PASSWORD_1001: &str = "Gx7-quartz-1001";
/// Lets the tools pose as a phone: binds their socket to the source address given
/// (svwar and svcrack do not pass `-b` on) and, unless the user agent given is `-`,
/// replaces sipvicious' fixed `friendly-scanner`. Usage:
/// `python3 sv.py TOOL SOURCE USER_AGENT ARGS...`.
const WRAPPER: &str = r#"import importlib, sys
sys.path.insert(0, '/usr/share/sipvicious')
tool, source, agent = sys.argv[1], sys.argv[2], sys.argv[3]
from sipvicious.libs import svhelper

def set_default(function, name, value):
    code = function.__code__
    names = code.co_varnames[:code.co_argcount]
    defaults = list(function.__defaults__)
    defaults[names.index(name) - (len(names) - len(defaults))] = value
    function.__defaults__ = tuple(defaults)

if agent != '-':
    set_default(svhelper.makeRequest, 'useragent', agent)
module = importlib.import_module('sipvicious.' + tool)
for value in list(vars(module).values()):
    init = getattr(value, '__init__', None)
    names = getattr(getattr(init, '__code__', None), 'co_varnames', ())
    if isinstance(value, type) and 'bindingip' in names:
        set_default(init, 'bindingip', source)
sys.argv = [tool] + sys.argv[4:]
module.main()
"#;

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time: the flood and the office measure rates, and the machine is small.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a sipvicious run attacks.
#[derive(Clone, Copy)]
enum Target {
    /// sipwall's public listener.
    Edge,
    /// The registrar itself, with nothing in between.
    Registrar,
}

/// Kamailio with the leak, and sipwall in front of it.
struct World {
    work: PathBuf,
    // Dropped before Kamailio: the edge stops and its leak detector is checked first.
    sipwall: Sipwall,
    kamailio: Kamailio,
    edge: u16,
}

impl World {
    /// `policy`: TOML appended to sipwall's configuration; `users`: subscribers added to
    /// the registrar's (user, password).
    fn start(name: &str, policy: &str, users: &[(String, String)]) -> World {
        require("sipp", "sip-tester");
        for tool in ["svwar", "svmap", "svcrack"] {
            require(tool, "sipvicious");
        }
        let work = work_dir(name);
        copy_dir(&peers().join("dbtext"), &work.join("dbtext"));
        if !users.is_empty() {
            let table = work.join("dbtext/subscriber");
            let mut text = std::fs::read_to_string(&table).expect("subscriber table");
            for (i, (user, password)) in users.iter().enumerate() {
                text.push_str(&format!("{}:{user}:example.com:{password}::\n", 100 + i));
            }
            std::fs::write(&table, text).expect("write subscriber table");
        }
        std::fs::write(work.join("sv.py"), WRAPPER).expect("write wrapper");
        let kamailio = Kamailio::start(&work, &["WITH_LEAK"], Duration::from_secs(120));
        let edge = free_port();
        let text = config(
            edge,
            free_port(),
            kamailio.port,
            &format!("[runtime]\nworkers = 2\n{policy}"),
        );
        let sipwall = start_sipwall(&work, &text, edge);
        Kamailio::forbid_in(&sipwall.leaks);
        World {
            work,
            sipwall,
            kamailio,
            edge,
        }
    }

    /// Runs a sipvicious tool from `source` against `target`, posing as `agent` (`None`:
    /// the tool's own user agent); its output.
    fn sipvicious(
        &self,
        tool: &str,
        source: &str,
        agent: Option<&str>,
        target: Target,
        args: &[&str],
    ) -> String {
        let (host, port) = match target {
            Target::Edge => (PUBLIC_IP, self.edge),
            Target::Registrar => (UPSTREAM_IP, self.kamailio.port),
        };
        let mut command = Command::new("timeout");
        command
            .arg("40")
            .arg("python3")
            .arg(self.work.join("sv.py"))
            .args([tool, source, agent.unwrap_or("-")]);
        if tool == "svmap" {
            command.args(["-b", source, host, "-p", &port.to_string()]);
        } else {
            command.arg(format!("udp://{host}:{port}"));
        }
        let output = command
            .args(args)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(self.work.join(format!("{tool}-{source}.out")), &text).ok();
        text
    }

    fn log(&self) -> String {
        read_log(&self.sipwall)
    }

    /// Waits up to `within` for a ban of `source`; its log line.
    fn wait_ban(&self, source: &str, within: Duration) -> Option<String> {
        wait_ban(&self.sipwall, source, within)
    }

    /// What a failure message shows: `output`, and the tails of the logs.
    fn report(&self, output: &str) -> String {
        format!(
            "\n--- tool output ---\n{output}\n--- sipwall.log (tail) ---\n{}\n--- kamailio REGISTERs: {} ---\nfiles in {}",
            tail(&self.log(), 30),
            self.registers(|_| true).len(),
            self.work.display()
        )
    }

    /// The REGISTERs Kamailio received so far (its log lines), that `keep` keeps.
    fn registers(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.kamailio
            .log_text()
            .lines()
            .filter(|line| line.contains("REGISTER user="))
            .filter(|line| keep(line))
            .map(str::to_owned)
            .collect()
    }
}

fn read_log(sipwall: &Sipwall) -> String {
    strip_ansi(&std::fs::read_to_string(sipwall.dir.join("sipwall.log")).unwrap_or_default())
}

/// The policy's log lines about `source`.
fn policy_lines(log: &str, source: &str) -> Vec<String> {
    let field = format!("source={source} ");
    log.lines()
        .filter(|line| line.contains("sipwall::policy") && line.contains(&field))
        .map(str::to_owned)
        .collect()
}

fn ban_line(log: &str, source: &str) -> Option<String> {
    policy_lines(log, source)
        .into_iter()
        .find(|line| line.contains("action=\"ban\"") || line.contains("action=ban "))
}

fn wait_ban(sipwall: &Sipwall, source: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(line) = ban_line(&read_log(sipwall), source) {
            return Some(line);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `name=` in a log line, without quotes.
fn field(line: &str, name: &str) -> String {
    let key = format!("{name}=");
    let Some(at) = line.find(&key) else {
        return String::new();
    };
    let rest = &line[at + key.len()..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next().unwrap_or_default().to_owned()
    } else if name == "reason" {
        rest.to_owned()
    } else {
        rest.split(' ').next().unwrap_or_default().to_owned()
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The extensions in the result table svwar prints.
fn reported_extensions(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(1))
        .map(str::trim)
        .filter(|cell| !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

fn real_extensions() -> BTreeSet<String> {
    EXTENSIONS.iter().map(|e| e.to_string()).collect()
}

#[test]
fn svwar_finds_every_extension_of_the_leaky_registrar_but_none_through_sipwall() {
    let _serial = serial();
    let world = World::start("attack-svwar", "", &[]);
    // svwar's first REGISTER bans it: the edge answers it nothing.
    world.sipwall.leaks.expect_public_traffic(false);
    let scan = ["-e", SCAN_RANGE, "--domain", "example.com"];

    // Without sipwall, the leak works: svwar lists exactly the real extensions.
    let direct = world.sipvicious("svwar", "127.0.0.20", None, Target::Registrar, &scan);
    assert_eq!(
        reported_extensions(&direct),
        real_extensions(),
        "svwar against the registrar itself must enumerate it, or the test proves nothing{}",
        world.report(&direct)
    );

    let before = world.registers(|_| true).len();
    let output = world.sipvicious("svwar", "127.0.0.21", None, Target::Edge, &scan);
    let found = reported_extensions(&output);
    assert!(
        found.is_disjoint(&real_extensions()),
        "svwar found {found:?} through sipwall{}",
        world.report(&output)
    );
    let ban = world.wait_ban("127.0.0.21", Duration::from_secs(3));
    let Some(ban) = ban else {
        panic!("svwar's source was not banned{}", world.report(&output));
    };
    let reached = world.registers(|_| true).len() - before;
    assert_eq!(
        reached,
        0,
        "svwar's REGISTERs reached the registrar{}",
        world.report(&output)
    );
    eprintln!(
        "svwar direct: {:?}; through sipwall: {found:?}, banned by {} ({}), {reached} REGISTERs reached the registrar",
        reported_extensions(&direct),
        field(&ban, "rule"),
        field(&ban, "reason"),
    );
}

#[test]
fn svwar_posing_as_a_phone_learns_nothing_and_is_banned_for_unanswered_challenges() {
    let _serial = serial();
    let world = World::start(
        "attack-svwar-phone",
        "[policy.rules.tool_fingerprint]\nenabled = false\n",
        &[],
    );
    let source = "127.0.0.22";
    // Without --force svwar gives up at once: the random extension it tries first gets
    // a challenge, like every other. An attacker forces the scan, range after range.
    let mut outputs = String::new();
    let mut found = BTreeSet::new();
    for range in ["995-1000", "1001-1006", "1007-1012"] {
        let output = world.sipvicious(
            "svwar",
            source,
            Some(PHONE_UA),
            Target::Edge,
            &["--force", "-e", range, "--domain", "example.com"],
        );
        found.extend(reported_extensions(&output));
        outputs.push_str(&format!("[svwar --force -e {range}]\n{output}\n"));
    }
    assert!(
        found.is_disjoint(&real_extensions()),
        "svwar found {found:?} through sipwall{}",
        world.report(&outputs)
    );
    // Challenges count as unanswered after answer_within_seconds (8 s).
    let Some(ban) = world.wait_ban(source, Duration::from_secs(15)) else {
        panic!("svwar's source was not banned{}", world.report(&outputs));
    };
    assert_eq!(
        field(&ban, "rule"),
        "unanswered_challenges",
        "{ban}{}",
        world.report(&outputs)
    );
    let reached = world.registers(|_| true).len();
    eprintln!(
        "svwar as a phone through sipwall: reported {found:?}; {reached} REGISTERs reached the registrar; banned by {} ({})",
        field(&ban, "rule"),
        field(&ban, "reason"),
    );
}

/// Sends one REGISTER for `user` from `source` to the edge, as a phone would; the
/// answer.
fn register_probe(source: &str, edge: u16, user: &str) -> String {
    let socket = UdpSocket::bind((source, 0)).expect("bind the probe");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let port = socket.local_addr().expect("address").port();
    let request = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-probe-{user};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=p{user}\r\n\
To: <sip:{user}@example.com>\r\nCall-ID: probe-{user}@{source}\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:{user}@{source}:{port}>\r\nExpires: 3600\r\nUser-Agent: {PHONE_UA}\r\n\
Content-Length: 0\r\n\r\n"
    );
    socket
        .send_to(request.as_bytes(), ("127.0.0.1", edge))
        .expect("send the probe");
    let mut buffer = [0u8; 4096];
    match socket.recv(&mut buffer) {
        Ok(n) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

/// The status line and the header names of an answer: what tells one answer from
/// another once tags, nonces and Call-IDs are set aside.
fn shape(answer: &str) -> Vec<String> {
    let mut lines = answer.lines().take_while(|line| !line.is_empty());
    let status = lines.next().unwrap_or_default().to_owned();
    std::iter::once(status)
        .chain(
            lines
                .filter_map(|line| line.split(':').next())
                .map(str::to_owned),
        )
        .collect()
}

#[test]
fn a_real_and_a_missing_extension_get_answers_of_the_same_shape() {
    let _serial = serial();
    let world = World::start("attack-shape", "", &[]);
    let real = register_probe("127.0.0.27", world.edge, "1001");
    let missing = register_probe("127.0.0.27", world.edge, "7777");
    assert!(real.starts_with("SIP/2.0 401 "), "{}", world.report(&real));
    assert_eq!(
        shape(&missing),
        shape(&real),
        "the answer for a missing extension differs from a real one's{}",
        world.report(&format!("{real}\n{missing}"))
    );
    eprintln!("both answers: {:?}", shape(&real));
}

#[test]
fn svcrack_is_banned_after_three_failed_passwords() {
    let _serial = serial();
    let world = World::start(
        "attack-svcrack",
        "[policy.rules.tool_fingerprint]\nenabled = false\n",
        &[],
    );
    let source = "127.0.0.23";
    let dictionary = world.work.join("passwords.txt");
    let guesses = [
        "1001", "1234", "password", "secret", "letmein", "qwerty", "admin", "123456", "welcome",
        "voip", "sip1001", "changeme",
    ];
    assert!(!guesses.contains(&PASSWORD_1001));
    std::fs::write(&dictionary, guesses.join("\n") + "\n").expect("dictionary");
    let dictionary = dictionary.display().to_string();
    let output = world.sipvicious(
        "svcrack",
        source,
        Some(PHONE_UA),
        Target::Edge,
        &[
            "-u",
            "1001",
            "-d",
            &dictionary,
            "--domain",
            "example.com",
            "--maximumtime",
            "3",
        ],
    );
    assert!(
        !output.contains(PASSWORD_1001),
        "svcrack found the password{}",
        world.report(&output)
    );
    let Some(ban) = world.wait_ban(source, Duration::from_secs(3)) else {
        panic!("svcrack's source was not banned{}", world.report(&output));
    };
    assert_eq!(
        field(&ban, "rule"),
        "auth_failures",
        "{ban}{}",
        world.report(&output)
    );
    // What reached the registrar: REGISTERs of 1001 with credentials (wrong ones).
    let attempts = world.registers(|line| line.contains("credentials=1001"));
    assert!(
        (1..=3).contains(&attempts.len()),
        "{} password attempts reached the registrar: {attempts:#?}{}",
        attempts.len(),
        world.report(&output)
    );
    eprintln!(
        "svcrack: {} password attempts of {} reached the registrar; banned by {} ({})",
        attempts.len(),
        guesses.len(),
        field(&ban, "rule"),
        field(&ban, "reason"),
    );
}

#[test]
fn svmap_learns_no_fingerprint_through_sipwall() {
    let _serial = serial();
    let world = World::start(
        "attack-svmap",
        "[policy.rules.tool_fingerprint]\nenabled = false\n",
        &[],
    );
    let as_phone = ["--fromname", "Reception"];
    // Without sipwall, svmap names the product and its version.
    let direct = world.sipvicious(
        "svmap",
        "127.0.0.24",
        Some(PHONE_UA),
        Target::Registrar,
        &as_phone,
    );
    assert!(
        direct.to_ascii_lowercase().contains("kamailio"),
        "svmap against the registrar itself must fingerprint it, or the test proves nothing{}",
        world.report(&direct)
    );

    let scanner = world.sipvicious("svmap", "127.0.0.25", None, Target::Edge, &[]);
    assert!(
        !scanner.to_ascii_lowercase().contains("kamailio"),
        "svmap learnt the server through sipwall{}",
        world.report(&scanner)
    );
    let Some(ban) = world.wait_ban("127.0.0.25", Duration::from_secs(3)) else {
        panic!("svmap's source was not banned{}", world.report(&scanner));
    };

    let phone = world.sipvicious(
        "svmap",
        "127.0.0.26",
        Some(PHONE_UA),
        Target::Edge,
        &as_phone,
    );
    assert!(
        !phone.to_ascii_lowercase().contains("kamailio"),
        "svmap posing as a phone learnt the server through sipwall{}",
        world.report(&phone)
    );
    eprintln!(
        "svmap direct:\n{}\nsvmap through sipwall: banned by {} ({}):\n{}\nsvmap as a phone through sipwall:\n{}",
        tail(&direct, 5),
        field(&ban, "rule"),
        field(&ban, "reason"),
        tail(&scanner, 5),
        tail(&phone, 5),
    );
}

/// sipp toward the edge from `source`, ending by itself after `limit_s` seconds at the
/// latest (sipp's own global timeout: a `timeout` wrapper killed by a [`Guard`] would
/// leave sipp running).
fn sipp_command(dir: &Path, target: u16, source: &str, limit_s: u32) -> Command {
    let mut command = Command::new(sipp());
    command
        .arg(format!("127.0.0.1:{target}"))
        .args(["-i", source, "-p", &free_port().to_string()])
        .args(["-timeout", &format!("{limit_s}s"), "-nostdin", "-trace_err"])
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

#[test]
fn a_flood_from_four_sources_is_banned_while_a_trusted_peer_keeps_calling() {
    let _serial = serial();
    require("sipp", "sip-tester");
    let dir = work_dir("attack-flood");
    let upstream = free_port();
    let edge = free_port();
    let text = config(
        edge,
        free_port(),
        upstream,
        "[runtime]\nworkers = 2\n[policy]\ntrusted_peers = [\"127.0.0.1/32\"]\n",
    );
    let sipwall = start_sipwall(&dir, &text, edge);
    let uas = Command::new(sipp())
        .args(["-sn", "uas", "-i", UPSTREAM_IP, "-p", &upstream.to_string()])
        .args(["-timeout", "90s", "-nostdin", "-trace_err"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp uas");
    let _uas = Guard(uas);
    std::thread::sleep(Duration::from_millis(300));

    // The legitimate load: 1000 calls at 50 per second from a trusted peer.
    let calls = 1000u64;
    let uac = sipp_command(&dir, edge, "127.0.0.1", 70)
        .args(["-sn", "uac", "-r", "50", "-m", &calls.to_string()])
        .args(["-trace_stat", "-fd", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp uac");
    let uac = Guard(uac);
    std::thread::sleep(Duration::from_secs(3));

    // The flood: four sources, 500 OPTIONS per second each, 1500 each at most.
    let sources = ["127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34"];
    let started = Instant::now();
    let flooders: Vec<Guard> = sources
        .iter()
        .map(|source| {
            let child = sipp_command(&dir, edge, source, 20)
                .arg("-sf")
                .arg(peers().join("sipp/options_flood.xml"))
                .args(["-r", "500", "-m", "1500"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start flood");
            Guard(child)
        })
        .collect();
    let mut bans = Vec::new();
    for source in sources {
        let within = Duration::from_secs(10).saturating_sub(started.elapsed());
        let ban = wait_ban(&sipwall, source, within);
        bans.push((source, ban, started.elapsed()));
    }
    for (source, ban, _) in &bans {
        let log = read_log(&sipwall);
        let Some(ban) = ban else {
            panic!(
                "flooding source {source} was not banned\n{}\nsee {}",
                tail(&log, 30),
                dir.display()
            );
        };
        assert_eq!(field(ban, "rule"), "flood", "{ban}");
    }
    for mut flooder in flooders {
        let _ = flooder.0.wait();
    }

    let output = {
        let mut uac = uac;
        let mut stdout = uac.0.stdout.take().expect("uac stdout");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("read uac output");
        let _ = uac.0.wait();
        text
    };
    let (ok, failed) = sipp_counts(&output);
    assert!(
        ok + failed == calls && ok * 1000 >= calls * 999,
        "legitimate calls: {ok} successful, {failed} failed of {calls}\n{}\n{}\nsee {}",
        tail(&output, 40),
        tail(&read_log(&sipwall), 30),
        dir.display()
    );
    // The trusted peer is never even matched.
    assert!(policy_lines(&read_log(&sipwall), "127.0.0.1").is_empty());
    for (source, ban, at) in &bans {
        let ban = ban.as_deref().unwrap_or_default();
        eprintln!(
            "{source}: banned by {} after {} ms ({})",
            field(ban, "rule"),
            at.as_millis(),
            field(ban, "reason")
        );
    }
    eprintln!("legitimate calls: {ok}/{calls} successful, {failed} failed");
}

#[test]
fn forty_phones_behind_one_address_reregister_at_once_without_being_banned() {
    let _serial = serial();
    let phones: Vec<(String, String)> = (2001..=2040)
        .map(|n| (n.to_string(), format!("Office-{n}-pw")))
        .collect();
    let world = World::start("attack-office", "", &phones);
    let source = "127.0.0.41";
    let injection = world.work.join("phones.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for (user, password) in &phones {
        text.push_str(&format!(
            "{user};[authentication username={user} password={password}]\n"
        ));
    }
    std::fs::write(&injection, text).expect("injection file");
    let register = |name: &str, rate: &str| -> (u64, u64, String) {
        let output = sipp_command(&world.work, world.edge, source, 30)
            .arg("-sf")
            .arg(peers().join("sipp/register_inf.xml"))
            .arg("-inf")
            .arg(&injection)
            .args(["-t", "un", "-max_socket", "100", "-r", rate, "-m", "40"])
            .args(["-trace_stat", "-fd", "1"])
            .arg("-error_file")
            .arg(world.work.join(format!("{name}.err")))
            .stderr(Stdio::null())
            .output()
            .expect("run sipp");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (ok, failed) = sipp_counts(&stdout);
        (ok, failed, stdout)
    };

    // Each phone registers once, ten per second.
    let (ok, failed, output) = register("first", "10");
    assert_eq!(
        (ok, failed),
        (40, 0),
        "first registrations{}",
        world.report(&tail(&output, 40))
    );
    // Then, as after a power cut, all of them at once.
    let started = Instant::now();
    let (ok, failed, output) = register("again", "1000");
    let took = started.elapsed();
    assert_eq!(
        (ok, failed),
        (40, 0),
        "re-registrations at once{}",
        world.report(&tail(&output, 40))
    );
    std::thread::sleep(Duration::from_millis(300));
    let lines = policy_lines(&world.log(), source);
    assert!(
        lines.is_empty(),
        "the office's address was matched by the policy: {lines:#?}{}",
        world.report("")
    );
    let (_, dump) = kamcmd(&world.kamailio.ctl, &["ul.dump"]);
    let registered = phones
        .iter()
        .filter(|(user, _)| dump.contains(&format!("AoR: {user}")))
        .count();
    assert_eq!(registered, 40, "{}", world.report(&dump));
    eprintln!(
        "office: 40/40 first registrations, 40/40 re-registrations at once in {} ms, no policy decision about {source}",
        took.as_millis()
    );
}
