//! Topology hiding, case by case: what a phone receives holds nothing of the inside, and
//! what it sends back with the edge's masks reaches the upstream as the upstream wrote it.
//!
//! The inside is 10.0.0.0/24 (the edge's inner address 10.0.0.1:5070, the upstream
//! 10.0.0.2:5080, another internal server 10.0.0.9) and the host name `pbx.internal`;
//! the edge's public address is 203.0.113.1:5060. Each test plays the phones and the
//! upstream by hand, building each answer from what the edge forwarded, as a real peer
//! would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sipwall_edge::{
    Action, DropReason, Edge, EdgeConfig, Flow, Inbound, SharedPolicy, Side, Target,
    TopologyConfig, Transport,
};
use sipwall_policy::Rule;
use sipwall_sip::{Framing, HeaderName, Limits, Message, NameAddr, split_list};

const KEY: [u8; 32] = [7; 32];
const NEW_KEY: [u8; 32] = [11; 32];

/// What must never reach a phone, in lower case.
const INSIDE: &[&str] = &[
    "10.0.0.",
    ":5070",
    ":5080",
    "pbx.internal",
    "x-internal-node",
    "warning:",
    "server:",
    "user-agent:",
    "pbx-call-",
];

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test addresses parse")
}

fn config(key: [u8; 32], previous: Option<[u8; 32]>, inner: &str) -> EdgeConfig {
    EdgeConfig {
        public: vec![
            (Transport::Udp, addr("203.0.113.1:5060")),
            (Transport::Tcp, addr("203.0.113.1:5060")),
        ],
        inner: addr(inner),
        upstream: addr("10.0.0.2:5080"),
        key,
        previous_key: previous,
        limits: Limits::default(),
        topology: TopologyConfig {
            inside_networks: vec!["10.0.0.0/24".parse().expect("network")],
            inside_names: vec!["pbx.internal".into()],
            remove_headers: vec!["X-Internal-Node".into()],
            ..TopologyConfig::default()
        },
    }
}

fn policy() -> SharedPolicy {
    let config = sipwall_policy::PolicyConfig::default();
    Arc::new(Mutex::new(sipwall_policy::Engine::new(
        &config,
        &[],
        [0; 16],
    )))
}

/// One edge and its pipeline.
struct Lab {
    edge: Edge,
    policy: SharedPolicy,
}

impl Lab {
    fn new() -> Lab {
        Lab::with(config(KEY, None, "10.0.0.1:5070"))
    }

    fn with(config: EdgeConfig) -> Lab {
        let policy = policy();
        Lab {
            edge: Edge::new(config, policy.clone()),
            policy,
        }
    }

    /// Runs one message through the edge.
    fn send(&mut self, text: &str, side: Side, flow: Flow) -> Out {
        let inbound = Inbound {
            bytes: text.as_bytes(),
            side,
            flow,
            now: 0,
        };
        let (to, bytes, dropped) = match self.edge.handle(&inbound) {
            Action::Forward { to, bytes } => (Some(to), bytes.to_vec(), None),
            Action::Reply { bytes } | Action::Tarpit { bytes, .. } => (None, bytes.to_vec(), None),
            Action::Drop(reason) => (None, Vec::new(), Some(reason)),
        };
        Out {
            to,
            text: String::from_utf8(bytes).expect("the edge writes text"),
            dropped,
        }
    }

    /// A message from the upstream, which must reach `phone` with nothing of the inside.
    fn down(&mut self, text: &str, phone: Flow) -> String {
        let out = self.send(text, Side::Inner, upstream());
        assert_eq!(out.to, Some(Target::Peer(phone)), "{}", out.text);
        assert_hidden(&out.text);
        out.text
    }

    /// A message from `phone`, which must reach the upstream.
    fn up(&mut self, text: &str, phone: Flow) -> String {
        let out = self.send(text, Side::Public, phone);
        assert_eq!(
            out.to,
            Some(Target::Upstream),
            "{:?}: {}",
            out.dropped,
            out.text
        );
        out.text
    }

    fn bad_tokens(&self) -> u64 {
        let engine = self.policy.lock().expect("policy lock");
        let index = Rule::ALL
            .iter()
            .position(|rule| *rule == Rule::BadToken)
            .expect("rule listed");
        engine.counters().rules[index].matched
    }
}

struct Out {
    to: Option<Target>,
    text: String,
    dropped: Option<DropReason>,
}

fn phone_a() -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr("198.51.100.7:40000"),
        connection: 0,
    }
}

fn phone_b() -> Flow {
    Flow {
        transport: Transport::Tcp,
        remote: addr("198.51.100.8:40001"),
        connection: 3,
    }
}

