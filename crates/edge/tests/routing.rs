//! The edge's routing decisions, message by message: a phone behind NAT registers, is
//! called by the upstream, answers; the edge's own answers; tokens that do not open.
//!
//! Each test plays both sides by hand: it feeds the edge a message as the phone or the
//! upstream would send it, checks the action, and builds the peer's reply from what the
//! edge forwarded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sipwall_edge::{
    Action, DropReason, Edge, EdgeConfig, Flow, Inbound, SharedPolicy, Side, Target, Transport,
};
use sipwall_sip::{Contact, Framing, HeaderName, Limits, Message, Rport};

const KEY: [u8; 32] = [7; 32];
const OLD_KEY: [u8; 32] = [9; 32];

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test addresses parse")
}

fn config(key: [u8; 32], previous: Option<[u8; 32]>) -> EdgeConfig {
    EdgeConfig {
        public: vec![
            (Transport::Udp, addr("127.0.0.1:5060")),
            (Transport::Tcp, addr("127.0.0.1:5060")),
        ],
        inner: addr("127.0.0.1:5070"),
        upstream: addr("127.0.0.1:5080"),
        key,
        previous_key: previous,
        limits: Limits::default(),
        topology: Default::default(),
    }
}

/// The security pipeline with its default policy.
fn policy() -> SharedPolicy {
    let config = sipwall_policy::PolicyConfig::default();
    Arc::new(Mutex::new(sipwall_policy::Engine::new(
        &config,
        &[],
        [0; 16],
    )))
}

fn edge() -> Edge {
    Edge::new(config(KEY, None), policy())
}

/// The phone: behind NAT, its messages arrive from 198.51.100.7:40000 though it
/// writes 10.0.0.5:5062 in its Via and Contact.
fn phone(transport: Transport) -> Flow {
    Flow {
        transport,
        remote: addr("198.51.100.7:40000"),
        connection: if transport == Transport::Udp { 0 } else { 17 },
    }
}

fn upstream() -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr("127.0.0.1:5080"),
        connection: 0,
    }
}

fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes, Framing::Datagram, &Limits::default()).expect("edge output parses")
}

/// Runs one message through the edge; returns the action with owned bytes.
fn run(
    edge: &mut Edge,
    bytes: &[u8],
    side: Side,
    flow: Flow,
) -> (Option<Target>, Vec<u8>, Option<DropReason>) {
    let inbound = Inbound {
        bytes,
        side,
        flow,
        now: 0,
    };
    match edge.handle(&inbound) {
        Action::Forward { to, bytes } => (Some(to), bytes.to_vec(), None),
        Action::Reply { bytes } | Action::Tarpit { bytes, .. } => (None, bytes.to_vec(), None),
        Action::Drop(reason) => (None, Vec::new(), Some(reason)),
    }
}

const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKreg1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: reg-1@10.0.0.5\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@10.0.0.5:5062;transport=udp>;expires=3600\r\n\
Content-Length: 0\r\n\r\n";

/// The registrar's 200 OK to a forwarded REGISTER: its Vias and Contact echoed back.
fn register_ok(forwarded: &Message<'_>) -> String {
    let mut text = String::from("SIP/2.0 200 OK\r\n");
    for header in forwarded.headers() {
        let keep = matches!(
            header.name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::Contact
        );
        if keep {
            text += &format!(
                "{}: {}\r\n",
                header.name.canonical(),
                String::from_utf8_lossy(header.value)
            );
        }
    }
    text += "To: <sip:alice@example.com>;tag=reg\r\nContent-Length: 0\r\n\r\n";
    text
}

