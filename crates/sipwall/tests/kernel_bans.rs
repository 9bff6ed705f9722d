//! Bans in the kernel and on disk, end to end, as root in network namespaces the tests
//! create: a banned source's packets are dropped by the kernel (the ban set's counter
//! rises, sipwall receives nothing, its conntrack entries go), an unban lets it back,
//! and a sipwall killed with SIGKILL while bans are being made finds every acknowledged
//! ban again, in memory and in the kernel set, when it starts again.
//!
//! These tests write their configurations by hand (the edge listens inside its own
//! namespace), so the leak detector of `common` is started here, inside the edge's
//! namespace, and checked at the end of each test once the edge is stopped.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::leak::{LeakDetector, Topology};
use common::netns::Netns;
use common::{Guard, INNER_IP, UPSTREAM_IP, work_dir};

const TOKEN: &str = "kernel-test-token-0123456789";
const ADMIN: &str = "127.0.0.1:5063";

/// sipwall's configuration inside the edge namespace, listening on `public`.
fn config(dir: &Path, public: &str) -> String {
    format!(
        "[listen]\nudp = [\"{public}:5060\"]\ntcp = [\"{public}:5060\"]\n\
         [inner]\naddress = \"{INNER_IP}:5070\"\n[upstream]\naddress = \"{UPSTREAM_IP}:5080\"\n\
         [keys]\ncurrent = \"{}\"\n[runtime]\nworkers = 1\n\
         [admin]\nlisten = \"{ADMIN}\"\ntoken = \"{TOKEN}\"\n\
         [bans]\nstore = \"{}\"\nkernel = \"on\"\nbatch_ms = 20\n",
        "ab".repeat(32),
        dir.join("bans.db").display()
    )
}