fn upstream() -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr("10.0.0.2:5080"),
        connection: 0,
    }
}

fn parse(text: &str) -> Message<'_> {
    Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default())
        .or_else(|_| Message::parse(text.as_bytes(), Framing::Stream, &Limits::default()))
        .expect("the edge's output parses")
}

/// Fails if anything of the inside is in `text`.
fn assert_hidden(text: &str) {
    let lower = text.to_ascii_lowercase();
    for inside in INSIDE {
        assert!(
            !lower.contains(inside),
            "{inside} reaches the phone in:\n{text}"
        );
    }
}

/// The values of every header field `name` of `text`, in order.
fn values(text: &str, name: HeaderName) -> Vec<String> {
    parse(text)
        .headers_named(name)
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .collect()
}

fn value(text: &str, name: HeaderName) -> String {
    values(text, name).into_iter().next().unwrap_or_default()
}

/// Every entry of the `name` fields (Via, Route, Record-Route), in order.
fn entries(text: &str, name: HeaderName) -> Vec<String> {
    values(text, name)
        .iter()
        .flat_map(|v| split_list(v.as_bytes()).map(|e| String::from_utf8_lossy(e).into_owned()))
        .collect()
}

/// The URI of a name-addr.
fn uri(name_addr: &str) -> String {
    let parsed = NameAddr::parse(name_addr.as_bytes(), usize::MAX).expect("name-addr");
    String::from_utf8_lossy(parsed.uri.raw).into_owned()
}

fn request_uri(text: &str) -> String {
    String::from_utf8_lossy(parse(text).request_line().expect("a request").uri).into_owned()
}

/// A UAS's answer to `request`: its Vias, Record-Routes, From, To (with `to_tag`),
/// Call-ID and CSeq, then `extra` header lines.
fn answer(request: &str, status: &str, to_tag: &str, extra: &str) -> String {
    let msg = parse(request);
    let mut text = format!("SIP/2.0 {status}\r\n");
    for header in msg.headers() {
        let value = String::from_utf8_lossy(header.value);
        match header.name {
            HeaderName::Via
            | HeaderName::RecordRoute
            | HeaderName::From
            | HeaderName::CallId
            | HeaderName::CSeq => {
                text += &format!("{}: {value}\r\n", header.name.canonical());
            }
            HeaderName::To if value.contains("tag=") => text += &format!("To: {value}\r\n"),
            HeaderName::To => text += &format!("To: {value};tag={to_tag}\r\n"),
            _ => {}
        }
    }
    text + extra + "Content-Length: 0\r\n\r\n"
}

/// A request inside a dialog.
struct Dialog {
    target: String,
    route: Vec<String>,
    local: String,
    remote: String,
    call_id: String,
}

impl Dialog {
    /// The dialog of the UAS that received `request` and answered with `to_tag`.
    fn uas(request: &str, to_tag: &str) -> Dialog {
        Dialog {
            target: uri(&value(request, HeaderName::Contact)),
            route: entries(request, HeaderName::RecordRoute),
            local: format!("{};tag={to_tag}", value(request, HeaderName::To)),
            remote: value(request, HeaderName::From),
            call_id: value(request, HeaderName::CallId),
        }
    }

    /// The dialog of the UAC that received `response` (a 1xx/2xx with a To tag).
    fn uac(response: &str) -> Dialog {
        let mut route = entries(response, HeaderName::RecordRoute);
        route.reverse();
        Dialog {
            target: uri(&value(response, HeaderName::Contact)),
            route,
            local: value(response, HeaderName::From),
            remote: value(response, HeaderName::To),
            call_id: value(response, HeaderName::CallId),
        }
    }

    fn request(&self, method: &str, cseq: u32, via: &str, extra: &str) -> String {
        let mut text = format!(
            "{method} {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n",
            self.target
        );
        if !self.route.is_empty() {
            text += &format!("Route: {}\r\n", self.route.join(", "));
        }
        text += &format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n",
            self.local, self.remote, self.call_id
        );
        text
    }
}

/// Registers a phone (Contact 192.168.1.5:5062) through the edge; returns the Contact
/// the registrar stores.
fn register(lab: &mut Lab, phone: Flow, user: &str) -> String {
    let transport = phone.transport.as_via();
    let register = format!(
        "REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/{transport} 192.168.1.5:5062;branch=z9hG4bKreg{user};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@pbx.example.com>;tag=r{user}\r\n\
To: <sip:{user}@pbx.example.com>\r\nCall-ID: reg-{user}@192.168.1.5\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:{user}@192.168.1.5:5062>;expires=3600\r\nContent-Length: 0\r\n\r\n"
    );
    let forwarded = lab.up(&register, phone);
    uri(&value(&forwarded, HeaderName::Contact))
}

