//! What the runtime's integration tests share: a server on free loopback ports whose
//! phones (anything on 127.0.0.1) are trusted peers, as `bench/load/maxrate` runs it.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sipwall_edge::{EdgeConfig, Transport};
use sipwall_net::{NetConfig, Server};

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A server on free loopback ports with `workers` UDP workers, toward `upstream`.
pub async fn start(workers: usize, upstream: SocketAddr) -> Server {
    let policy: sipwall_policy::PolicyConfig =
        toml::from_str("trusted_peers = [\"127.0.0.1/32\"]").unwrap();
    let policy = Arc::new(Mutex::new(sipwall_policy::Engine::new(
        &policy,
        &[],
        [0; 16],
    )));
    let config = NetConfig {
        edge: EdgeConfig {
            public: vec![(Transport::Udp, localhost(0))],
            inner: localhost(0),
            upstream,
            key: [0xab; sipwall_edge::KEY_LEN],
            previous_key: None,
            limits: Default::default(),
            topology: Default::default(),
        },
        workers,
        tcp_idle_timeout: Duration::from_secs(60),
        max_connections_per_source: 10,
        max_connections: 10,
    };
    Server::start(config, policy, Instant::now()).await.unwrap()
}
