//! Memory of the security pipeline under a flood from one million distinct source
//! addresses: each sends REGISTERs and fails to authenticate, the pattern of a
//! distributed brute force. Prints the flood sketches' fixed size, the entries of the
//! exact tables (bounded by their capacity), the process's resident memory before and
//! after, and the time per request.
//!
//! Usage: cargo run --release -p sipwall-bench --example million_sources [SOURCES]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use sipwall_policy::{Answer, Engine, PolicyConfig};
use sipwall_sip::{Framing, Limits, Message, Method, Sanity};

const REGISTER: &[u8] = include_bytes!("../data/register.sip");

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let sources: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let msg = Message::parse(REGISTER, Framing::Datagram, &Limits::default()).expect("parses");
    let checked = Sanity::new().check(&msg).expect("sane");
    let mut engine = Engine::new(&PolicyConfig::default(), &[], [9; 16]);
    let before = resident_kib();
    let started = Instant::now();
    let mut now = 0;
    // Three passes over the sources: three requests and three failures each, the last
    // of which bans it (1 ms apart per source).
    for pass in 0..3u32 {
        for n in 0..sources {
            now = u64::from(pass) * 1000 + u64::from(n) / 1000;
            let source = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | n));
            engine.admit(source, now);
            engine.check_request(&msg, &checked, source, now);
            let answer = Answer {
                source,
                method: Method::Register,
                status: 401,
                reason: b"Unauthorized",
                call_id: b"c",
                credentials: Some(b"1001"),
                initial: true,
                challenge: None,
            };
            engine.observe_response(&answer, now);
        }
        engine.tick(now);
    }
    let elapsed = started.elapsed();
    let after = resident_kib();
    let requests = u64::from(sources) * 3;
    println!("sources: {sources}, requests: {requests}");
    println!(
        "flood sketches: {} KiB (fixed)",
        engine.sketch_memory() / 1024
    );
    println!("exact table entries: {}", engine.table_entries());
    println!("active bans: {}", engine.bans(now).count());
    println!(
        "resident memory: {before} KiB before, {after} KiB after (+{} KiB)",
        after.saturating_sub(before)
    );
    println!(
        "time per request (admit + pipeline + answer): {:.0} ns",
        elapsed.as_nanos() as f64 / requests as f64
    );
}
