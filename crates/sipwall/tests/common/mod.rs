//! Helpers shared by the end-to-end tests: free ports, processes that are stopped when
//! the test ends, and a sipwall started from a configuration written on the fly, watched
//! by a leak detector from start to end.
//!
//! The test network: phones and the edge's public listeners on 127.0.0.1, the upstream on
//! 127.0.0.2 and the edge's inner address on 127.0.0.3 (Linux routes all of 127.0.0.0/8
//! on `lo`). The inside has addresses of its own so that the leak detector can tell it
//! from what the public side may see.
#![allow(dead_code)] // each test file uses a different part

pub mod kamailio;
pub mod leak;
pub mod netns;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is killed when dropped, so a failing assertion leaves no
/// process behind.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address of the phones and of the edge's public listeners.
pub const PUBLIC_IP: &str = "127.0.0.1";
/// The upstream's address (sipp's upstreams, Kamailio, the tests' own upstream sockets).
pub const UPSTREAM_IP: &str = "127.0.0.2";
/// The edge's inner address, from which it talks to the upstream.
pub const INNER_IP: &str = "127.0.0.3";

/// A UDP port that is free on loopback right now.
pub fn free_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    socket.local_addr().expect("local address").port()
}

/// A fresh directory for one test's files and logs.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sipwall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The `[bans]` of a test edge: the store beside its configuration file, and no kernel
/// sets (tests run side by side in one network namespace; the kernel is tested in
/// namespaces of its own).
pub const TEST_BANS: &str = "[bans]\nstore = \"bans.db\"\nkernel = \"off\"\n";

/// The `[topology]` of a test edge: hiding on (the default), and the marker header the
/// test Kamailio adds to what it sends removed, as an operator lists such headers.
pub const TEST_TOPOLOGY: &str = "[topology]\nremove_headers = [\"X-Internal-Node\"]\n";

/// The configuration of an edge on [`PUBLIC_IP`]:`public` (UDP and TCP), inner address
/// [`INNER_IP`]:`inner`, in front of [`UPSTREAM_IP`]:`upstream`, with `extra` TOML
/// appended.
pub fn config(public: u16, inner: u16, upstream: u16, extra: &str) -> String {
    format!(
        "[listen]\nudp = [\"{PUBLIC_IP}:{public}\"]\ntcp = [\"{PUBLIC_IP}:{public}\"]\n\
[inner]\naddress = \"{INNER_IP}:{inner}\"\n[upstream]\naddress = \"{UPSTREAM_IP}:{upstream}\"\n\
[keys]\ncurrent = \"{}\"\n{TEST_TOPOLOGY}{TEST_BANS}{extra}",
        "ab".repeat(32)
    )
}

/// A running sipwall. When it is dropped, the edge is stopped and its leak detector
/// checked: a test fails if anything of the inside reached the public side, unless it is
/// failing already.
pub struct Sipwall {
    pub process: Guard,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// The capture of everything the edge sent toward the public side since before it
    /// started. Tests add what else is forbidden (host names, markers), another upstream
    /// after a reload, or say that the edge is to send nothing publicly.
    pub leaks: leak::LeakDetector,
}

impl Sipwall {
    /// Fails the test if anything of the inside reached the public side so far.
    pub fn assert_no_leaks(&self) -> leak::Summary {
        self.leaks.assert_clean()
    }
}

impl Drop for Sipwall {
    fn drop(&mut self) {
        // Stop the edge first: whatever it sent is then in the capture, and it sends
        // nothing after the check.
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        // A second panic while one unwinds would abort the whole test binary; the first
        // failure is the one to read anyway.
        if !std::thread::panicking()
            && let Err(report) = self.leaks.check()
        {
            panic!("{report}\nsee {}", self.dir.display());
        }
    }
}

/// Starts sipwall with `config_text`, and waits until TCP `probe_port` accepts. A leak
/// detector captures from before the start.
pub fn start_sipwall(dir: &Path, config_text: &str, probe_port: u16) -> Sipwall {
    let leaks = leak::LeakDetector::start(leak::Topology::from_config(config_text));
    let config_path = dir.join("sipwall.toml");
    std::fs::write(&config_path, config_text).expect("write config");
    let log = std::fs::File::create(dir.join("sipwall.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_sipwall"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "debug")
        // Plain text: the tests read the log.
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sipwall");
    let process = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", probe_port)).is_err() {
        assert!(Instant::now() < deadline, "sipwall did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sipwall {
        process,
        dir: dir.to_owned(),
        config_path,
        leaks,
    }
}

/// Counts of sipp's final statistics screen: (successful, failed) calls.
pub fn sipp_counts(stdout: &str) -> (u64, u64) {
    let count = |label: &str| -> u64 {
        stdout
            .lines()
            .filter(|line| line.contains(label))
            .filter_map(|line| line.split('|').nth(2))
            .filter_map(|cell| cell.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    (count("Successful call"), count("Failed call"))
}

/// The path of sipp; fails the test if it is not installed.
pub fn sipp() -> PathBuf {
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
