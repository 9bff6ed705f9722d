//! A load generator and upstream responder for the edge proxy, for rates beyond what
//! sipp can drive on these machines.
//!
//! Phones: `--sources` UDP sockets send pre-built OPTIONS requests to `--target` at
//! `--rate` messages per second for `--seconds`, each with a sequence number in its Via
//! branch. Upstream: one socket on `--upstream` answers every request it receives with
//! 200 OK. Each response that comes back to a phone socket is matched to its request by
//! the sequence number, which gives loss and latency per message.
//!
//! Prints one line: `rate R sent S received N loss P% p50 X us p99 Y us`.
//! Every loop is bounded by the duration; the program stops by itself.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sipwall_sip::{Framing, HeaderName, Limits, Message};

struct Args {
    target: SocketAddr,
    upstream: SocketAddr,
    rate: u64,
    seconds: u64,
    sources: usize,
}

fn args() -> Args {
    let mut args = Args {
        target: "127.0.0.1:5180".parse().unwrap(),
        upstream: "127.0.0.1:5190".parse().unwrap(),
        rate: 10_000,
        seconds: 3,
        sources: 4,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--target" => args.target = value.parse().unwrap(),
            "--upstream" => args.upstream = value.parse().unwrap(),
            "--rate" => args.rate = value.parse().unwrap(),
            "--seconds" => args.seconds = value.parse().unwrap(),
            "--sources" => args.sources = value.parse().unwrap(),
            other => panic!("unknown option {other}"),
        }
    }
    args
}

/// The upstream: answers each request with a 200 OK built from its headers.
fn respond(socket: UdpSocket, stop: Arc<AtomicBool>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(2048);
    let limits = Limits::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(msg) = Message::parse(&buf[..len], Framing::Datagram, &limits) else {
            continue;
        };
        out.clear();
        out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
        for header in msg.headers() {
            let copy = matches!(
                header.name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            );
            if copy {
                out.extend_from_slice(header.raw_name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(header.value);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = socket.send_to(&out, from);
    }
}

fn request(source: SocketAddr, seq: u64) -> Vec<u8> {
    format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP {source};branch=z9hG4bKld{seq:012};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Load\" <sip:load@example.com>;tag=ld{seq}\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: ld{seq}@load.example.com\r\n\
CSeq: 1 OPTIONS\r\n\
User-Agent: sipwall-load\r\n\
Accept: application/sdp\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The sequence number in the phone's branch of a response.
fn sequence(response: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(response, b"branch=z9hG4bKld")? + 16;
    let digits = response.get(at..at + 12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn main() {
    let args = args();
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = UdpSocket::bind(args.upstream).unwrap();
    let responder = {
        let stop = stop.clone();
        std::thread::spawn(move || respond(upstream, stop))
    };
    let total = args.rate * args.seconds;
    // Send times in ns since start, indexed by sequence number; 0 means not answered.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let latency_ns: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let sockets: Vec<UdpSocket> = (0..args.sources)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut receivers = Vec::new();
    for socket in &sockets {
        let socket = socket.try_clone().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (stop, sent_at, latency_ns) = (stop.clone(), sent_at.clone(), latency_ns.clone());
        receivers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            while !stop.load(Ordering::Relaxed) {
                let Ok(len) = socket.recv(&mut buf) else {
                    continue;
                };
                let now = start.elapsed().as_nanos() as u64;
                if let Some(seq) = sequence(&buf[..len]).filter(|&s| s < sent_at.len() as u64) {
                    let sent = sent_at[seq as usize].load(Ordering::Relaxed);
                    latency_ns[seq as usize]
                        .store(now.saturating_sub(sent).max(1), Ordering::Relaxed);
                }
            }
        }));
    }
    // Pre-build every request so that sending costs only the system call.
    let addresses: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let requests: Vec<Vec<u8>> = (0..total)
        .map(|seq| request(addresses[seq as usize % addresses.len()], seq))
        .collect();
    let begin = Instant::now();
    let tick = Duration::from_millis(1);
    let per_tick = args.rate.div_ceil(1000);
    let mut seq = 0u64;
    while seq < total {
        let due = begin + tick * (seq / per_tick) as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let end = (seq + per_tick).min(total);
        while seq < end {
            let index = seq as usize;
            sent_at[index].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let _ = sockets[index % sockets.len()].send_to(&requests[index], args.target);
            seq += 1;
        }
    }
    // Late answers still count for a second after the last request.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for receiver in receivers {
        receiver.join().unwrap();
    }
    responder.join().unwrap();

    let mut latencies: Vec<u64> = latency_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .filter(|&l| l > 0)
        .collect();
    latencies.sort_unstable();
    let received = latencies.len() as u64;
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    println!(
        "rate {} sent {} received {} loss {:.3}% p50 {:.0} us p99 {:.0} us",
        args.rate,
        total,
        received,
        (total - received) as f64 * 100.0 / total as f64,
        percentile(0.50),
        percentile(0.99)
    );
}