#[test]
fn register_goes_up_masked_and_its_answer_comes_back_unmasked() {
    let mut edge = edge();
    let (to, forwarded, _) = run(
        &mut edge,
        REGISTER.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(to, Some(Target::Upstream));
    let msg = parse(&forwarded);

    // The edge's Via on top, toward the upstream, with a branch of its own.
    let vias: Vec<_> = msg.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].host_raw, b"127.0.0.1");
    assert_eq!(vias[0].port, Some(5070));
    assert!(vias[0].branch().unwrap().starts_with(b"z9hG4bKsw"));
    assert!(vias[0].params.contains(b"swf"));
    // The phone's Via says where it really is.
    assert_eq!(vias[1].received(), Some("198.51.100.7".parse().unwrap()));
    assert_eq!(vias[1].rport(), Rport::Value(40000));
    assert_eq!(msg.max_forwards(), Some(Ok(69)));

    // The binding points at the edge, the phone's own address is gone.
    let Some(Ok(Contact::Address(contact))) = msg.contacts().next() else {
        panic!("no contact");
    };
    assert_eq!(contact.uri.user, Some(&b"alice"[..]));
    assert_eq!(contact.uri.host_raw, b"127.0.0.1");
    assert_eq!(contact.uri.port, Some(5070));
    assert!(contact.uri.params.contains(b"swc"));
    assert_eq!(contact.params.get(b"expires"), Some(Some(&b"3600"[..])));
    assert!(!String::from_utf8_lossy(&forwarded).contains("10.0.0.5:5062;transport"));

    // A re-REGISTER gives the same masked Contact: the binding is refreshed, not doubled.
    let (_, again, _) = run(
        &mut edge,
        REGISTER.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(again, forwarded);

    // The registrar answers; the phone sees its own Contact again.
    let ok = register_ok(&msg);
    let (to, back, _) = run(&mut edge, ok.as_bytes(), Side::Inner, upstream());
    assert_eq!(to, Some(Target::Peer(phone(Transport::Udp))));
    let back = parse(&back);
    assert_eq!(back.vias().count(), 1);
    let Some(Ok(Contact::Address(contact))) = back.contacts().next() else {
        panic!("no contact");
    };
    assert_eq!(contact.uri.raw, b"sip:alice@10.0.0.5:5062;transport=udp");
    assert_eq!(contact.params.get(b"expires"), Some(Some(&b"3600"[..])));
}

/// The masked Contact the registrar stored for the phone.
fn registered_contact(edge: &mut Edge, transport: Transport) -> String {
    let (_, forwarded, _) = run(edge, REGISTER.as_bytes(), Side::Public, phone(transport));
    let msg = parse(&forwarded);
    let Some(Ok(Contact::Address(contact))) = msg.contacts().next() else {
        panic!("no contact");
    };
    String::from_utf8_lossy(contact.uri.raw).into_owned()
}

fn invite_from_upstream(target: &str) -> String {
    format!(
        "INVITE {target} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKpbx1\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:127.0.0.1:5080;lr>\r\n\
From: <sip:bob@example.com>;tag=b1\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: call-1@pbx\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:bob@127.0.0.1:5080>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n"
    )
}

#[test]
fn the_upstream_reaches_the_phone_through_its_masked_contact() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut edge = edge();
        let target = registered_contact(&mut edge, transport);
        let invite = invite_from_upstream(&target);
        let (to, out, _) = run(&mut edge, invite.as_bytes(), Side::Inner, upstream());
        assert_eq!(to, Some(Target::Peer(phone(transport))));
        let msg = if transport == Transport::Udp {
            parse(&out)
        } else {
            Message::parse(&out, Framing::Stream, &Limits::default()).unwrap()
        };
        // The phone sees its own Contact as the Request-URI.
        assert_eq!(
            msg.request_line().unwrap().uri,
            b"sip:alice@10.0.0.5:5062;transport=udp"
        );
        let top = msg.top_via().unwrap().unwrap();
        assert_eq!(top.transport, transport.as_via().as_bytes());
        assert_eq!(top.port, Some(5060));
        // The edge's public Record-Route entry facing the phone, then its inner entry
        // and the upstream's, masked as one entry naming the public address
        // (tests/topology.rs takes masking apart).
        let routes: Vec<_> = msg
            .record_routes()
            .map(|r| String::from_utf8_lossy(r.unwrap().uri.raw).into_owned())
            .collect();
        let public = if transport == Transport::Udp {
            "sip:127.0.0.1:5060".to_owned()
        } else {
            "sip:127.0.0.1:5060;transport=tcp".to_owned()
        };
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(routes[0], format!("{public};lr"));
        assert!(
            routes[1].starts_with(&format!("{public};lr;swr=")),
            "{routes:?}"
        );
        assert_eq!(msg.body(), b"v=0\n");
    }
}

