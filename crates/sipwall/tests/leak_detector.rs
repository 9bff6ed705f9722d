//! The leak detector of the end-to-end tests (`common/leak.rs`) tested on its own, with
//! plain sockets playing the public listener, a phone, the upstream and the edge's inner
//! address, and with messages written by hand: it must report what it is there to find
//! (in every form it claims to know), pass what is clean, count each packet once, and
//! refuse to pass when it saw nothing.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::leak::{LeakDetector, Topology, forbidden_in, needles};
use common::{INNER_IP, PUBLIC_IP, UPSTREAM_IP};

fn bind(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket
}

fn address(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().expect("local address")
}

/// A public listener, a phone, the upstream and the inner address, each a socket.
struct Sides {
    public: UdpSocket,
    phone: UdpSocket,
    upstream: UdpSocket,
    inner: UdpSocket,
}

impl Sides {
    fn new() -> Sides {
        Sides {
            public: bind(PUBLIC_IP),
            phone: bind(PUBLIC_IP),
            upstream: bind(UPSTREAM_IP),
            inner: bind(INNER_IP),
        }
    }

    fn topology(&self) -> Topology {
        Topology {
            public: vec![address(&self.public)],
            inner: address(&self.inner),
            upstreams: vec![address(&self.upstream)],
        }
    }

    fn detector(&self) -> LeakDetector {
        LeakDetector::start(self.topology())
    }

    /// Sends `message` from `from` to `to`, and makes sure it arrived.
    fn send(&self, from: &UdpSocket, to: &UdpSocket, message: &str) {
        from.send_to(message.as_bytes(), address(to)).expect("send");
        let mut buffer = [0u8; 65_535];
        let (len, _) = to.recv_from(&mut buffer).expect("the message arrives");
        assert_eq!(&buffer[..len], message.as_bytes());
    }
}

