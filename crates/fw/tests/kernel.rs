//! The ban sets and the conntrack sweep against the real kernel, inside a network
//! namespace each test creates and removes (run as root; `nft` and `ip` must exist).

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sipwall_fw::conntrack::Conntrack;
use sipwall_fw::nft::NftError;
use sipwall_fw::sets::{BanSets, Change, SetsError};

/// A network namespace, removed when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("sw-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("the ip command (iproute2) is needed");
        assert!(status.success(), "ip netns add {name}");
        let netns = Netns { name };
        netns.run(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    fn run(&self, command: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(command)
            .output()
            .expect("ip netns exec");
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `work` on a thread that has entered the namespace: its sockets and the
    /// processes it starts live there.
    fn enter<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("namespace file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            work()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

/// Sends one datagram from `from` to `to` and says whether it arrived.
fn arrives(from: &str, to: &UdpSocket) -> bool {
    let sender = UdpSocket::bind((from.parse::<IpAddr>().unwrap(), 0)).unwrap();
    sender.send_to(b"probe", to.local_addr().unwrap()).unwrap();
    let mut buffer = [0u8; 64];
    to.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    loop {
        match to.recv_from(&mut buffer) {
            Ok((_, peer)) if peer == sender.local_addr().unwrap() => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

#[test]
fn banned_sources_are_dropped_by_the_kernel_and_unbans_let_them_through() {
    let netns = Netns::new("sets");
    let listing = netns.enter(|| {
        let sets = BanSets::default();
        sets.ensure().unwrap();
        // Twice: ensuring is idempotent and keeps elements.
        sets.apply(&[Change::Ban {
            source: net("127.0.1.2/32"),
            ttl: Duration::from_secs(60),
        }])
        .unwrap();
        sets.ensure().unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            !arrives("127.0.1.2", &server),
            "a banned source got through"
        );
        assert!(
            arrives("127.0.1.3", &server),
            "an innocent source was dropped"
        );
        // An extended ban keeps dropping; an unban of a source never banned is no error.
        sets.apply(&[
            Change::Ban {
                source: net("127.0.1.2/32"),
                ttl: Duration::from_secs(600),
            },
            Change::Unban {
                source: net("127.0.1.9/32"),
            },
        ])
        .unwrap();
        assert!(!arrives("127.0.1.2", &server));
        let listing = String::from_utf8(
            Command::new("nft")
                .args(["list", "table", "inet", "sipwall_bans"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        sets.apply(&[Change::Unban {
            source: net("127.0.1.2/32"),
        }])
        .unwrap();
        assert!(
            arrives("127.0.1.2", &server),
            "an unbanned source is still dropped"
        );
        listing
    });
    // The extension replaced the timeout (600 s, not 60 s) and the counter saw both drops.
    assert!(listing.contains("127.0.1.2 timeout 10m"), "{listing}");
    assert!(
        listing.contains("ip saddr @ban4 counter packets 2 "),
        "{listing}"
    );
}

#[test]
fn a_resync_replaces_the_sets_and_repairs_what_a_batch_could_not_do() {
    let netns = Netns::new("resync");
    netns.enter(|| {
        let sets = BanSets::default();
        sets.ensure().unwrap();
        sets.apply(&[Change::Ban {
            source: net("2001:db8::/48"),
            ttl: Duration::from_secs(60),
        }])
        .unwrap();
        // A /64 inside the /48: the interval set refuses the overlap, the whole batch
        // with it, and nothing of the batch is applied.
        let refused = sets.apply(&[
            Change::Ban {
                source: net("192.0.2.1/32"),
                ttl: Duration::from_secs(60),
            },
            Change::Ban {
                source: net("2001:db8:0:1::/64"),
                ttl: Duration::from_secs(60),
            },
        ]);
        assert!(
            matches!(refused, Err(SetsError::Nft(NftError::Refused { .. }))),
            "{refused:?}"
        );
        sets.resync(&[
            (net("192.0.2.1/32"), Duration::from_secs(60)),
            (net("2001:db8::/48"), Duration::from_secs(60)),
            (net("2001:db8:0:1::/64"), Duration::from_secs(60)),
        ])
        .unwrap();
    });
    let listing = netns.run(&["nft", "list", "table", "inet", "sipwall_bans"]);
    assert!(listing.contains("192.0.2.1 timeout 1m"), "{listing}");
    assert!(listing.contains("2001:db8::/48 timeout 1m"), "{listing}");
    assert!(!listing.contains("2001:db8:0:1::/64"), "{listing}");
}

#[test]
fn a_missing_nft_is_a_clear_error() {
    let sets = BanSets::new("/nonexistent/nft");
    let error = sets.ensure().unwrap_err();
    assert!(matches!(error, SetsError::Nft(NftError::Spawn { .. })));
    assert!(error.to_string().contains("nftables"), "{error}");
}

#[test]
fn fifty_thousand_bans_enter_the_kernel_in_one_transaction() {
    let netns = Netns::new("many");
    let (elapsed, count) = netns.enter(|| {
        let sets = BanSets::default();
        sets.ensure().unwrap();
        let changes: Vec<Change> = (0..50_000u32)
            .map(|i| Change::Ban {
                source: IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))),
                ttl: Duration::from_secs(1800),
            })
            .collect();
        let start = Instant::now();
        sets.apply(&changes).unwrap();
        let elapsed = start.elapsed();
        let output = Command::new("nft")
            .args(["list", "set", "inet", "sipwall_bans", "ban4"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (elapsed, text.matches(" expires ").count())
    });
    assert_eq!(count, 50_000);
    eprintln!(
        "50,000 bans in one transaction: {:.0} ms, {:.0} bans/s",
        elapsed.as_secs_f64() * 1000.0,
        50_000.0 / elapsed.as_secs_f64()
    );
}

#[test]
fn the_sweep_removes_the_conntrack_entries_of_banned_sources_only() {
    let netns = Netns::new("ct");
    // Connection tracking runs in a namespace only once a rule needs it.
    netns.run(&[
        "nft",
        "add table inet probe; add chain inet probe input { type filter hook input priority 0; }; add rule inet probe input ct state new counter",
    ]);
    let removed = netns.enter(|| {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut senders = Vec::new();
        for host in ["127.0.1.2", "127.0.1.3", "127.0.1.4"] {
            let sender = UdpSocket::bind((host.parse::<IpAddr>().unwrap(), 0)).unwrap();
            sender.send_to(b"x", server.local_addr().unwrap()).unwrap();
            senders.push(sender);
        }
        let v6_server = UdpSocket::bind("[::1]:0").unwrap();
        let v6 = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 0))).unwrap();
        v6.send_to(b"x", v6_server.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut conntrack = Conntrack::open().unwrap();
        conntrack
            .remove_sources(&[net("127.0.1.2/32"), net("127.0.1.4/32"), net("::/64")])
            .unwrap()
    });
    assert_eq!(removed, 3);
    let left = Command::new("ip")
        .args(["netns", "exec", &netns.name, "conntrack", "-L"])
        .output()
        .expect("the conntrack tool (package conntrack) is needed");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(left.contains("src=127.0.1.3 "), "{left}");
    assert!(!left.contains("src=127.0.1.2 "), "{left}");
    assert!(!left.contains("src=127.0.1.4 "), "{left}");
    assert!(!left.contains("src=::1 "), "{left}");
}