#[test]
fn the_phones_answer_goes_up_with_its_contact_masked() {
    let mut edge = edge();
    let target = registered_contact(&mut edge, Transport::Udp);
    let invite = invite_from_upstream(&target);
    let (_, to_phone, _) = run(&mut edge, invite.as_bytes(), Side::Inner, upstream());
    let msg = parse(&to_phone);
    // The phone answers 200 OK from its NAT address, echoing Vias and Record-Routes.
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for header in msg.headers() {
        if matches!(
            header.name,
            HeaderName::Via
                | HeaderName::RecordRoute
                | HeaderName::From
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            ok += &format!(
                "{}: {}\r\n",
                header.name.canonical(),
                String::from_utf8_lossy(header.value)
            );
        }
    }
    ok += "To: <sip:alice@example.com>;tag=a9\r\nContact: <sip:alice@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n";
    let (to, up, _) = run(
        &mut edge,
        ok.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(to, Some(Target::Upstream));
    let up = parse(&up);
    let vias: Vec<_> = up.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 1);
    assert_eq!(vias[0].branch(), Some(&b"z9hG4bKpbx1"[..]));
    let Some(Ok(Contact::Address(contact))) = up.contacts().next() else {
        panic!("no contact");
    };
    assert_eq!(contact.uri.port, Some(5070));
    assert!(contact.uri.params.contains(b"swc"));
    assert_eq!(up.record_routes().count(), 3);
}

#[test]
fn retransmissions_cancel_and_non_2xx_ack_get_the_same_branch() {
    let invite = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKinv1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: c2\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n";
    let cancel = invite
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("Contact: <sip:alice@10.0.0.5:5062>\r\n", "");
    // The ACK of a non-2xx final response: same branch from the phone, To tag added.
    let ack = cancel
        .replace("CANCEL sip:", "ACK sip:")
        .replace("CSeq: 1 CANCEL", "CSeq: 1 ACK")
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=busy",
        );
    let mut edge = edge();
    let branch = |edge: &mut Edge, text: &str| {
        let (_, out, _) = run(edge, text.as_bytes(), Side::Public, phone(Transport::Udp));
        let msg = parse(&out);
        msg.top_via().unwrap().unwrap().branch().unwrap().to_vec()
    };
    let first = branch(&mut edge, invite);
    assert_eq!(branch(&mut edge, invite), first);
    assert_eq!(branch(&mut edge, &cancel), first);
    assert_eq!(branch(&mut edge, &ack), first);
    // Another node with the same key computes the same branch.
    assert_eq!(
        branch(&mut Edge::new(config(KEY, None), policy()), invite),
        first
    );
    let other = invite.replace("z9hG4bKinv1", "z9hG4bKinv2");
    assert_ne!(branch(&mut edge, &other), first);
}