fn response(extra: &str) -> String {
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1;rport=5062\r\n\
         From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
         Call-ID: phone-call-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

fn request(call_id: &str) -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-2\r\n\
         From: <sip:alice@example.com>;tag=a2\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn the_upstream_address_sent_by_a_public_listener_is_reported() {
    let sides = Sides::new();
    let leaks = sides.detector();
    let upstream = address(&sides.upstream);
    let leaky = response(&format!("Record-Route: <sip:{upstream};lr>\r\n"));
    sides.send(&sides.public, &sides.phone, &leaky);
    let report = leaks.check().expect_err("a leak");
    assert!(report.contains("\"127.0.0.2\""), "{report}");
    assert!(report.contains("the upstream's address"), "{report}");
    assert!(
        report.contains(&format!("> Record-Route: <sip:{upstream};lr>")),
        "the report shows the message and flags the line:\n{report}"
    );
}

#[test]
fn a_clean_message_passes_and_every_packet_is_counted_once() {
    let sides = Sides::new();
    let leaks = sides.detector();
    sides.send(
        &sides.phone,
        &sides.public,
        &request("phone-call-2@127.0.0.1"),
    );
    sides.send(&sides.public, &sides.phone, &response(""));
    sides.send(&sides.public, &sides.phone, &response("Server: edge\r\n"));
    let summary = leaks.check().expect("nothing forbidden");
    assert_eq!(summary.toward_public, 2, "{summary:?}");
    assert_eq!(summary.to_public, 1, "{summary:?}");
    assert_eq!(summary.bytes, response("").len() * 2 + 14, "{summary:?}");
}

#[test]
fn a_detector_that_saw_nothing_fails_unless_told_the_edge_stays_silent() {
    let sides = Sides::new();
    let leaks = sides.detector();
    sides.send(
        &sides.phone,
        &sides.public,
        &request("phone-call-3@127.0.0.1"),
    );
    let report = leaks
        .check()
        .expect_err("nothing was sent toward the public side");
    assert!(report.contains("saw nothing"), "{report}");
    leaks.expect_public_traffic(false);
    assert_eq!(leaks.check().expect("silence was expected").to_public, 1);
}

#[test]
fn a_call_id_the_upstream_made_up_is_reported_when_it_reaches_the_public_side() {
    let sides = Sides::new();
    let leaks = sides.detector();
    // A call from the phone: its Call-ID goes up and comes back; that is no leak.
    let phone_call = "phone-born-4@127.0.0.1";
    sides.send(&sides.phone, &sides.public, &request(phone_call));
    sides.send(&sides.upstream, &sides.inner, &request(phone_call));
    sides.send(&sides.public, &sides.phone, &request(phone_call));
    leaks
        .check()
        .expect("a Call-ID of the public side may go back");

    // A request the upstream makes up: its Call-ID must not reach the phone.
    let upstream_call = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
    sides.send(&sides.upstream, &sides.inner, &request(upstream_call));
    sides.send(&sides.public, &sides.phone, &request(upstream_call));
    let report = leaks.check().expect_err("the upstream's Call-ID leaked");
    assert!(report.contains(upstream_call), "{report}");
    assert!(
        report.contains("a Call-ID the upstream made up"),
        "{report}"
    );
    assert!(!report.contains(&format!("\"{phone_call}\"")), "{report}");
}

#[test]
fn configured_host_names_and_markers_are_found_in_any_case() {
    let sides = Sides::new();
    let leaks = sides.detector();
    leaks.forbid("pbx.inside.example", "the upstream's host name");
    leaks.forbid("X-Internal-Node", "a marker");
    sides.send(
        &sides.public,
        &sides.phone,
        &response("Contact: <sip:PBX.Inside.Example>\r\nx-internal-node: 7\r\n"),
    );
    let report = leaks.check().expect_err("host name and marker");
    assert!(report.contains("\"pbx.inside.example\""), "{report}");
    assert!(report.contains("\"x-internal-node\""), "{report}");
}

#[test]
fn messages_sent_from_the_inner_address_to_anything_but_the_upstream_are_reported() {
    let sides = Sides::new();
    let leaks = sides.detector();
    sides.send(&sides.inner, &sides.upstream, &response(""));
    sides.send(&sides.public, &sides.phone, &response(""));
    leaks
        .check()
        .expect("the inner address talks to the upstream");
    sides.send(&sides.inner, &sides.phone, &response(""));
    let report = leaks
        .check()
        .expect_err("the inner address talked to a phone");
    assert!(
        report.contains("left from the edge's inner address"),
        "{report}"
    );
}

#[test]
fn a_leak_split_across_tcp_segments_is_found() {
    let listener = TcpListener::bind((PUBLIC_IP, 0)).expect("listen");
    let sides = Sides::new();
    let topology = Topology {
        public: vec![listener.local_addr().expect("address")],
        ..sides.topology()
    };
    let leaks = LeakDetector::start(topology);
    let mut phone = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (mut edge, _) = listener.accept().expect("accept");
    edge.set_nodelay(true).expect("nodelay");
    // Two messages; the address of the second is cut between two segments.
    let clean = response("");
    let leaky = response("Record-Route: <sip:127.0.0.2;lr>\r\n");
    let (head, tail) = leaky.split_at(leaky.find("0.0.2;lr").expect("the address"));
    edge.write_all(clean.as_bytes()).expect("write");
    edge.write_all(head.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    edge.write_all(tail.as_bytes()).expect("write");
    phone
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut received = vec![0u8; clean.len() + leaky.len()];
    std::io::Read::read_exact(&mut phone, &mut received).expect("both messages arrive");
    let report = leaks.check().expect_err("the address across segments");
    assert!(report.contains("\"127.0.0.2\""), "{report}");
    assert!(report.contains("in 1 message;"), "{report}");
    assert!(report.contains("TCP "), "{report}");
}

/// The forbidden strings of `message` for a topology whose upstream is 127.0.0.2:5080
/// and inner address 127.0.0.3:5070.
fn found(message: &str) -> Vec<String> {
    let topology = Topology {
        public: vec!["127.0.0.1:5060".parse().expect("address")],
        inner: "127.0.0.3:5070".parse().expect("address"),
        upstreams: vec!["127.0.0.2:5080".parse().expect("address")],
    };
    forbidden_in(message.as_bytes(), &needles(&topology, &[], &[]))
}

#[test]
fn every_form_of_an_inside_address_is_caught() {
    for (message, expected) in [
        ("Via: SIP/2.0/UDP 127.0.0.2;branch=1", "127.0.0.2"),
        ("Contact: <sip:[::FFFF:7F00:2]>", "::ffff:7f00:2"),
        ("Contact: <sip:[::ffff:7f00:0002]>", "::ffff:7f00:0002"),
        ("Contact: <sip:[::ffff:127.0.0.2]>", "::ffff:127.0.0.2"),
        (
            "Contact: <sip:[0:0:0:0:0:ffff:7f00:2]>",
            "0:0:0:0:0:ffff:7f00:2",
        ),
        (
            "Contact: <sip:[0000:0000:0000:0000:0000:FFFF:7F00:0002]>",
            "0000:0000:0000:0000:0000:ffff:7f00:0002",
        ),
        ("X-Node: 7F000002", "7f000002"),
        ("X-Node: 0x7f000003", "7f000003"),
        ("X-Node: 2130706434", "2130706434"),
        ("X-Node: 127.000.000.003", "127.000.000.003"),
        ("X-Node: 3.0.0.127.in-addr.arpa", "3.0.0.127.in-addr.arpa"),
        ("Contact: <sip:u@127%2E0%2E0%2E3>", "127.0.0.3"),
        // base64 of "127.0.0.2:5080" after a prefix that is not a multiple of 4.
        ("Contact: <sip:zbMTI3LjAuMC4yOjUwODA@edge>", "127.0.0.2"),
        // hex of "127.0.0.3".
        ("X-Token: 3132372e302e302e33", "127.0.0.3"),
        // 127.0.0.2 and 5080 packed in 6 bytes, base64url.
        ("Contact: <sip:fwAAAhPY@edge>", "7f00000213d8"),
        ("Via: SIP/2.0/UDP edge:5080;branch=1", ":5080"),
        ("Via: SIP/2.0/UDP edge;rport=5070", "=5070"),
        ("Contact: <sip:edge;port=5080>", "port=5080"),
    ] {
        let hits = found(message);
        assert!(
            hits.iter().any(|hit| hit == expected),
            "{message}: expected {expected}, found {hits:?}"
        );
    }
}

#[test]
fn what_only_looks_like_an_inside_address_passes() {
    for message in [
        // Other addresses that begin like the inside's.
        "Via: SIP/2.0/UDP 127.0.0.20:5062;branch=z9hG4bK-1",
        "Via: SIP/2.0/UDP 127.0.0.200;received=127.0.0.31",
        "Contact: <sip:[::ffff:7f00:20]>",
        // The ports inside other numbers.
        "Via: SIP/2.0/UDP 127.0.0.1:50801;branch=z9hG4bK-5080",
        "From: <sip:a@example.com>;tag=5080SIPpTag001",
        "Call-ID: 15080-5070@127.0.0.1",
        "o=user1 5080 5070 IN IP4 127.0.0.1",
        "CSeq: 5080 INVITE",
        // The public side itself.
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1",
    ] {
        assert_eq!(found(message), Vec::<String>::new(), "{message}");
    }
}

#[test]
fn media_addresses_in_an_sdp_body_are_out_of_scope_but_not_in_its_headers() {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\nc=IN IP4 127.0.0.2\r\n";
    let clean = format!(
        "SIP/2.0 200 OK\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    assert!(found(&clean).is_empty(), "{:?}", found(&clean));
    let leaky = clean.replace("Content-Type", "Contact: <sip:127.0.0.2>\r\nContent-Type");
    assert!(!found(&leaky).is_empty());
    // Another body type is searched whole.
    let text = clean.replace("application/sdp", "text/plain");
    assert!(!found(&text).is_empty());
}
