//! End-to-end behaviour of the sipwall process itself: local answers, IPv6, reload on
//! SIGHUP, shutdown on SIGTERM, TCP connection limits and idle timeouts, and 430 when a
//! phone's TCP connection is gone. The test plays phone and upstream with plain sockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{INNER_IP, Sipwall, UPSTREAM_IP, config, free_port, start_sipwall, work_dir};
use sipwall_sip::{Contact, Framing, Limits, Message};

fn request(method: &str, uri: &str, transport: &str, from: SocketAddr, extra: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {from};branch=z9hG4bK{}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: {}@test\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n",
        free_port(),
        free_port()
    )
}

/// Where the test's upstream sockets bind: the upstream's own address.
const UPSTREAM: (&str, u16) = (UPSTREAM_IP, 0);

fn udp(bind: impl std::net::ToSocketAddrs) -> UdpSocket {
    let socket = UdpSocket::bind(bind).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0; 65_535];
    let (len, from) = socket.recv_from(&mut buf).expect("a message within 5 s");
    buf.truncate(len);
    (buf, from)
}

fn status(bytes: &[u8]) -> Option<u16> {
    Message::parse(bytes, Framing::Datagram, &Limits::default())
        .ok()?
        .status_code()
}

/// Answers a request received by the upstream with `code`, copying what a response
/// copies.
fn answer(upstream: &UdpSocket, request: &[u8], to: SocketAddr, code: u16) {
    let msg = Message::parse(request, Framing::Datagram, &Limits::default()).expect("parse");
    let mut text = format!("SIP/2.0 {code} Whatever\r\n");
    for header in msg.headers() {
        use sipwall_sip::HeaderName::*;
        if matches!(header.name, Via | From | To | CallId | CSeq | Contact) {
            text += &format!(
                "{}: {}\r\n",
                header.name.canonical(),
                String::from_utf8_lossy(header.value)
            );
        }
    }
    text += "Content-Length: 0\r\n\r\n";
    upstream.send_to(text.as_bytes(), to).expect("send");
}

fn edge(name: &str, upstream: u16, extra: &str) -> (Sipwall, u16) {
    let public = free_port();
    let text = config(public, free_port(), upstream, extra);
    (start_sipwall(&work_dir(name), &text, public), public)
}

#[test]
fn options_to_the_edge_is_answered_and_requests_go_up_and_back() {
    let upstream = udp(UPSTREAM);
    let (_edge, public) = edge("rt-options", upstream.local_addr().unwrap().port(), "");
    let phone = udp("127.0.0.1:0");
    let me = phone.local_addr().unwrap();

    let ping = request("OPTIONS", &format!("sip:127.0.0.1:{public}"), "UDP", me, "");
    phone
        .send_to(ping.as_bytes(), ("127.0.0.1", public))
        .unwrap();
    assert_eq!(status(&receive(&phone).0), Some(200));

    let options = request("OPTIONS", "sip:bob@example.com", "UDP", me, "");
    phone
        .send_to(options.as_bytes(), ("127.0.0.1", public))
        .unwrap();
    let (up, from) = receive(&upstream);
    answer(&upstream, &up, from, 200);
    let (back, _) = receive(&phone);
    assert_eq!(status(&back), Some(200));
    // The phone gets back exactly its own Via.
    let back = Message::parse(&back, Framing::Datagram, &Limits::default()).unwrap();
    assert_eq!(back.vias().count(), 1);

    // Garbage is dropped and the edge keeps working.
    phone
        .send_to(b"\x00\x01garbage\r\n\r\n", ("127.0.0.1", public))
        .unwrap();
    phone
        .send_to(ping.as_bytes(), ("127.0.0.1", public))
        .unwrap();
    assert_eq!(status(&receive(&phone).0), Some(200));
}

