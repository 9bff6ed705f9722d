//! Allocations per forwarded message on the UDP path: a counting global allocator (dhat
//! in testing mode) watches a phone's OPTIONS go through the runtime to an upstream and
//! the upstream's 200 OK come back, as the load generator of `bench/load/maxrate` sends
//! them (the phone a trusted peer, topology hiding on as by default).
//!
//! Once the worker's buffers have reached their working size, forwarding must not
//! allocate: an allocation per message costs more than the rest of the runtime's work
//! on it. This file holds a single test because the heap statistics are process-wide.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sipwall_bench::load::{answer, request};
use support::{localhost, start};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Round trips before counting: the buffers of the edge and the worker grow to size.
const WARM_UP: usize = 200;
/// Round trips counted.
const COUNTED: usize = 2_000;
/// Requests the phone sends before reading their answers, so that batches form.
const BURST: usize = 8;

/// Answers every datagram until one that is not SIP arrives.
fn respond(socket: UdpSocket) {
    let mut buffer = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buffer) else {
            return;
        };
        if !buffer[..len].starts_with(b"OPTIONS ") {
            return;
        }
        // The load generator's own responder, into a reused buffer (the upstream must
        // not allocate while the phone counts).
        answer(&buffer[..len], b"", &mut out);
        let _ = socket.send_to(&out, from);
    }
}

/// Sends `requests` in bursts and reads every answer; false if one is missing.
fn round_trips(
    phone: &UdpSocket,
    target: SocketAddr,
    requests: &[Vec<u8>],
    buffer: &mut [u8],
) -> bool {
    for burst in requests.chunks(BURST) {
        for request in burst {
            phone.send_to(request, target).unwrap();
        }
        for _ in burst {
            match phone.recv_from(buffer) {
                Ok((len, _)) if buffer[..len].starts_with(b"SIP/2.0 200 ") => {}
                _ => return false,
            }
        }
    }
    true
}

#[tokio::test(flavor = "current_thread")]
async fn forwarding_on_udp_does_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let upstream = UdpSocket::bind(localhost(0)).unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = start(1, upstream.local_addr().unwrap()).await;
    let target = server.bound[0].1;
    let upstream_address = upstream.local_addr().unwrap();
    let responder = std::thread::spawn(move || respond(upstream));

    let phone = UdpSocket::bind(localhost(0)).unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let source = phone.local_addr().unwrap();
    let warm_up: Vec<Vec<u8>> = (0..WARM_UP as u64)
        .map(|seq| request(source, seq))
        .collect();
    let counted: Vec<Vec<u8>> = (WARM_UP as u64..(WARM_UP + COUNTED) as u64)
        .map(|seq| request(source, seq))
        .collect();
    // The phone runs on a thread of its own while this one drives the runtime.
    let (done, finished) = tokio::sync::oneshot::channel();
    let phone_thread = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_535];
        let warmed = round_trips(&phone, target, &warm_up, &mut buffer);
        let before = dhat::HeapStats::get();
        let counted_ok = round_trips(&phone, target, &counted, &mut buffer);
        let after = dhat::HeapStats::get();
        // Stops the responder (it answers only OPTIONS).
        let stop = UdpSocket::bind(localhost(0)).unwrap();
        stop.send_to(b"stop", upstream_address).unwrap();
        let _ = done.send((
            warmed && counted_ok,
            after.total_blocks - before.total_blocks,
        ));
    });
    let (ok, blocks) = finished.await.unwrap();
    phone_thread.join().unwrap();
    responder.join().unwrap();
    server.shutdown().await;
    assert!(ok, "a request or its answer was lost");
    let messages = 2 * COUNTED as u64;
    println!(
        "{blocks} allocations for {messages} forwarded messages: {:.2} per message",
        blocks as f64 / messages as f64
    );
    assert_eq!(blocks, 0, "forwarding allocated");

    // The counter does count: an allocation on purpose is seen.
    let before = dhat::HeapStats::get();
    let sentinel = std::hint::black_box(vec![1u8; 64]);
    assert_eq!(dhat::HeapStats::get().total_blocks - before.total_blocks, 1);
    drop(sentinel);
}
