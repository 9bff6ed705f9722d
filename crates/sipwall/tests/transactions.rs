//! End-to-end transaction behaviour through the sipwall binary, with a real sipp phone
//! and an upstream played by the test itself, so that it can look at what the edge
//! sends and withhold answers on purpose:
//!
//! - an INVITE left unanswered is retransmitted by sipp, and the edge forwards the
//!   retransmission with the same branch (a stateless proxy's only way to let the
//!   upstream match it);
//! - a CANCEL gets the branch of the INVITE it cancels, and so does the ACK of the
//!   487 that follows (RFC 3261 §9.1, §17.1.1.3).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Guard, Sipwall, UPSTREAM_IP, config, free_port, sipp as sipp_path, start_sipwall, work_dir,
};

use sipwall_sip::{Framing, HeaderName, Limits, Message, Method};

/// Starts sipwall in front of the test's upstream socket; returns it and the public port.
fn start_edge(upstream: u16, dir: &Path) -> (Sipwall, u16) {
    let public = free_port();
    let text = config(
        public,
        free_port(),
        upstream,
        "[runtime]\nworkers = 1\n[policy]\ntrusted_peers = [\"127.0.0.1/32\"]\n",
    );
    (start_sipwall(dir, &text, public), public)
}

fn sipp(dir: &Path, target: u16, args: &[&str]) -> Guard {
    let child = Command::new("timeout")
        .arg("30")
        .arg(sipp_path())
        .arg(format!("127.0.0.1:{target}"))
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args([
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "20s",
            "-timeout_error",
            "-trace_err",
        ])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    Guard(child)
}

/// The upstream: one UDP socket, read message by message.
struct Upstream {
    socket: UdpSocket,
    buf: Vec<u8>,
}

impl Upstream {
    fn new() -> Upstream {
        let socket = UdpSocket::bind((UPSTREAM_IP, 0)).expect("bind upstream");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Upstream {
            socket,
            buf: vec![0; 65_535],
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().expect("address").port()
    }

    /// The next message from the edge, and where it came from.
    fn receive(&mut self) -> (Vec<u8>, SocketAddr) {
        let (len, from) = self
            .socket
            .recv_from(&mut self.buf)
            .expect("a message from the edge within 10 s");
        (self.buf[..len].to_vec(), from)
    }

    /// Answers `request` with `code`, adding a To tag if it has none.
    fn answer(&self, request: &[u8], code: u16, reason: &str, to: SocketAddr) {
        let msg = Message::parse(request, Framing::Datagram, &Limits::default()).expect("parse");
        let mut text = format!("SIP/2.0 {code} {reason}\r\n");
        for header in msg.headers() {
            let name = header.name;
            if matches!(
                name,
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq
            ) {
                text += &format!(
                    "{}: {}\r\n",
                    name.canonical(),
                    String::from_utf8_lossy(header.value)
                );
            } else if name == HeaderName::To {
                let tagged = msg
                    .to()
                    .and_then(Result::ok)
                    .is_some_and(|to| to.tag().is_some());
                let tag = if tagged { "" } else { ";tag=up1" };
                text += &format!("To: {}{tag}\r\n", String::from_utf8_lossy(header.value));
            }
        }
        text += "Content-Length: 0\r\n\r\n";
        self.socket
            .send_to(text.as_bytes(), to)
            .expect("send answer");
    }
}

fn top_branch(bytes: &[u8]) -> Vec<u8> {
    let msg = Message::parse(bytes, Framing::Datagram, &Limits::default()).expect("parse");
    msg.top_via()
        .expect("a Via")
        .expect("a valid Via")
        .branch()
        .expect("a branch")
        .to_vec()
}

fn method(bytes: &[u8]) -> Option<Method<'_>> {
    Message::parse(bytes, Framing::Datagram, &Limits::default())
        .ok()
        .and_then(|msg| msg.method())
}

#[test]
fn a_retransmitted_invite_keeps_its_branch() {
    let dir = work_dir("tx-retransmit");
    let mut upstream = Upstream::new();
    let (_edge, public) = start_edge(upstream.port(), &dir);
    let _phone = sipp(&dir, public, &["-sn", "uac"]);

    // Say nothing to the first INVITE: sipp retransmits it after 500 ms.
    let (first, _) = upstream.receive();
    assert_eq!(method(&first), Some(Method::Invite));
    let (again, from) = upstream.receive();
    assert_eq!(
        method(&again),
        Some(Method::Invite),
        "expected the retransmission"
    );
    assert_eq!(top_branch(&first), top_branch(&again));
    assert_eq!(
        first, again,
        "a retransmission is forwarded byte for byte the same"
    );

    // Then the call completes through the edge: 200, ACK, BYE, 200.
    upstream.answer(&again, 200, "OK", from);
    let (ack, _) = upstream.receive();
    assert_eq!(method(&ack), Some(Method::Ack));
    let (bye, from) = upstream.receive();
    assert_eq!(method(&bye), Some(Method::Bye));
    upstream.answer(&bye, 200, "OK", from);
}

#[test]
fn cancel_and_the_ack_of_its_487_follow_the_invite() {
    let dir = work_dir("tx-cancel");
    let mut upstream = Upstream::new();
    let (_edge, public) = start_edge(upstream.port(), &dir);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sipp/uac_cancel.xml");
    let mut phone = sipp(
        &dir,
        public,
        &["-sf", scenario.to_str().expect("utf-8 path")],
    );

    let (invite, from) = upstream.receive();
    assert_eq!(method(&invite), Some(Method::Invite));
    upstream.answer(&invite, 180, "Ringing", from);
    let (cancel, from) = upstream.receive();
    assert_eq!(method(&cancel), Some(Method::Cancel));
    assert_eq!(
        top_branch(&cancel),
        top_branch(&invite),
        "CANCEL must match the INVITE"
    );
    upstream.answer(&cancel, 200, "OK", from);
    upstream.answer(&invite, 487, "Request Terminated", from);
    let (ack, _) = upstream.receive();
    assert_eq!(method(&ack), Some(Method::Ack));
    assert_eq!(
        top_branch(&ack),
        top_branch(&invite),
        "the ACK of a 487 matches the INVITE"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = phone.0.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "sipp did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "the caller saw the cancel fail: see {}",
        dir.display()
    );
}
