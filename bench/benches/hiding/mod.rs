//! The messages of the topology hiding benchmarks, shared by the criterion benchmark
//! (`topology.rs`) and the instruction counter (`examples/instructions.rs`): an edge with
//! hiding on or off, and the messages of a call that crossed it, built by running the
//! call through that very edge (the masks are its own).
#![allow(dead_code)] // each includer uses a different part

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sipwall_edge::{Action, Edge, EdgeConfig, Flow, Inbound, Side, TopologyConfig, Transport};
use sipwall_policy::{Engine, PolicyConfig};
use sipwall_sip::{Framing, HeaderName, Limits, Message};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n\
t=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n";

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("benchmark addresses parse")
}

pub fn phone() -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr("198.51.100.7:40000"),
        connection: 0,
    }
}

pub fn upstream() -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr("10.0.0.2:5080"),
        connection: 0,
    }
}

pub fn edge(hide: bool) -> Edge {
    let config = EdgeConfig {
        public: vec![(Transport::Udp, addr("203.0.113.1:5060"))],
        inner: addr("10.0.0.1:5070"),
        upstream: addr("10.0.0.2:5080"),
        key: [7; 32],
        previous_key: None,
        limits: Limits::default(),
        topology: TopologyConfig {
            hide,
            inside_networks: vec!["10.0.0.0/24".parse().expect("network")],
            ..TopologyConfig::default()
        },
    };
    let policy: PolicyConfig =
        toml::from_str("trusted_peers = [\"198.51.100.0/24\"]").expect("policy");
    Edge::new(
        config,
        Arc::new(Mutex::new(Engine::new(&policy, &[], [0; 16]))),
    )
}

/// Runs a message through the edge; returns what it forwarded.
pub fn forward(edge: &mut Edge, text: &str, side: Side, flow: Flow) -> String {
    let inbound = Inbound {
        bytes: text.as_bytes(),
        side,
        flow,
        now: 0,
    };
    match edge.handle(&inbound) {
        Action::Forward { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("not forwarded: {other:?}"),
    }
}

fn header(text: &str, name: HeaderName) -> String {
    let msg =
        Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default()).expect("parses");
    msg.headers_named(name)
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A UAS's answer: the request's Via, Record-Route, From, To (tagged), Call-ID, CSeq.
fn answer(request: &str, extra: &str) -> String {
    let mut text = String::from("SIP/2.0 200 OK\r\n");
    for name in [HeaderName::Via, HeaderName::RecordRoute, HeaderName::From] {
        let value = header(request, name);
        if !value.is_empty() {
            text += &format!("{}: {value}\r\n", name.canonical());
        }
    }
    text += &format!(
        "To: {};tag=t9\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        header(request, HeaderName::To),
        header(request, HeaderName::CallId),
        header(request, HeaderName::CSeq)
    );
    text
}

/// The messages of one edge, built by running the call through it.
pub struct Messages {
    pub invite_down: String,
    pub ok_down: String,
    pub ok_up: String,
    pub bye_up: String,
}

pub fn messages(edge: &mut Edge) -> Messages {
    let register = "REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKreg;rport\r\nMax-Forwards: 70\r\n\
From: <sip:bob@pbx.example.com>;tag=r1\r\nTo: <sip:bob@pbx.example.com>\r\n\
Call-ID: reg@192.168.1.5\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:bob@192.168.1.5:5062>;expires=3600\r\nContent-Length: 0\r\n\r\n";
    let stored = forward(edge, register, Side::Public, phone());
    let contact = header(&stored, HeaderName::Contact);
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default();
    let invite_down = format!(
        "INVITE {target} SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKpbx1;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKapp1\r\n\
Max-Forwards: 69\r\nRecord-Route: <sip:10.0.0.2:5080;lr>\r\n\
From: \"Reception\" <sip:1000@10.0.0.2>;tag=p1\r\nTo: <sip:bob@10.0.0.2>\r\n\
Call-ID: 5f1c2a7e-pbx-call@10.0.0.2\r\nCSeq: 10 INVITE\r\n\
Contact: <sip:1000@10.0.0.2:5080>\r\nServer: PBX 20.5.0\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY\r\n\
Supported: replaces, timer\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let to_phone = forward(edge, &invite_down, Side::Inner, upstream());
    let ok_up = answer(&to_phone, "Contact: <sip:bob@192.168.1.5:5062>\r\n");
    // The phone's BYE: its route set is the Record-Route list in order (it is the UAS).
    let bye_up = format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKbye1;rport\r\n\
Max-Forwards: 70\r\nRoute: {}\r\nFrom: {};tag=t9\r\nTo: {}\r\nCall-ID: {}\r\n\
CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        header(&to_phone, HeaderName::Contact)
            .trim_start_matches('<')
            .trim_end_matches('>'),
        header(&to_phone, HeaderName::RecordRoute),
        header(&to_phone, HeaderName::To),
        header(&to_phone, HeaderName::From),
        header(&to_phone, HeaderName::CallId),
    );
    // A call from the phone, answered by the upstream behind a proxy.
    let invite_up = format!(
        "INVITE sip:1000@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKa1;rport\r\nMax-Forwards: 70\r\n\
From: <sip:bob@pbx.example.com>;tag=a1\r\nTo: <sip:1000@pbx.example.com>\r\n\
Call-ID: a-call@192.168.1.5\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.168.1.5:5062>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let at_upstream = forward(edge, &invite_up, Side::Public, phone());
    let ok_down = answer(
        &at_upstream.replacen(
            "Record-Route:",
            "Record-Route: <sip:10.0.0.2:5080;lr>\r\nRecord-Route:",
            1,
        ),
        "Contact: <sip:1000@10.0.0.9:5060>\r\nServer: PBX 20.5.0\r\n",
    );
    Messages {
        invite_down,
        ok_down,
        ok_up,
        bye_up,
    }
}

impl Messages {
    /// Each message by its benchmark name, with the side and peer it comes from.
    pub fn all(&self) -> [(&'static str, &str, Side, Flow); 4] {
        [
            ("invite_down", &self.invite_down, Side::Inner, upstream()),
            ("ok_down", &self.ok_down, Side::Inner, upstream()),
            ("ok_up", &self.ok_up, Side::Public, phone()),
            ("bye_up", &self.bye_up, Side::Public, phone()),
        ]
    }
}
