//! End-to-end: real sipp user agents call each other through the real sipwall binary.
//!
//! sipp's built-in `uas` scenario plays the upstream, its `uac` scenario the phone
//! (INVITE, ACK, BYE with the response timers sipp applies, so retransmissions happen
//! when a message is late). The phone side runs over UDP and over TCP; the upstream
//! side is UDP, on the upstream's own address. Every process is bounded in time and
//! killed when the test ends; the leak detector of `common` checks what the phones got.
//!
//! sipp comes from Debian's `sip-tester` package; `scripts/test` installs it. A
//! missing sipp fails the test: it is never skipped.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Guard, Sipwall, UPSTREAM_IP, config, free_port, sipp, start_sipwall, work_dir};

/// Starts sipwall in front of an upstream on `upstream`.
fn start_edge(upstream: u16, name: &str) -> (Sipwall, u16) {
    let public = free_port();
    let text = config(
        public,
        free_port(),
        upstream,
        // sipp is a load generator on one address: a trusted peer, like a carrier.
        "[runtime]\nworkers = 2\n[policy]\ntrusted_peers = [\"127.0.0.1/32\"]\n",
    );
    (start_sipwall(&work_dir(name), &text, public), public)
}

fn start_uas(port: u16, dir: &Path, transport: &str) -> Guard {
    let child = Command::new(sipp())
        .current_dir(dir)
        .args(["-sn", "uas", "-i", UPSTREAM_IP, "-p", &port.to_string()])
        .args(["-t", transport, "-nostdin", "-trace_err", "-timeout", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    Guard(child)
}

/// Runs sipp's uac scenario for `calls` calls; returns (successful, failed).
fn run_uac(target: u16, transport: &str, calls: u32, dir: &Path) -> (u64, u64) {
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
    common::sipp_counts(&String::from_utf8_lossy(&output.stdout))
}

#[test]
fn calls_over_udp_pass_through_the_edge() {
    let upstream = free_port();
    let (edge, public) = start_edge(upstream, "calls-udp");
    let _uas = start_uas(upstream, &edge.dir, "u1");
    let (ok, failed) = run_uac(public, "u1", 50, &edge.dir);
    assert_eq!((ok, failed), (50, 0), "see {}", edge.dir.display());
}

#[test]
fn calls_from_tcp_phones_pass_through_the_edge() {
    let upstream = free_port();
    let (edge, public) = start_edge(upstream, "calls-tcp");
    let _uas = start_uas(upstream, &edge.dir, "u1");
    let (ok, failed) = run_uac(public, "t1", 20, &edge.dir);
    assert_eq!((ok, failed), (20, 0), "see {}", edge.dir.display());
}