/// An INVITE the upstream sends on its own (a PBX calling a phone): its own Call-ID,
/// internal addresses everywhere, product headers.
fn invite_from_upstream(target: &str, call_id: &str) -> String {
    format!(
        "INVITE {target} SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKpbx1;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKapp1, SIP/2.0/TCP pbx.internal;branch=z9hG4bKapp0\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:10.0.0.2:5080;lr;ftag=p1>\r\n\
From: \"Reception\" <sip:1000@10.0.0.2>;tag=p1\r\n\
To: <sip:bob@pbx.internal>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:1000@10.0.0.2:5080;transport=udp>\r\n\
Server: Asterisk PBX 20.5.0\r\n\
User-Agent: Asterisk PBX 20.5.0\r\n\
Warning: 399 10.0.0.2 \"debug\"\r\n\
X-Internal-Node: node-3\r\n\
Content-Length: 0\r\n\r\n"
    )
}

const PBX_CALL_ID: &str = "pbx-call-1@10.0.0.2";

/// A call from the upstream to phone B, answered 200: the INVITE as B got it, its 200 as
/// the upstream got it.
fn upstream_call(lab: &mut Lab) -> (String, String) {
    let contact = register(lab, phone_b(), "bob");
    let invite = lab.down(&invite_from_upstream(&contact, PBX_CALL_ID), phone_b());
    let ok = answer(
        &invite,
        "200 OK",
        "b7",
        "Contact: <sip:bob@192.168.1.5:5062;transport=tcp>\r\n",
    );
    let ok_up = lab.up(&ok, phone_b());
    (invite, ok_up)
}

#[test]
fn a_call_from_the_upstream_reaches_the_phone_with_nothing_of_the_inside() {
    let mut lab = Lab::new();
    let contact = register(&mut lab, phone_b(), "bob");
    let original = invite_from_upstream(&contact, PBX_CALL_ID);
    let invite = lab.down(&original, phone_b());
    // One Via, the edge's public one, with the stack sealed in it.
    let vias = entries(&invite, HeaderName::Via);
    assert_eq!(vias.len(), 1);
    assert!(vias[0].starts_with("SIP/2.0/TCP 203.0.113.1:5060;branch=z9hG4bK"));
    assert!(vias[0].contains(";swv="));
    // Record-Route: the edge's public entry, then one masked entry for the inner entry
    // and the upstream's.
    let routes = entries(&invite, HeaderName::RecordRoute);
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(routes[0], "<sip:203.0.113.1:5060;transport=tcp;lr>");
    assert!(routes[1].starts_with("<sip:203.0.113.1:5060;transport=tcp;lr;swr="));
    // The upstream's Contact, From and To point at the edge; the Call-ID is masked.
    assert!(uri(&value(&invite, HeaderName::Contact)).starts_with("sip:1000@203.0.113.1:5060"));
    assert!(value(&invite, HeaderName::From).starts_with("\"Reception\" <sip:1000@203.0.113.1"));
    assert!(value(&invite, HeaderName::To).starts_with("<sip:bob@203.0.113.1"));
    assert!(value(&invite, HeaderName::CallId).starts_with("swcid-"));

    // Provisional and final answers come back with all of it restored.
    for status in [
        "100 Trying",
        "180 Ringing",
        "183 Session Progress",
        "200 OK",
    ] {
        let contact = if status.starts_with("100") {
            ""
        } else {
            "Contact: <sip:bob@192.168.1.5:5062;transport=tcp>\r\n"
        };
        let response = answer(&invite, status, "b7", contact);
        let up = lab.up(&response, phone_b());
        assert_eq!(
            values(&up, HeaderName::Via),
            values(&original, HeaderName::Via),
            "{status}"
        );
        assert_eq!(value(&up, HeaderName::CallId), PBX_CALL_ID);
        assert_eq!(
            value(&up, HeaderName::From),
            value(&original, HeaderName::From)
        );
        assert_eq!(value(&up, HeaderName::To), "<sip:bob@pbx.internal>;tag=b7");
        let restored = entries(&up, HeaderName::RecordRoute);
        assert_eq!(restored.len(), 3, "{restored:?}");
        assert_eq!(restored[0], "<sip:203.0.113.1:5060;transport=tcp;lr>");
        assert!(restored[1].starts_with("<sip:10.0.0.1:5070;lr;swk="));
        assert_eq!(restored[2], "<sip:10.0.0.2:5080;lr;ftag=p1>");
        // The phone's own Contact is masked toward the upstream, as always.
        if !contact.is_empty() {
            assert!(uri(&value(&up, HeaderName::Contact)).contains("@10.0.0.1:5070;swc="));
        }
    }
}

