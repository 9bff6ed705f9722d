//! End-to-end: real sipp user agents call each other through the real sipwall binary.
//!
//! sipp's built-in `uas` scenario plays the upstream, its `uac` scenario the phone
//! (INVITE, ACK, BYE with the response timers sipp applies, so retransmissions happen
//! when a message is late). The phone side runs over UDP and over TCP; the upstream
//! side is UDP. Every process is bounded in time and killed when the test ends.
//!
//! sipp comes from Debian's `sip-tester` package; `scripts/test` installs it. A
//! missing sipp fails the test: it is never skipped.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when dropped, so a failing assertion leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port free on loopback right now.
fn free_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = socket.local_addr().expect("local address").port();
    drop(socket);
    port
}

fn sipp() -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", "command -v sipp"])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "sipp is not installed: install Debian's sip-tester (scripts/test does)"
    );
    PathBuf::from(path)
}

struct Edge {
    _process: Guard,
    public: u16,
    dir: PathBuf,
}

/// Starts sipwall in front of an upstream on `upstream`; waits until it listens.
fn start_edge(upstream: u16, name: &str) -> Edge {
    let public = free_port();
    let inner = free_port();
    let dir = std::env::temp_dir().join(format!("sipwall-e2e-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = format!(
        "[listen]\nudp = [\"127.0.0.1:{public}\"]\ntcp = [\"127.0.0.1:{public}\"]\n\
[inner]\naddress = \"127.0.0.1:{inner}\"\n[upstream]\naddress = \"127.0.0.1:{upstream}\"\n\
[keys]\ncurrent = \"{}\"\n[runtime]\nworkers = 2\n",
        "ab".repeat(32)
    );
    let path = dir.join("sipwall.toml");
    std::fs::write(&path, config).expect("write config");
    let log = std::fs::File::create(dir.join("sipwall.log")).expect("log file");
    let process = Command::new(env!("CARGO_BIN_EXE_sipwall"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sipwall");
    let guard = Guard(process);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", public)).is_err() {
        assert!(Instant::now() < deadline, "sipwall did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Edge {
        _process: guard,
        public,
        dir,
    }
}

fn start_uas(port: u16, dir: &PathBuf, transport: &str) -> Guard {
    let child = Command::new(sipp())
        .current_dir(dir)
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", transport, "-nostdin", "-trace_err", "-timeout", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    Guard(child)
}

/// Runs sipp's uac scenario for `calls` calls; returns (successful, failed).
fn run_uac(target: u16, transport: &str, calls: u32, dir: &PathBuf) -> (u64, u64) {
    let port = free_port();
    let output = Command::new("timeout")
        .arg("60")
        .arg(sipp())
        .current_dir(dir)
        .arg(format!("127.0.0.1:{target}"))
        .args(["-sn", "uac", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", transport, "-m", &calls.to_string(), "-r", "20"])
        .args([
            "-timeout",
            "40",
            "-nostdin",
            "-trace_err",
            "-trace_stat",
            "-fd",
            "1",
        ])
        .output()
        .expect("run sipp uac");
    let text = String::from_utf8_lossy(&output.stdout);
    let count = |label: &str| -> u64 {
        text.lines()
            .filter(|line| line.contains(label))
            .filter_map(|line| line.split('|').nth(2))
            .filter_map(|cell| cell.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    (count("Successful call"), count("Failed call"))
}

#[test]
fn calls_over_udp_pass_through_the_edge() {
    let upstream = free_port();
    let edge = start_edge(upstream, "udp");
    let _uas = start_uas(upstream, &edge.dir, "u1");
    let (ok, failed) = run_uac(edge.public, "u1", 50, &edge.dir);
    assert_eq!((ok, failed), (50, 0), "see {}", edge.dir.display());
}

#[test]
fn calls_from_tcp_phones_pass_through_the_edge() {
    let upstream = free_port();
    let edge = start_edge(upstream, "tcp");
    let _uas = start_uas(upstream, &edge.dir, "u1");
    let (ok, failed) = run_uac(edge.public, "t1", 20, &edge.dir);
    assert_eq!((ok, failed), (20, 0), "see {}", edge.dir.display());
}