#[test]
fn phones_on_ipv6_reach_an_ipv4_upstream() {
    let Ok(phone) = UdpSocket::bind("[::1]:0") else {
        panic!("this machine has no IPv6 loopback; the test needs [::1]");
    };
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let upstream = udp(UPSTREAM);
    let public = free_port();
    let mut text = config(
        public,
        free_port(),
        upstream.local_addr().unwrap().port(),
        "",
    );
    text = text.replace(
        &format!("udp = [\"127.0.0.1:{public}\"]"),
        &format!("udp = [\"127.0.0.1:{public}\", \"[::1]:{public}\"]"),
    );
    let _edge = start_sipwall(&work_dir("rt-ipv6"), &text, public);
    let me = phone.local_addr().unwrap();
    let options = request("OPTIONS", "sip:bob@example.com", "UDP", me, "");
    phone.send_to(options.as_bytes(), ("::1", public)).unwrap();
    let (up, from) = receive(&upstream);
    answer(&upstream, &up, from, 200);
    let (back, _) = receive(&phone);
    assert_eq!(status(&back), Some(200));
}

#[test]
fn sighup_switches_the_upstream_without_a_restart_and_sigterm_stops() {
    let first = udp(UPSTREAM);
    let second = udp(UPSTREAM);
    let public = free_port();
    let inner = free_port();
    let text = config(public, inner, first.local_addr().unwrap().port(), "");
    let mut edge = start_sipwall(&work_dir("rt-reload"), &text, public);
    // The second upstream is of the inside too; and no upstream ever answers, so the
    // phone gets nothing back.
    edge.leaks.add_upstream(second.local_addr().unwrap());
    edge.leaks.expect_public_traffic(false);
    let phone = udp("127.0.0.1:0");
    let me = phone.local_addr().unwrap();
    let send = |phone: &UdpSocket| {
        let options = request("OPTIONS", "sip:bob@example.com", "UDP", me, "");
        phone
            .send_to(options.as_bytes(), ("127.0.0.1", public))
            .unwrap();
    };
    send(&phone);
    receive(&first);

    let reloaded = config(public, inner, second.local_addr().unwrap().port(), "");
    std::fs::write(&edge.config_path, reloaded).unwrap();
    let pid = edge.process.0.id().to_string();
    let signal = |name: &str| {
        let sent = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(sent.success(), "kill {name} {pid}");
    };
    signal("-HUP");
    // The reload is asynchronous: the first message after it may still go the old way.
    let deadline = Instant::now() + Duration::from_secs(5);
    second
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 65_535];
    loop {
        send(&phone);
        if second.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the reload did not take effect");
    }

    // An invalid file is refused and the edge keeps its configuration.
    std::fs::write(&edge.config_path, "[listen]\nudp = 5").unwrap();
    signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    send(&phone);
    receive(&second);

    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = edge.process.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "sipwall did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(edge.dir.join("sipwall.log")).unwrap();
    assert!(log.contains("reload refused"), "{log}");
}

#[test]
fn tcp_connections_are_capped_per_source_and_closed_when_idle() {
    let upstream = udp(UPSTREAM);
    let (_edge, public) = edge(
        "rt-tcp-limits",
        upstream.local_addr().unwrap().port(),
        "[runtime]\ntcp_idle_timeout = 1\nmax_connections_per_source = 3\n",
    );
    // The probe connection of start_sipwall may still be counted briefly.
    std::thread::sleep(Duration::from_millis(200));
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", public)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = TcpStream::connect(("127.0.0.1", public)).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        fourth.read(&mut buf).unwrap_or(0),
        0,
        "the fourth connection is closed"
    );

    // Idle connections are closed after the timeout (1 s).
    for stream in &mut open {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let started = Instant::now();
        assert_eq!(stream.read(&mut buf).unwrap_or(0), 0);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // Their places are free again.
    let mut again = TcpStream::connect(("127.0.0.1", public)).unwrap();
    let ping = request(
        "OPTIONS",
        &format!("sip:127.0.0.1:{public}"),
        "TCP",
        again.local_addr().unwrap(),
        "",
    );
    again.write_all(ping.as_bytes()).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let len = again.read(&mut [0u8; 2048]).unwrap();
    assert!(len > 0, "a new connection is served");
}

