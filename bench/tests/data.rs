//! Checks that the benchmark messages are what they claim to be: well-formed SIP that
//! sipwall-sip parses and accepts, framed exactly by Content-Length, with CRLF line ends
//! and the headers each benchmark expects to read.
#![allow(clippy::unwrap_used)]

use sipwall_bench::{INVITE, MESSAGES, OK_RECORD_ROUTE, OPTIONS, REGISTER};
use sipwall_sip::{Contact, Framing, HeaderName, Limits, Message, Method, Rport, Sanity};

fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes, Framing::Datagram, &Limits::default()).unwrap()
}

#[test]
fn every_message_parses_and_passes_sanity() {
    for (name, bytes) in MESSAGES {
        let msg = Message::parse(bytes, Framing::Datagram, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Sanity::new()
            .check(&msg)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Stream framing needs Content-Length, which every message carries.
        Message::parse(bytes, Framing::Stream, &Limits::default())
            .unwrap_or_else(|e| panic!("{name} as a stream: {e}"));
    }
}

#[test]
fn content_length_frames_the_whole_file() {
    for (name, bytes) in MESSAGES {
        let msg = parse(bytes);
        assert_eq!(msg.as_bytes().len(), bytes.len(), "{name}: trailing bytes");
        assert_eq!(
            msg.content_length(),
            Some(msg.body().len()),
            "{name}: Content-Length"
        );
    }
}

#[test]
fn every_line_ends_with_crlf() {
    for (name, bytes) in MESSAGES {
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(bytes[i - 1], b'\r', "{name}: bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(bytes.get(i + 1), Some(&b'\n'), "{name}: bare CR at {i}");
            }
        }
        assert!(bytes.ends_with(b"\r\n"), "{name}: last line");
    }
}

#[test]
fn invite_has_what_a_phone_sends_through_one_proxy() {
    let msg = parse(INVITE);
    assert_eq!(msg.method(), Some(Method::Invite));
    assert!((900..1000).contains(&INVITE.len()), "{}", INVITE.len());
    assert_eq!(msg.vias().count(), 2);
    let phone_via = msg.vias().nth(1).unwrap().unwrap();
    assert_eq!(phone_via.rport(), Rport::Value(40312));
    for name in [
        HeaderName::RecordRoute,
        HeaderName::Contact,
        HeaderName::Allow,
        HeaderName::Supported,
        HeaderName::UserAgent,
        HeaderName::ContentType,
        HeaderName::MaxForwards,
    ] {
        assert!(msg.header(name).is_some(), "{name:?}");
    }
    assert!(
        msg.content_type()
            .unwrap()
            .unwrap()
            .is(b"application", b"sdp")
    );
    let ruri = msg.request_uri().unwrap().unwrap();
    assert_eq!(ruri.user, Some(&b"+12025550123"[..]));
}

#[test]
fn register_carries_complete_digest_credentials() {
    let msg = parse(REGISTER);
    assert_eq!(msg.method(), Some(Method::Register));
    assert_eq!(msg.expires(), Some(Ok(3600)));
    let digest = msg.authorization().unwrap().unwrap().digest.unwrap();
    assert_eq!(digest.username, Some(&b"bob"[..]));
    assert_eq!(digest.realm, Some(&b"example.com"[..]));
    assert_eq!(digest.algorithm, Some(&b"MD5"[..]));
    assert_eq!(digest.qop, Some(&b"auth"[..]));
    assert_eq!(digest.nc, Some(&b"00000001"[..]));
    assert!(digest.nonce.is_some() && digest.cnonce.is_some() && digest.opaque.is_some());
    assert!(digest.uri.is_some() && digest.response.is_some());
    let contacts: Vec<_> = msg.contacts().map(Result::unwrap).collect();
    let [Contact::Address(contact)] = contacts.as_slice() else {
        panic!("one Contact address expected: {contacts:?}");
    };
    assert!(contact.params.contains(b"+sip.instance"));
    assert!(msg.user_agent().is_some());
}

#[test]
fn ok_has_three_vias_and_three_record_routes() {
    let msg = parse(OK_RECORD_ROUTE);
    assert_eq!(msg.status_code(), Some(200));
    assert_eq!(msg.vias().count(), 3);
    assert_eq!(msg.record_routes().count(), 3);
    assert!(msg.record_routes().all(|rr| rr.is_ok()));
    assert_eq!(msg.contacts().count(), 1);
    assert!(msg.to().unwrap().unwrap().tag().is_some());
    assert!(!msg.body().is_empty());
}

#[test]
fn options_is_a_small_keepalive() {
    let msg = parse(OPTIONS);
    assert_eq!(msg.method(), Some(Method::Options));
    assert!(OPTIONS.len() < 400);
    assert!(msg.body().is_empty());
}

#[test]
fn the_other_parsers_read_every_message() {
    for (name, bytes) in MESSAGES {
        rsip::SipMessage::try_from(bytes).unwrap_or_else(|e| panic!("rsip, {name}: {e}"));
        sipx_sip::parse_datagram(
            bytes::Bytes::from_static(bytes),
            &sipx_sip::Limits::datagram(),
        )
        .unwrap_or_else(|e| panic!("sipx, {name}: {e}"));
    }
}