/// Starts sipwall inside `netns` and waits until its admin endpoint is up.
fn start(netns: &Netns, dir: &Path, run: usize) -> Guard {
    let log_path = dir.join(format!("sipwall-{run}.log"));
    let child = netns
        .command(env!("CARGO_BIN_EXE_sipwall"))
        .args(["run", "--config"])
        .arg(dir.join("sipwall.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("admin endpoint") {
            return guard;
        }
        assert!(Instant::now() < deadline, "sipwall did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One admin request from inside the namespace's thread; the status and body.
fn admin(method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(ADMIN).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn options(from: SocketAddr) -> Vec<u8> {
    format!(
        "OPTIONS sip:10.77.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@10.77.0.2>;tag=1\r\nTo: <sip:10.77.0.1>\r\n\
         Call-ID: kernel-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        rand_tag(),
        rand_tag()
    )
    .into_bytes()
}

fn rand_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The packets counted by the ban set's IPv4 rule.
fn dropped(edge: &Netns) -> u64 {
    let listing = edge.run(&[
        "nft",
        "list",
        "chain",
        "inet",
        "sipwall_bans",
        "drop_banned",
    ]);
    let line = listing
        .lines()
        .find(|line| line.contains("@ban4"))
        .unwrap_or_else(|| panic!("no ban4 rule:\n{listing}"));
    let after = line.split("packets ").nth(1).unwrap();
    after.split(' ').next().unwrap().parse().unwrap()
}

fn tracked_from(edge: &Netns, source: &str) -> bool {
    let output = edge.output(&["conntrack", "-L"]);
    assert!(
        output.status.success() || output.status.code() == Some(0),
        "conntrack -L failed: the conntrack package is needed"
    );
    String::from_utf8_lossy(&output.stdout).contains(&format!("src={source} "))
}

#[test]
fn a_banned_source_is_dropped_by_the_kernel_and_sipwall_receives_nothing() {
    let dir = work_dir("kernel-drop");
    let edge = Netns::new("kedge");
    let attacker = Netns::new("katk");
    edge.link(&attacker, "10.77.0.1", "10.77.0.2");
    // A host policy that accepts established flows first, as many do: conntrack runs,
    // and an established flow would pass it whatever comes after.
    edge.run(&[
        "nft",
        "add table inet host; add chain inet host input { type filter hook input priority 0; }; \
         add rule inet host input ct state established,related accept",
    ]);
    let text = config(&dir, "10.77.0.1");
    std::fs::write(dir.join("sipwall.toml"), &text).unwrap();
    let leaks = LeakDetector::start_in_netns(&edge, Topology::from_config(&text));
    let sipwall = start(&edge, &dir, 1);

    // An established flow: the attacker's OPTIONS are answered by the edge.
    let flow = attacker.spawn(|| {
        let socket = UdpSocket::bind("10.77.0.2:5099").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buffer = [0u8; 4096];
        let mut answered = 0;
        for _ in 0..3 {
            socket
                .send_to(&options(socket.local_addr().unwrap()), "10.77.0.1:5060")
                .unwrap();
            if socket.recv_from(&mut buffer).is_ok() {
                answered += 1;
            }
        }
        (socket, answered)
    });
    let (socket, answered) = flow.join().unwrap();
    assert_eq!(
        answered, 3,
        "the edge did not answer the attacker before the ban"
    );
    assert!(
        tracked_from(&edge, "10.77.0.2"),
        "no conntrack entry for the flow"
    );

    // The ban, through the CLI, acknowledged once on disk and in the kernel.
    let added = edge
        .command(env!("CARGO_BIN_EXE_sipwall"))
        .args(["bans", "add", "10.77.0.2", "--ttl", "600", "--config"])
        .arg(dir.join("sipwall.toml"))
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}{}",
        String::from_utf8_lossy(&added.stdout),
        String::from_utf8_lossy(&added.stderr)
    );
    let before = dropped(&edge);
    let socket = attacker
        .spawn(move || {
            let mut buffer = [0u8; 4096];
            let mut answered = 0;
            for _ in 0..1000 {
                socket
                    .send_to(&options(socket.local_addr().unwrap()), "10.77.0.1:5060")
                    .unwrap();
            }
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            while socket.recv_from(&mut buffer).is_ok() {
                answered += 1;
            }
            assert_eq!(answered, 0, "a banned source got answers");
            socket
        })
        .join()
        .unwrap();
    let after = dropped(&edge);
    assert!(
        after - before >= 1000,
        "the kernel dropped {} of 1000 packets",
        after - before
    );
    // sipwall saw none of them: the ban's hit count stays at zero.
    let (status, body) = edge.enter(|| admin("GET", "/v1/bans", "")).unwrap();
    assert_eq!(status, 200);
    let bans: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ban = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|ban| ban["source"] == "10.77.0.2")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(
        ban["hits"], 0,
        "sipwall received packets of a banned source"
    );
    // The flow's conntrack entry is removed by the keeper's sweep (at most once a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    while tracked_from(&edge, "10.77.0.2") {
        assert!(
            Instant::now() < deadline,
            "the banned source's conntrack entry is still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Lifted: the kernel lets the source through again.
    let lifted = edge
        .command(env!("CARGO_BIN_EXE_sipwall"))
        .args(["bans", "del", "10.77.0.2", "--config"])
        .arg(dir.join("sipwall.toml"))
        .output()
        .unwrap();
    assert!(lifted.status.success());
    let answered = attacker
        .spawn(move || {
            let mut buffer = [0u8; 4096];
            socket
                .send_to(&options(socket.local_addr().unwrap()), "10.77.0.1:5060")
                .unwrap();
            socket.recv_from(&mut buffer).is_ok()
        })
        .join()
        .unwrap();
    assert!(answered, "an unbanned source is still refused");
    let listing = edge.run(&["nft", "list", "set", "inet", "sipwall_bans", "ban4"]);
    assert!(!listing.contains("10.77.0.2"), "{listing}");
    drop(sipwall);
    leaks.assert_clean();
}

#[test]
fn acknowledged_bans_survive_sigkill_in_memory_and_in_the_kernel() {
    let dir = work_dir("kernel-kill");
    let edge = Netns::new("kkill");
    let text = config(&dir, "127.0.0.1");
    std::fs::write(dir.join("sipwall.toml"), &text).unwrap();
    let leaks = LeakDetector::start_in_netns(&edge, Topology::from_config(&text));
    // Only the admin endpoint is used: the edge has nothing to say to the public side,
    // and must say nothing of the inside if it did.
    leaks.expect_public_traffic(false);
    let mut sipwall = start(&edge, &dir, 1);

    // A client bans addresses as fast as acknowledgements come, until the daemon dies.
    let stop = Arc::new(AtomicBool::new(false));
    let client_stop = stop.clone();
    let client = edge.spawn(move || {
        let mut acknowledged = Vec::new();
        for i in 0u32..100_000 {
            if client_stop.load(Ordering::Relaxed) {
                break;
            }
            let source = format!("10.88.{}.{}", i / 256, i % 256);
            let body = format!("{{\"source\": \"{source}\", \"ttl_seconds\": 3600}}");
            match admin("POST", "/v1/bans", &body) {
                Some((201, _)) => acknowledged.push(source),
                Some((status, body)) => panic!("ban refused: {status} {body}"),
                None => break,
            }
        }
        acknowledged
    });
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL while bans are being made.
    sipwall.0.kill().unwrap();
    sipwall.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let acknowledged = client.join().unwrap();
    assert!(
        acknowledged.len() >= 20,
        "only {} bans acknowledged in 1.5 s",
        acknowledged.len()
    );

    let restarted = start(&edge, &dir, 2);
    let (status, body) = edge.enter(|| admin("GET", "/v1/bans", "")).unwrap();
    assert_eq!(status, 200);
    let bans: serde_json::Value = serde_json::from_str(&body).unwrap();
    let in_memory: std::collections::HashSet<String> = bans
        .as_array()
        .unwrap()
        .iter()
        .map(|ban| ban["source"].as_str().unwrap().to_string())
        .collect();
    let kernel = edge.run(&["nft", "list", "set", "inet", "sipwall_bans", "ban4"]);
    let missing_memory: Vec<&String> = acknowledged
        .iter()
        .filter(|s| !in_memory.contains(*s))
        .collect();
    let missing_kernel: Vec<&String> = acknowledged
        .iter()
        .filter(|s| !kernel.contains(&format!("{s} ")) && !kernel.contains(&format!("{s},")))
        .collect();
    assert!(
        missing_memory.is_empty(),
        "acknowledged bans lost from memory: {missing_memory:?}"
    );
    assert!(
        missing_kernel.is_empty(),
        "acknowledged bans missing from the kernel set: {missing_kernel:?}"
    );
    eprintln!(
        "{} bans acknowledged before SIGKILL, all restored ({} in memory after the restart)",
        acknowledged.len(),
        in_memory.len()
    );
    let log = std::fs::read_to_string(dir.join("sipwall-2.log")).unwrap();
    assert!(log.contains("bans restored from the store"), "{log}");
    drop(restarted);
    leaks.assert_clean();
}