#[test]
fn a_request_for_a_closed_tcp_flow_is_answered_430() {
    let upstream = udp(UPSTREAM);
    let (edge, public) = edge("rt-430", upstream.local_addr().unwrap().port(), "");
    // The REGISTER is never answered and the 430 goes to the upstream: the phone gets
    // nothing.
    edge.leaks.expect_public_traffic(false);
    // A TCP phone registers; the upstream learns its masked Contact.
    let mut phone = TcpStream::connect(("127.0.0.1", public)).unwrap();
    let me = phone.local_addr().unwrap();
    let register = request(
        "REGISTER",
        "sip:example.com",
        "TCP",
        me,
        &format!("Contact: <sip:bob@{me};transport=tcp>\r\n"),
    );
    phone.write_all(register.as_bytes()).unwrap();
    let (up, _) = receive(&upstream);
    let msg = Message::parse(&up, Framing::Datagram, &Limits::default()).unwrap();
    let Some(Ok(Contact::Address(contact))) = msg.contacts().next() else {
        panic!("no contact");
    };
    let masked = String::from_utf8_lossy(contact.uri.raw).into_owned();
    drop(phone);
    std::thread::sleep(Duration::from_millis(300));

    // The upstream calls the masked Contact: the flow is gone, the edge answers 430.
    let invite = request("INVITE", &masked, "UDP", upstream.local_addr().unwrap(), "");
    let inner = format!("{INNER_IP}:{}", contact.uri.port.unwrap());
    upstream.send_to(invite.as_bytes(), &inner).unwrap();
    let (reply, _) = receive(&upstream);
    assert_eq!(status(&reply), Some(430));
}

/// The value of the first header `name` of `bytes`.
fn header(bytes: &[u8], name: sipwall_sip::HeaderName) -> String {
    let msg = Message::parse(bytes, Framing::Datagram, &Limits::default()).expect("parse");
    let value = msg.header(name).map(|h| h.value).unwrap_or_default();
    String::from_utf8_lossy(value).into_owned()
}

#[test]
fn an_upstream_call_reaches_the_phone_masked_and_a_forged_mask_bans_its_sender() {
    use sipwall_sip::HeaderName;
    let upstream = udp(UPSTREAM);
    // Forged masks ban at once here (the default answers 403 or 481 and counts them).
    let (edge, public) = edge(
        "rt-topology",
        upstream.local_addr().unwrap().port(),
        "[policy.rules.bad_token]\naction = \"ban\"\n",
    );
    let phone = udp("127.0.0.1:0");
    let me = phone.local_addr().unwrap();
    // The phone registers through the edge; the upstream keeps the masked Contact.
    let register = request(
        "REGISTER",
        "sip:example.com",
        "UDP",
        me,
        &format!("Contact: <sip:alice@{me}>;expires=60\r\n"),
    );
    phone
        .send_to(register.as_bytes(), ("127.0.0.1", public))
        .unwrap();
    let (up, from) = receive(&upstream);
    let contact = header(&up, HeaderName::Contact);
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default();
    answer(&upstream, &up, from, 200);
    assert_eq!(status(&receive(&phone).0), Some(200));

    // The upstream calls the phone with a Call-ID of its own, naming its address.
    let here = upstream.local_addr().unwrap();
    let invite = format!(
        "INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {here};branch=z9hG4bKup1\r\n\
Max-Forwards: 70\r\nRecord-Route: <sip:{here};lr>\r\nFrom: <sip:pbx@{here}>;tag=p1\r\n\
To: <sip:alice@example.com>\r\nCall-ID: pbx-7@{here}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:pbx@{here}>\r\nServer: PBX 1.0\r\nContent-Length: 0\r\n\r\n"
    );
    upstream.send_to(invite.as_bytes(), from).unwrap();
    let (down, _) = receive(&phone);
    let masked = header(&down, HeaderName::CallId);
    assert!(masked.starts_with("swcid-"), "{masked}");

    // A BYE with a forged mask bans the phone: no answer, a ban in the log.
    let bye = format!(
        "BYE sip:pbx@127.0.0.1:{public} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbye9\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a9\r\nTo: <sip:pbx@127.0.0.1>;tag=p1\r\n\
Call-ID: swcid-{}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        "A".repeat(40)
    );
    phone
        .send_to(bye.as_bytes(), ("127.0.0.1", public))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(edge.dir.join("sipwall.log")).unwrap();
        if log.contains("banned 127.0.0.1") && log.contains("rule=\"bad_token\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no bad_token ban logged:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    phone
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        phone.recv_from(&mut buf).is_err(),
        "the forged BYE was answered"
    );
}