#[test]
fn in_dialog_requests_of_an_upstream_call_go_both_ways_and_keep_one_call_id() {
    let mut lab = Lab::new();
    let (invite, ok_up) = upstream_call(&mut lab);
    let masked_call_id = value(&invite, HeaderName::CallId);

    // The upstream, the UAC, sends the ACK, then a re-INVITE, a NOTIFY and a BYE of its
    // own, through its route set.
    let mut pbx = Dialog::uac(&ok_up);
    // Its route set, without the entry the upstream record-routed itself.
    pbx.route.retain(|entry| !entry.contains("10.0.0.2"));
    assert_eq!(pbx.route.len(), 2, "{:?}", pbx.route);
    for (method, cseq) in [("ACK", 10), ("INVITE", 11), ("NOTIFY", 12), ("BYE", 13)] {
        let request = pbx.request(
            method,
            cseq,
            &format!("SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKpbx{cseq}"),
            "Server: Asterisk PBX\r\nContact: <sip:1000@10.0.0.2:5080>\r\n",
        );
        let down = lab.down(&request, phone_b());
        assert_eq!(value(&down, HeaderName::CallId), masked_call_id, "{method}");
        assert_eq!(request_uri(&down), "sip:bob@192.168.1.5:5062;transport=tcp");
        assert!(values(&down, HeaderName::Route).is_empty(), "{down}");
        if method != "ACK" {
            // The phone answers; the upstream gets its transaction back.
            let up = lab.up(&answer(&down, "200 OK", "b7", ""), phone_b());
            assert_eq!(value(&up, HeaderName::CallId), PBX_CALL_ID);
            assert_eq!(
                entries(&up, HeaderName::Via),
                [format!("SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKpbx{cseq}")]
            );
        }
    }

    // The phone's own requests in the dialog (it is the UAS: route set in order).
    let phone = Dialog::uas(&invite, "b7");
    for (method, cseq) in [("INFO", 1), ("UPDATE", 2), ("BYE", 3)] {
        let request = phone.request(
            method,
            cseq,
            &format!("SIP/2.0/TCP 192.168.1.5:5062;branch=z9hG4bKb{cseq}"),
            "",
        );
        let up = lab.up(&request, phone_b());
        assert_eq!(value(&up, HeaderName::CallId), PBX_CALL_ID, "{method}");
        assert_eq!(request_uri(&up), "sip:1000@10.0.0.2:5080;transport=udp");
        assert_eq!(
            entries(&up, HeaderName::Route),
            ["<sip:10.0.0.2:5080;lr;ftag=p1>"]
        );
        assert_eq!(
            value(&up, HeaderName::To),
            "\"Reception\" <sip:1000@10.0.0.2>;tag=p1"
        );
        // The upstream's answer shows the phone its own Call-ID mask again.
        let response = answer(&up, "200 OK", "p1", "Server: Asterisk PBX\r\n");
        let down = lab.down(&response, phone_b());
        assert_eq!(value(&down, HeaderName::CallId), masked_call_id);
    }
}