#[test]
fn options_to_the_edge_itself_is_answered_locally() {
    let options = "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKopt\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:127.0.0.1:5060>\r\nCall-ID: o1\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let (to, out, _) = run(
        &mut edge(),
        options.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(to, None);
    let reply = parse(&out);
    assert_eq!(reply.status_code(), Some(200));
    assert!(reply.to().unwrap().unwrap().tag().is_some());
    assert_eq!(
        reply.top_via().unwrap().unwrap().branch(),
        Some(&b"z9hG4bKopt"[..])
    );
    // OPTIONS to someone else goes up.
    let elsewhere = options.replace("OPTIONS sip:127.0.0.1:5060", "OPTIONS sip:bob@example.com");
    let (to, _, _) = run(
        &mut edge(),
        elsewhere.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(to, Some(Target::Upstream));
}

#[test]
fn insane_requests_are_answered_and_insane_responses_dropped() {
    let zero = REGISTER.replace("Max-Forwards: 70", "Max-Forwards: 0");
    let (to, out, _) = run(
        &mut edge(),
        zero.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(to, None);
    assert_eq!(parse(&out).status_code(), Some(483));
    let ack = zero
        .replace("REGISTER sip:", "ACK sip:")
        .replace("1 REGISTER", "1 ACK");
    let (_, _, dropped) = run(
        &mut edge(),
        ack.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert!(matches!(dropped, Some(DropReason::Insane(_))));
    let (_, _, dropped) = run(
        &mut edge(),
        b"garbage\r\n\r\n",
        Side::Public,
        phone(Transport::Udp),
    );
    assert!(matches!(dropped, Some(DropReason::Malformed(_))));
}

#[test]
fn forged_or_missing_tokens_route_nowhere() {
    let mut edge = edge();
    let target = registered_contact(&mut edge, Transport::Udp);
    // A flipped character in the token.
    let at = target.find("swc=").unwrap() + 6;
    let mut forged = target.clone().into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (to, out, _) = run(
        &mut edge,
        invite_from_upstream(&forged).as_bytes(),
        Side::Inner,
        upstream(),
    );
    assert_eq!(to, None);
    assert_eq!(parse(&out).status_code(), Some(403));
    let (to, out, _) = run(
        &mut edge,
        invite_from_upstream("sip:alice@127.0.0.1:5070").as_bytes(),
        Side::Inner,
        upstream(),
    );
    assert_eq!(to, None);
    assert_eq!(parse(&out).status_code(), Some(404));

    // A response whose edge Via carries a forged flow token is dropped.
    let (_, forwarded, _) = run(
        &mut edge,
        REGISTER.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    let ok = register_ok(&parse(&forwarded));
    let at = ok.find("swf=").unwrap() + 6;
    let mut bad = ok.clone().into_bytes();
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    let (_, _, dropped) = run(&mut edge, &bad, Side::Inner, upstream());
    assert_eq!(dropped, Some(DropReason::BadToken));
    // A response that never went through the edge is not routed.
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let (_, _, dropped) = run(&mut edge, stray.as_bytes(), Side::Inner, upstream());
    assert_eq!(dropped, Some(DropReason::NotOurs));
    let (_, _, dropped) = run(
        &mut edge,
        stray.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(dropped, Some(DropReason::NotOurs));
}

#[test]
fn tokens_of_the_previous_key_open_during_a_rotation() {
    let mut old = Edge::new(config(OLD_KEY, None), policy());
    let target = registered_contact(&mut old, Transport::Udp);
    let invite = invite_from_upstream(&target);
    let mut rotated = Edge::new(config(KEY, Some(OLD_KEY)), policy());
    let (to, _, _) = run(&mut rotated, invite.as_bytes(), Side::Inner, upstream());
    assert_eq!(to, Some(Target::Peer(phone(Transport::Udp))));
    let (to, out, _) = run(&mut edge(), invite.as_bytes(), Side::Inner, upstream());
    assert_eq!(to, None);
    assert_eq!(parse(&out).status_code(), Some(403));
}

#[test]
fn in_dialog_requests_consume_the_edges_routes() {
    let bye = "BYE sip:bob@127.0.0.1:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\n\
Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5070;lr>\r\nRoute: <sip:127.0.0.1:5080;lr>\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\nCall-ID: c3\r\n\
CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    let (to, out, _) = run(
        &mut edge(),
        bye.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(
        to,
        Some(Target::Upstream),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let msg = parse(&out);
    let routes: Vec<_> = msg
        .routes()
        .map(|r| String::from_utf8_lossy(r.unwrap().uri.raw).into_owned())
        .collect();
    assert_eq!(routes, ["sip:127.0.0.1:5080;lr"]);
    // No Record-Route inside a dialog.
    assert_eq!(msg.record_routes().count(), 0);
}

#[test]
fn a_request_that_already_passed_this_edge_is_a_loop() {
    let mut edge = edge();
    let (_, once, _) = run(
        &mut edge,
        REGISTER.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    // The same request comes back from the public side with the edge's Via in it.
    let (to, out, _) = run(&mut edge, &once, Side::Public, phone(Transport::Udp));
    assert_eq!(to, None);
    assert_eq!(parse(&out).status_code(), Some(482));
}

#[test]
fn a_gone_flow_is_answered_430() {
    let mut edge = edge();
    let target = registered_contact(&mut edge, Transport::Tcp);
    let invite = invite_from_upstream(&target);
    let reply = edge
        .flow_failed(invite.as_bytes(), Transport::Udp)
        .unwrap()
        .to_vec();
    assert_eq!(parse(&reply).status_code(), Some(430));
}

/// A REGISTER from the phone through the edge, the registrar's answer with `status` and
/// `extra` headers, and where the edge sends that answer, rewritten.
fn registrar_answers(
    edge: &mut Edge,
    register: &str,
    status: &str,
    extra: &str,
) -> (Option<Target>, Vec<u8>) {
    let (_, forwarded, _) = run(
        edge,
        register.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    let answer = register_answer(&parse(&forwarded), status, extra);
    let (to, back, _) = run(edge, answer.as_bytes(), Side::Inner, upstream());
    (to, back)
}

/// The registrar's answer to a forwarded REGISTER with another status line and
/// `extra` headers.
fn register_answer(forwarded: &Message<'_>, status: &str, extra: &str) -> String {
    register_ok(forwarded)
        .replacen("SIP/2.0 200 OK", &format!("SIP/2.0 {status}"), 1)
        .replacen("Content-Length: 0", &format!("{extra}Content-Length: 0"), 1)
}

#[test]
fn a_404_for_a_missing_user_reaches_the_phone_as_the_registrars_own_challenge() {
    let mut edge = edge();
    // A first REGISTER is challenged: the edge learns what a challenge looks like, and
    // the registrar's Server header stays inside.
    let challenge = "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"Z2hL5mC1n7Vq0bFi3xk8Wd4Eo6Ap9Rt2\", qop=\"auth\"\r\n";
    let (_, back) = registrar_answers(
        &mut edge,
        REGISTER,
        "401 Unauthorized",
        &format!("Server: kamailio (5.8.4 (x86_64/linux))\r\n{challenge}"),
    );
    let text = String::from_utf8(back).unwrap();
    assert!(text.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{text}");
    assert!(!text.contains("kamailio"), "{text}");

    // Another user does not exist: the registrar says so, the phone cannot tell.
    let missing = REGISTER.replace("alice", "zed").replace("reg-1@", "reg-2@");
    let (to, back) = registrar_answers(
        &mut edge,
        &missing,
        "404 Not Found",
        "Server: kamailio\r\nWarning: 399 pbx \"no such user\"\r\n",
    );
    assert_eq!(to, Some(Target::Peer(phone(Transport::Udp))));
    let text = String::from_utf8(back.clone()).unwrap();
    assert!(text.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{text}");
    assert!(
        !text.contains("kamailio") && !text.contains("Warning") && !text.contains("404"),
        "{text}"
    );
    let msg = parse(&back);
    let value = msg.header(HeaderName::WwwAuthenticate).unwrap().value;
    let value = String::from_utf8_lossy(value);
    assert!(
        value.starts_with("Digest realm=\"example.com\", nonce=\""),
        "{value}"
    );
    assert!(
        value.ends_with("\", qop=\"auth\"") && !value.contains("Z2hL5mC1n7Vq0bFi3xk8Wd4Eo6Ap9Rt2")
    );
    assert_eq!(
        value.len(),
        challenge.len() - "WWW-Authenticate: \r\n".len()
    );
}

/// The header names of a message, in order.
fn header_names(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split(':').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_disguised_404_has_the_headers_of_a_real_challenge_in_the_same_order() {
    let mut edge = edge();
    // Kamailio's challenge: the challenge, then Server, then Content-Length last.
    let (_, real) = registrar_answers(
        &mut edge,
        REGISTER,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"awIrvGsCKpDY/Ccvt1LIj+FsERHNBQ5L\", qop=\"auth\"\r\nServer: kamailio\r\n",
    );
    // Its 404 for a user that does not exist: Server, then Content-Length.
    let missing = REGISTER.replace("alice", "zed").replace("reg-1@", "reg-2@");
    let (_, disguised) =
        registrar_answers(&mut edge, &missing, "404 Not Found", "Server: kamailio\r\n");
    assert_eq!(
        header_names(&disguised),
        header_names(&real),
        "{}\n{}",
        String::from_utf8_lossy(&real),
        String::from_utf8_lossy(&disguised)
    );
    assert_eq!(
        header_names(&disguised).last().map(String::as_str),
        Some("Content-Length")
    );

    // The same with a Warning just before Content-Length and a body explaining it.
    let missing = REGISTER.replace("alice", "zoe").replace("reg-1@", "reg-3@");
    let (_, forwarded, _) = run(
        &mut edge,
        missing.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    let answer = register_answer(
        &parse(&forwarded),
        "404 Not Found",
        "Server: kamailio\r\nContent-Type: text/plain\r\nWarning: 399 pbx \"no such user\"\r\n",
    )
    .replacen(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 12\r\n\r\nno such user",
        1,
    );
    let (_, disguised, _) = run(&mut edge, answer.as_bytes(), Side::Inner, upstream());
    let text = String::from_utf8_lossy(&disguised);
    assert!(
        text.contains("WWW-Authenticate: Digest realm=\"example.com\"")
            && text.ends_with("\r\nContent-Length: 0\r\n\r\n")
            && !text.contains("no such user")
            && !text.contains("Content-Type"),
        "{text}"
    );
}

#[test]
fn a_scanner_is_banned_and_then_refused_before_parsing() {
    let mut edge = edge();
    let scan = REGISTER.replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nUser-Agent: friendly-scanner\r\n",
    );
    let (to, _, dropped) = run(
        &mut edge,
        scan.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!((to, dropped), (None, Some(DropReason::Policy)));
    // Even a flawless REGISTER from there is refused now, and so is garbage.
    let (_, _, dropped) = run(
        &mut edge,
        REGISTER.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(dropped, Some(DropReason::Banned));
    let (_, _, dropped) = run(
        &mut edge,
        b"\x00garbage",
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(dropped, Some(DropReason::Banned));
    // The upstream's traffic to other phones is unaffected.
    let (to, _, _) = run(
        &mut edge,
        REGISTER.as_bytes(),
        Side::Public,
        Flow {
            remote: addr("198.51.100.8:5060"),
            ..phone(Transport::Udp)
        },
    );
    assert_eq!(to, Some(Target::Upstream));
}

#[test]
fn three_wrong_passwords_ban_the_phone() {
    let mut edge = edge();
    let with_credentials = REGISTER.replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nAuthorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"n\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\"\r\n",
    );
    for attempt in 1..=3 {
        let (to, forwarded, _) = run(
            &mut edge,
            with_credentials.as_bytes(),
            Side::Public,
            phone(Transport::Udp),
        );
        assert_eq!(to, Some(Target::Upstream), "attempt {attempt} goes up");
        // The user name travels in the edge's Via, so the failure is counted per user.
        let answer = register_answer(&parse(&forwarded), "403 Forbidden", "");
        run(&mut edge, answer.as_bytes(), Side::Inner, upstream());
    }
    let (_, _, dropped) = run(
        &mut edge,
        with_credentials.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(dropped, Some(DropReason::Banned));
}

/// An edge whose pipeline has the policy `toml`.
fn edge_with(toml_text: &str) -> Edge {
    let policy: sipwall_policy::PolicyConfig = toml::from_str(toml_text).expect("policy");
    let engine = sipwall_policy::Engine::new(&policy, &[], [0; 16]);
    Edge::new(config(KEY, None), Arc::new(Mutex::new(engine)))
}

#[test]
fn a_tarpit_answers_late_and_a_honeypot_accepts_everything() {
    let scan = REGISTER.replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nUser-Agent: sipcli/v1.8\r\n",
    );
    let mut edge = edge_with("[rules.scanner_agent]\naction = \"tarpit\"\ncode = 403\n");
    let inbound = Inbound {
        bytes: scan.as_bytes(),
        side: Side::Public,
        flow: phone(Transport::Udp),
        now: 0,
    };
    match edge.handle(&inbound) {
        Action::Tarpit { bytes, delay } => {
            assert!(bytes.starts_with(b"SIP/2.0 403 Forbidden\r\n"));
            assert!(delay >= 1000, "{delay}");
        }
        other => panic!("not tarpitted: {other:?}"),
    }

    let mut edge = edge_with("[rules.scanner_agent]\naction = \"honeypot\"\n");
    let (to, answer, _) = run(
        &mut edge,
        scan.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(to, None, "answered locally, never forwarded");
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("Contact: <sip:alice@10.0.0.5:5062;transport=udp>;expires=3600"),
        "{answer}"
    );
    // From then on the source gets the honeypot, whatever it sends.
    let invite = REGISTER
        .replace("REGISTER sip:example.com", "INVITE sip:bob@example.com")
        .replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE");
    let (to, answer, _) = run(
        &mut edge,
        invite.as_bytes(),
        Side::Public,
        phone(Transport::Udp),
    );
    assert_eq!(to, None);
    assert!(answer.starts_with(b"SIP/2.0 200 OK\r\n"));
}
