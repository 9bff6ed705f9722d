//! The UDP workers' threads end with the server: when it is shut down, and when it is
//! dropped without a word (the sockets they hold are then closed, so the addresses can
//! be bound again), and with two workers forwarding both ways through their own sockets.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sipwall_bench::load::{answer, request};
use support::{localhost, start};

/// True once `address` can be bound by a socket without `SO_REUSEPORT`, that is once
/// every socket of the server on it is closed; gives up after five seconds.
async fn released(address: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if UdpSocket::bind(address).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// True if a request sent to `public` reaches `upstream`: the worker that reads it is
/// running (a worker not yet started when its server goes would simply never start).
async fn forwards(public: SocketAddr, upstream: UdpSocket) -> bool {
    tokio::task::spawn_blocking(move || {
        let phone = UdpSocket::bind(localhost(0)).unwrap();
        upstream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        phone
            .send_to(&request(phone.local_addr().unwrap(), 1), public)
            .unwrap();
        let mut buffer = vec![0u8; 65_535];
        upstream.recv_from(&mut buffer).is_ok()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_server_releases_its_udp_addresses() {
    let upstream = UdpSocket::bind(localhost(0)).unwrap();
    let server = start(2, upstream.local_addr().unwrap()).await;
    let (public, inner) = (server.bound[0].1, server.inner);
    assert!(
        UdpSocket::bind(public).is_err(),
        "the server holds its address"
    );
    assert!(
        forwards(public, upstream).await,
        "the request was not forwarded"
    );
    let begun = Instant::now();
    server.shutdown().await;
    assert!(begun.elapsed() < Duration::from_secs(2), "shutdown waited");
    assert!(released(public).await && released(inner).await);
}

// A runtime of its own, shut down with a time limit: were a worker's thread to outlive
// its server, the test's runtime would otherwise wait for it forever.
#[test]
fn a_dropped_server_releases_its_udp_addresses() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (public, inner) = runtime.block_on(async {
        let upstream = UdpSocket::bind(localhost(0)).unwrap();
        let server = start(1, upstream.local_addr().unwrap()).await;
        let (public, inner) = (server.bound[0].1, server.inner);
        assert!(
            forwards(public, upstream).await,
            "the request was not forwarded"
        );
        drop(server);
        (public, inner)
    });
    let public_released = runtime.block_on(released(public));
    let inner_released = runtime.block_on(released(inner));
    runtime.shutdown_timeout(Duration::from_secs(1));
    assert!(public_released, "a worker kept the public socket");
    assert!(inner_released, "a worker kept the inner socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_forward_requests_and_answers() {
    let upstream = UdpSocket::bind(localhost(0)).unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let server = start(2, upstream.local_addr().unwrap()).await;
    let target = server.bound[0].1;
    let responder = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_535];
        let mut out = Vec::new();
        let mut answered = 0;
        while let Ok((len, from)) = upstream.recv_from(&mut buffer) {
            if !answer(&buffer[..len], b"", &mut out) {
                break;
            }
            upstream.send_to(&out, from).unwrap();
            answered += 1;
        }
        answered
    });
    // Phones on several source ports, so that the kernel spreads them over both workers.
    let phones: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind(localhost(0)).unwrap())
        .collect();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; 65_535];
        let mut answers = 0;
        for (seq, phone) in phones.iter().enumerate() {
            phone
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            for round in 0..4u64 {
                let source = phone.local_addr().unwrap();
                phone
                    .send_to(&request(source, seq as u64 * 10 + round), target)
                    .unwrap();
                match phone.recv_from(&mut buffer) {
                    Ok((len, from)) if buffer[..len].starts_with(b"SIP/2.0 200 ") => {
                        assert_eq!(from, target, "the answer comes from the public address");
                        answers += 1;
                    }
                    other => panic!("no answer: {other:?}"),
                }
            }
        }
        answers
    })
    .await
    .unwrap();
    assert_eq!(outcome, 32);
    server.shutdown().await;
    // The responder ends on its read timeout once nothing comes.
    assert_eq!(responder.join().unwrap(), 32);
}