#[test]
fn a_call_from_the_phone_keeps_its_call_id_and_hides_the_upstreams_answers() {
    let mut lab = Lab::new();
    let invite = "INVITE sip:1000@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKa1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@pbx.example.com>;tag=a1\r\n\
To: <sip:1000@pbx.example.com>\r\nCall-ID: alice-call-1@192.168.1.5\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.168.1.5:5062>\r\nSupported: 100rel\r\nContent-Length: 0\r\n\r\n";
    let forwarded = lab.up(invite, phone_a());
    // The upstream, a proxy, record-routes on top of the edge's two entries.
    let mut proxied = forwarded.replacen(
        "Record-Route:",
        "Record-Route: <sip:10.0.0.2:5080;lr>\r\nRecord-Route:",
        1,
    );
    proxied = proxied.replacen(
        "Via:",
        "Via: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKprx\r\nVia:",
        1,
    );
    let contact = "Contact: <sip:1000@10.0.0.9:5060>\r\nServer: kamailio (5.6)\r\n";
    let mut answers = Vec::new();
    for (status, extra) in [
        ("100 Trying", String::new()),
        ("180 Ringing", contact.to_owned()),
        (
            "183 Session Progress",
            format!("{contact}Require: 100rel\r\nRSeq: 1\r\n"),
        ),
        ("200 OK", contact.to_owned()),
    ] {
        let response = answer(&proxied, status, "u9", &extra);
        // The proxy pops its own Via before the response reaches the edge.
        let response = response.replacen(
            "Via: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKprx\r\n",
            "",
            1,
        );
        let down = lab.down(&response, phone_a());
        assert_eq!(value(&down, HeaderName::CallId), "alice-call-1@192.168.1.5");
        assert_eq!(
            entries(&down, HeaderName::Via),
            ["SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKa1;rport=40000;received=198.51.100.7"]
        );
        answers.push(down);
    }
    let ok = answers.pop().expect("the 200");
    let routes = entries(&ok, HeaderName::RecordRoute);
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(routes[0].starts_with("<sip:203.0.113.1:5060;lr;swr="));
    assert_eq!(routes[1], "<sip:203.0.113.1:5060;lr>");

    // PRACK for the 183, then ACK and BYE: through the route set, reversed (UAC).
    let early = Dialog::uac(&answers[2]);
    let prack = early.request(
        "PRACK",
        2,
        "SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKa2",
        "RAck: 1 1 INVITE\r\n",
    );
    let up = lab.up(&prack, phone_a());
    assert_eq!(request_uri(&up), "sip:1000@10.0.0.9:5060");
    assert_eq!(entries(&up, HeaderName::Route), ["<sip:10.0.0.2:5080;lr>"]);
    let dialog = Dialog::uac(&ok);
    for (method, cseq) in [("ACK", 1), ("BYE", 3)] {
        let via = format!("SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKa{cseq}{method}");
        let up = lab.up(&dialog.request(method, cseq, &via, ""), phone_a());
        assert_eq!(value(&up, HeaderName::CallId), "alice-call-1@192.168.1.5");
        assert_eq!(request_uri(&up), "sip:1000@10.0.0.9:5060");
        assert_eq!(entries(&up, HeaderName::Route), ["<sip:10.0.0.2:5080;lr>"]);
    }

    // The callee hangs up: the upstream's BYE reaches the phone with the phone's own
    // Call-ID (the dialog is the phone's), through the edge's inner entry.
    let callee = Dialog::uas(&proxied, "u9");
    let mut bye = callee.request("BYE", 20, "SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKbye", "");
    // The proxy consumed its own entry.
    bye = bye.replacen("<sip:10.0.0.2:5080;lr>, ", "", 1);
    let down = lab.down(&bye, phone_a());
    assert_eq!(value(&down, HeaderName::CallId), "alice-call-1@192.168.1.5");
    assert_eq!(request_uri(&down), "sip:alice@192.168.1.5:5062");
}

#[test]
fn forked_answers_each_get_their_own_masked_target() {
    let mut lab = Lab::new();
    let invite = "INVITE sip:1000@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKf1;rport\r\nMax-Forwards: 70\r\n\
From: <sip:alice@pbx.example.com>;tag=a1\r\nTo: <sip:1000@pbx.example.com>\r\n\
Call-ID: fork-1@192.168.1.5\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.168.1.5:5062>\r\n\
Content-Length: 0\r\n\r\n";
    let forwarded = lab.up(invite, phone_a());
    let mut targets = Vec::new();
    for (tag, device) in [("d1", "10.0.0.21"), ("d2", "10.0.0.22")] {
        let extra = format!("Contact: <sip:1000@{device}:5060>\r\n");
        let down = lab.down(&answer(&forwarded, "180 Ringing", tag, &extra), phone_a());
        assert!(value(&down, HeaderName::To).ends_with(&format!(";tag={tag}")));
        targets.push(Dialog::uac(&down));
    }
    assert_ne!(targets[0].target, targets[1].target);
    for (dialog, device) in targets.iter().zip(["10.0.0.21", "10.0.0.22"]) {
        let bye = dialog.request(
            "BYE",
            2,
            "SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKf2",
            "",
        );
        let up = lab.up(&bye, phone_a());
        assert_eq!(request_uri(&up), format!("sip:1000@{device}:5060"));
    }
}

#[test]
fn a_redirect_target_is_masked_and_followed_through_the_edge() {
    let mut lab = Lab::new();
    let invite = "INVITE sip:1000@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKr1;rport\r\nMax-Forwards: 70\r\n\
From: <sip:alice@pbx.example.com>;tag=a1\r\nTo: <sip:1000@pbx.example.com>\r\n\
Call-ID: redirect-1@192.168.1.5\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.168.1.5:5062>\r\n\
Content-Length: 0\r\n\r\n";
    let forwarded = lab.up(invite, phone_a());
    let moved = answer(
        &forwarded,
        "302 Moved Temporarily",
        "u1",
        "Contact: <sip:1001@10.0.0.30:5060>;q=0.9, <sip:1002@pbx.internal>\r\n",
    );
    let down = lab.down(&moved, phone_a());
    let contacts = entries(&down, HeaderName::Contact);
    assert_eq!(contacts.len(), 2);
    // The phone follows the first target with a new Call-ID (the masks of a redirect
    // are not bound to the call).
    let target = uri(&contacts[0]);
    assert!(target.contains(";swd="), "{target}");
    assert!(contacts[0].ends_with(";q=0.9"));
    let follow = format!(
        "INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKr2;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@pbx.example.com>;tag=a2\r\nTo: <sip:1000@pbx.example.com>\r\n\
Call-ID: redirect-2@192.168.1.5\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.168.1.5:5062>\r\n\
Content-Length: 0\r\n\r\n"
    );
    let up = lab.up(&follow, phone_a());
    assert_eq!(request_uri(&up), "sip:1001@10.0.0.30:5060");
}

#[test]
fn cancel_and_the_ack_of_a_failure_from_the_upstream_match_its_invite() {
    let mut lab = Lab::new();
    let contact = register(&mut lab, phone_b(), "bob");
    let original = invite_from_upstream(&contact, PBX_CALL_ID);
    let invite = lab.down(&original, phone_b());
    let branch = |text: &str| {
        let via = entries(text, HeaderName::Via).remove(0);
        via.split(';')
            .find_map(|p| p.strip_prefix("branch=").map(str::to_owned))
            .expect("branch")
    };
    // The upstream's CANCEL: its Via only, no Record-Route, same branch.
    let cancel = format!(
        "CANCEL {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKpbx1;rport\r\n\
Max-Forwards: 70\r\nFrom: \"Reception\" <sip:1000@10.0.0.2>;tag=p1\r\nTo: <sip:bob@pbx.internal>\r\n\
Call-ID: {PBX_CALL_ID}\r\nCSeq: 10 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let cancel_down = lab.down(&cancel, phone_b());
    assert_eq!(branch(&cancel_down), branch(&invite));
    assert_eq!(
        value(&cancel_down, HeaderName::CallId),
        value(&invite, HeaderName::CallId)
    );
    // The phone answers 487 to the INVITE; the upstream acknowledges it.
    let failed = lab.up(
        &answer(&invite, "487 Request Terminated", "b8", ""),
        phone_b(),
    );
    assert_eq!(value(&failed, HeaderName::CallId), PBX_CALL_ID);
    let ack = format!(
        "ACK {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKpbx1;rport\r\n\
Max-Forwards: 70\r\nFrom: \"Reception\" <sip:1000@10.0.0.2>;tag=p1\r\n\
To: <sip:bob@pbx.internal>;tag=b8\r\nCall-ID: {PBX_CALL_ID}\r\nCSeq: 10 ACK\r\n\
Content-Length: 0\r\n\r\n"
    );
    let ack_down = lab.down(&ack, phone_b());
    assert_eq!(branch(&ack_down), branch(&invite));
    assert_eq!(
        value(&ack_down, HeaderName::CallId),
        value(&invite, HeaderName::CallId)
    );
}

#[test]
fn two_edges_with_one_key_restore_each_others_masks() {
    let mut first = Lab::new();
    let (invite, _) = upstream_call(&mut first);
    // A second edge behind the same public address, with its own inner address.
    let mut second = Lab::with(config(KEY, None, "10.0.0.4:5070"));
    let response = answer(
        &invite,
        "200 OK",
        "b7",
        "Contact: <sip:bob@192.168.1.5:5062>\r\n",
    );
    let up = second.up(&response, phone_b());
    assert_eq!(value(&up, HeaderName::CallId), PBX_CALL_ID);
    assert_eq!(
        entries(&up, HeaderName::Via)[0],
        "SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKpbx1;rport"
    );
    let phone = Dialog::uas(&invite, "b7");
    let bye = phone.request(
        "BYE",
        5,
        "SIP/2.0/TCP 192.168.1.5:5062;branch=z9hG4bKb5",
        "",
    );
    let up = second.up(&bye, phone_b());
    assert_eq!(request_uri(&up), "sip:1000@10.0.0.2:5080;transport=udp");
    assert_eq!(value(&up, HeaderName::CallId), PBX_CALL_ID);
}

#[test]
fn a_key_rotation_keeps_live_dialogs_working() {
    let mut before = Lab::new();
    let (invite, ok_up) = upstream_call(&mut before);
    let masked_call_id = value(&invite, HeaderName::CallId);
    // The key rotates: the old one is now the previous key.
    let mut after = Lab::with(config(NEW_KEY, Some(KEY), "10.0.0.1:5070"));
    let phone = Dialog::uas(&invite, "b7");
    let bye = phone.request(
        "BYE",
        5,
        "SIP/2.0/TCP 192.168.1.5:5062;branch=z9hG4bKb5",
        "",
    );
    let up = after.up(&bye, phone_b());
    assert_eq!(value(&up, HeaderName::CallId), PBX_CALL_ID);
    // The upstream's answer and its own requests show the phone the same Call-ID.
    let down = after.down(&answer(&up, "200 OK", "p1", ""), phone_b());
    assert_eq!(value(&down, HeaderName::CallId), masked_call_id);
    let mut pbx = Dialog::uac(&ok_up);
    pbx.route.retain(|entry| !entry.contains("10.0.0.2"));
    let reinvite = pbx.request(
        "INVITE",
        11,
        "SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKre",
        "",
    );
    let down = after.down(&reinvite, phone_b());
    assert_eq!(value(&down, HeaderName::CallId), masked_call_id);
    // A new call gets a mask of the new key.
    let contact = register(&mut after, phone_b(), "bob");
    let new_call = after.down(&invite_from_upstream(&contact, PBX_CALL_ID), phone_b());
    assert_ne!(value(&new_call, HeaderName::CallId), masked_call_id);
}

#[test]
fn forged_truncated_or_replayed_masks_are_refused_and_counted() {
    let mut lab = Lab::new();
    let (invite, _) = upstream_call(&mut lab);
    let phone = Dialog::uas(&invite, "b7");
    let bye = phone.request(
        "BYE",
        5,
        "SIP/2.0/TCP 192.168.1.5:5062;branch=z9hG4bKb5",
        "",
    );
    let masked_call_id = value(&invite, HeaderName::CallId);

    // A forged Call-ID mask: 481, nothing goes up.
    let forged = bye.replace(&masked_call_id, "swcid-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let out = lab.send(&forged, Side::Public, phone_b());
    assert_eq!(out.to, None);
    assert!(out.text.starts_with("SIP/2.0 481 "), "{}", out.text);
    assert_eq!(lab.bad_tokens(), 1);

    // A truncated Route mask: 403.
    let route = phone.route[1].clone();
    let cut = route.replacen(";swr=", ";swr=x", 1);
    let out = lab.send(&bye.replace(&route, &cut), Side::Public, phone_b());
    assert!(out.text.starts_with("SIP/2.0 403 "), "{}", out.text);
    assert_eq!(lab.bad_tokens(), 2);

    // Masks of this dialog replayed in another call: refused, they are bound to it.
    let replayed = bye.replace(&masked_call_id, "another-call@198.51.100.8");
    let out = lab.send(&replayed, Side::Public, phone_b());
    assert!(out.text.starts_with("SIP/2.0 403 "), "{}", out.text);
    assert_eq!(lab.bad_tokens(), 3);

    // A response whose hidden Via stack belongs to another transaction.
    let response =
        answer(&invite, "200 OK", "b7", "").replace("CSeq: 10 INVITE", "CSeq: 99 INVITE");
    let out = lab.send(&response, Side::Public, phone_b());
    assert_eq!(out.dropped, Some(DropReason::BadToken));
    assert_eq!(lab.bad_tokens(), 4);

    // An ACK with a forged mask is dropped, never answered.
    let ack = phone
        .request(
            "ACK",
            10,
            "SIP/2.0/TCP 192.168.1.5:5062;branch=z9hG4bKb6",
            "",
        )
        .replace(&masked_call_id, "swcid-BBBB");
    let out = lab.send(&ack, Side::Public, phone_b());
    assert_eq!(out.dropped, Some(DropReason::BadToken));
    assert_eq!(lab.bad_tokens(), 5);

    // The genuine BYE still works.
    let up = lab.up(&bye, phone_b());
    assert_eq!(value(&up, HeaderName::CallId), PBX_CALL_ID);
}

#[test]
fn product_headers_are_rewritten_when_configured() {
    let mut config = config(KEY, None, "10.0.0.1:5070");
    config.topology.server = Some("edge".into());
    let mut lab = Lab::with(config);
    let contact = register(&mut lab, phone_b(), "bob");
    let out = lab.send(
        &invite_from_upstream(&contact, PBX_CALL_ID),
        Side::Inner,
        upstream(),
    );
    assert_eq!(values(&out.text, HeaderName::UserAgent), ["edge"]);
    assert!(values(&out.text, HeaderName::Server).is_empty());
    assert!(values(&out.text, HeaderName::Warning).is_empty());
    assert!(!out.text.contains("X-Internal-Node"));
}

#[test]
fn a_register_answer_shows_the_phone_its_own_contact_and_masks_the_others() {
    let mut lab = Lab::new();
    let register = "REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKreg;rport\r\nMax-Forwards: 70\r\n\
From: <sip:alice@pbx.example.com>;tag=r1\r\nTo: <sip:alice@pbx.example.com>\r\n\
Call-ID: reg@192.168.1.5\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.168.1.5:5062>;expires=3600\r\nContent-Length: 0\r\n\r\n";
    let forwarded = lab.up(register, phone_a());
    let stored = value(&forwarded, HeaderName::Contact);
    // The registrar lists the phone's binding and one made inside.
    let extra = format!(
        "Contact: {stored}, <sip:alice@10.0.0.40:5060>;expires=60\r\nServer: kamailio\r\n\
Path: <sip:10.0.0.2:5080;lr>\r\nService-Route: <sip:orig@10.0.0.2:5080;lr>\r\n"
    );
    let down = lab.down(&answer(&forwarded, "200 OK", "reg", &extra), phone_a());
    let contacts = entries(&down, HeaderName::Contact);
    assert_eq!(contacts[0], "<sip:alice@192.168.1.5:5062>;expires=3600");
    assert!(contacts[1].starts_with("<sip:alice@203.0.113.1:5060;swu="));
}

#[test]
fn with_hiding_off_only_the_headers_are_scrubbed() {
    let mut config = config(KEY, None, "10.0.0.1:5070");
    config.topology.hide = false;
    let mut lab = Lab::with(config);
    let contact = register(&mut lab, phone_b(), "bob");
    let out = lab.send(
        &invite_from_upstream(&contact, PBX_CALL_ID),
        Side::Inner,
        upstream(),
    );
    assert_eq!(value(&out.text, HeaderName::CallId), PBX_CALL_ID);
    assert_eq!(entries(&out.text, HeaderName::Via).len(), 4);
    assert!(values(&out.text, HeaderName::Server).is_empty());
    assert!(values(&out.text, HeaderName::Warning).is_empty());
    assert!(!out.text.contains("X-Internal-Node"));
}

#[test]
fn only_the_upstream_speaks_on_the_inner_side() {
    let mut lab = Lab::new();
    let contact = register(&mut lab, phone_b(), "bob");
    let stranger = Flow {
        remote: addr("10.0.0.66:5080"),
        ..upstream()
    };
    let out = lab.send(
        &invite_from_upstream(&contact, PBX_CALL_ID),
        Side::Inner,
        stranger,
    );
    assert_eq!(out.dropped, Some(DropReason::NotUpstream));
}

/// Where the masks of `text` are: the base64 runs after `swcid-`, `swr=`, `swu=`.
fn mask_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    for prefix in ["swcid-", "swr=", "swu="] {
        for (at, _) in text.match_indices(prefix) {
            let start = at + prefix.len();
            let len = text[start..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                .count();
            spans.push(start..start + len);
        }
    }
    spans
}

proptest::proptest! {
    /// Any change to a mask in a phone's request (a byte replaced, the token cut) is
    /// refused: nothing of it is decoded and sent inward.
    #[test]
    fn a_changed_mask_never_goes_inward(
        which in 0usize..16,
        offset in 0usize..200,
        replacement in proptest::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
        ),
        cut in proptest::bool::ANY,
    ) {
        let mut lab = Lab::new();
        let (invite, _) = upstream_call(&mut lab);
        let phone = Dialog::uas(&invite, "b7");
        let bye = phone.request("BYE", 5, "SIP/2.0/TCP 192.168.1.5:5062;branch=z9hG4bKb5", "");
        let spans = mask_spans(&bye);
        proptest::prop_assert!(spans.len() >= 3);
        let span = spans[which % spans.len()].clone();
        let at = span.start + offset % span.len();
        let mut bytes = bye.clone().into_bytes();
        if cut {
            bytes.drain(at..span.end);
        } else {
            bytes[at] = replacement;
        }
        let changed = String::from_utf8(bytes).expect("ASCII");
        proptest::prop_assume!(changed != bye);
        let out = lab.send(&changed, Side::Public, phone_b());
        proptest::prop_assert_ne!(out.to, Some(Target::Upstream), "{}", out.text);
        proptest::prop_assert!(lab.bad_tokens() >= 1);
    }
}
