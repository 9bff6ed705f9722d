//! Fuzz target `parse`: every way of reading a message must survive any input.
//!
//! The first byte of the input chooses where the rest is cut in two for the stream
//! framer; the rest is parsed as a datagram and as a stream message, under the default
//! limits and under tight ones, framed whole and in two chunks, and, when it parses,
//! read through every accessor and sanity. Besides panics, it checks what callers rely
//! on: every slice an accessor returns lies inside the message (the editor addresses
//! edits by those slices), Stream and Datagram framing agree, the framer's frames parse
//! and do not depend on how the stream was cut, and sanity reports the error of the
//! first check that fails on its own.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipwall_sip::{
    Check, Contact, DigestFields, Frame, Framing, HeaderName, Limits, Message, NameAddr, Params,
    ParseError, Rport, Sanity, StartLine, StreamFramer, Uri, Via, check_date, eq_unescaped,
    is_keepalive, split_list, unescape, unquote,
};

/// Every header name the crate recognises.
const KNOWN_NAMES: [HeaderName; 38] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::Contact,
    HeaderName::Expires,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::ContentEncoding,
    HeaderName::UserAgent,
    HeaderName::Server,
    HeaderName::Authorization,
    HeaderName::ProxyAuthorization,
    HeaderName::WwwAuthenticate,
    HeaderName::ProxyAuthenticate,
    HeaderName::Route,
    HeaderName::RecordRoute,
    HeaderName::Path,
    HeaderName::Require,
    HeaderName::ProxyRequire,
    HeaderName::Supported,
    HeaderName::Unsupported,
    HeaderName::Allow,
    HeaderName::Date,
    HeaderName::Event,
    HeaderName::AllowEvents,
    HeaderName::Subject,
    HeaderName::ReferTo,
    HeaderName::ReferredBy,
    HeaderName::AcceptContact,
    HeaderName::RejectContact,
    HeaderName::RequestDisposition,
    HeaderName::Identity,
    HeaderName::IdentityInfo,
    HeaderName::SessionExpires,
    HeaderName::Warning,
];

fn limit_variants() -> [Limits; 2] {
    [
        Limits::default(),
        Limits {
            max_message_size: 600,
            max_headers: 5,
            max_line_length: 80,
            max_uri_length: 24,
        },
    ]
}

fn inside(msg: &Message<'_>, piece: &[u8]) {
    assert!(
        msg.range_of(piece).is_some(),
        "{:?} is not a slice of the message",
        String::from_utf8_lossy(piece)
    );
}

fn check_params(msg: &Message<'_>, params: Params<'_>) {
    inside(msg, params.as_bytes());
    for param in params.iter() {
        inside(msg, param.raw);
        inside(msg, param.name);
        if let Some(value) = param.value {
            inside(msg, value);
            inside(msg, unquote(value));
        }
        assert!(params.contains(param.name));
    }
    let _ = params.validate();
}

fn check_uri(msg: &Message<'_>, uri: &Uri<'_>) {
    inside(msg, uri.raw);
    for part in [uri.user, uri.password, uri.headers].into_iter().flatten() {
        inside(msg, part);
        assert!(eq_unescaped(part, part));
        assert!(unescape(part).count() <= part.len());
    }
    inside(msg, uri.host_raw);
    inside(msg, uri.opaque);
    check_params(msg, uri.params);
    let _ = (uri.is_sip(), uri.host.ip());
}

fn check_name_addr(msg: &Message<'_>, addr: &NameAddr<'_>) {
    if let Some(display) = addr.display_name {
        inside(msg, display);
    }
    check_uri(msg, &addr.uri);
    check_params(msg, addr.params);
    if let Some(tag) = addr.tag() {
        inside(msg, tag);
    }
}

fn check_via(msg: &Message<'_>, via: &Via<'_>) {
    for part in [
        via.raw,
        via.protocol,
        via.version,
        via.transport,
        via.host_raw,
    ] {
        inside(msg, part);
    }
    check_params(msg, via.params);
    for part in [via.branch(), via.maddr()].into_iter().flatten() {
        inside(msg, part);
    }
    let _ = (via.received(), via.host.ip());
    if let Rport::Value(_) = via.rport() {
        assert!(via.params.get(b"rport").flatten().is_some());
    }
}

fn check_digest(msg: &Message<'_>, digest: &Option<DigestFields<'_>>) {
    let Some(d) = digest else { return };
    let fields = [
        d.username,
        d.realm,
        d.nonce,
        d.uri,
        d.response,
        d.algorithm,
        d.cnonce,
        d.opaque,
        d.qop,
        d.nc,
        d.stale,
        d.domain,
    ];
    for field in fields.into_iter().flatten() {
        inside(msg, field);
    }
}

/// A Sanity that runs `check` alone.
fn only(check: Check) -> Sanity {
    Check::ALL
        .iter()
        .filter(|&&other| other != check)
        .fold(Sanity::new(), |sanity, &other| sanity.without(other))
}

/// Calls every accessor and sanity.
fn exercise(msg: &Message<'_>) {
    assert!(!is_keepalive(msg.as_bytes()));
    inside(msg, msg.body());
    if let Some(length) = msg.content_length() {
        assert_eq!(msg.body().len(), length);
    }
    match msg.start_line() {
        StartLine::Request(line) => {
            assert_eq!(msg.method(), Some(line.method));
            inside(msg, line.uri);
            inside(msg, line.version);
        }
        StartLine::Response(line) => {
            assert_eq!(msg.status_code(), Some(line.code));
            inside(msg, line.reason);
        }
    }
    let count = msg.header_count();
    assert_eq!(msg.headers().count(), count);
    for (i, header) in msg.headers().enumerate() {
        assert_eq!(header.index, i);
        assert_eq!(msg.header_at(i), Some(header));
        inside(msg, header.raw_name);
        inside(msg, header.value);
        assert_eq!(HeaderName::from_bytes(header.raw_name), header.name);
        for entry in split_list(header.value) {
            inside(msg, entry);
        }
    }
    for name in KNOWN_NAMES {
        assert_eq!(msg.header(name), msg.headers_named(name).next());
        for value in msg.values(name) {
            inside(msg, value.value);
        }
    }
    if let Some(Ok(uri)) = msg.request_uri() {
        check_uri(msg, &uri);
    }
    let vias: Vec<_> = msg.vias().collect();
    assert_eq!(msg.top_via(), vias.first().copied());
    for via in vias.iter().flatten() {
        check_via(msg, via);
    }
    for addr in [msg.from(), msg.to()].into_iter().flatten().flatten() {
        check_name_addr(msg, &addr);
    }
    if let Some(call_id) = msg.call_id() {
        inside(msg, call_id);
    }
    let _ = (msg.cseq(), msg.max_forwards(), msg.expires());
    for contact in msg.contacts().flatten() {
        if let Contact::Address(addr) = &contact {
            check_name_addr(msg, addr);
        }
        let _ = contact.expires();
    }
    if let Some(Ok(content_type)) = msg.content_type() {
        inside(msg, content_type.kind);
        inside(msg, content_type.subtype);
        check_params(msg, content_type.params);
    }
    for text in [msg.user_agent(), msg.server()].into_iter().flatten() {
        inside(msg, text);
    }
    for credentials in [msg.authorization(), msg.proxy_authorization()]
        .into_iter()
        .flatten()
        .flatten()
    {
        inside(msg, credentials.params);
        check_digest(msg, &credentials.digest);
    }
    for challenge in [msg.www_authenticate(), msg.proxy_authenticate()]
        .into_iter()
        .flatten()
        .flatten()
    {
        inside(msg, challenge.params);
        check_digest(msg, &challenge.digest);
    }
    for addr in msg
        .routes()
        .chain(msg.record_routes())
        .chain(msg.paths())
        .flatten()
    {
        check_name_addr(msg, &addr);
    }
    for name in [
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Supported,
        HeaderName::Unsupported,
    ] {
        for tag in msg.option_tags(name) {
            inside(msg, tag);
        }
    }
    if let Some(date) = msg.header(HeaderName::Date) {
        let _ = check_date(date.value);
    }
    // The full run fails with the error of the first check that fails alone.
    let full = Sanity::new().check(msg).map(|_| ());
    let first = Check::ALL
        .iter()
        .find_map(|&check| only(check).check(msg).err());
    assert_eq!(full.err(), first);
    if let Err(error) = full {
        let _ = (error.status_code(), error.check(), error.to_string());
    }
    for tag in Sanity::new().unsupported_proxy_require(msg) {
        inside(msg, tag);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    KeepAlive(usize),
    Message(Vec<u8>),
    Error(ParseError),
}

/// Feeds `chunks` to one framer as a connection would; returns what it reported, with
/// consecutive keep-alives merged, and how many bytes stayed buffered.
fn drive_framer(chunks: &[&[u8]], limits: &Limits) -> (Vec<Event>, usize) {
    let mut framer = StreamFramer::new();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    'chunks: for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match framer.next_frame(&buf, limits) {
                Ok(Frame::KeepAlive(n)) => {
                    assert!(n > 0 && n <= buf.len() && is_keepalive(&buf[..n]));
                    match events.last_mut() {
                        Some(Event::KeepAlive(m)) => *m += n,
                        _ => events.push(Event::KeepAlive(n)),
                    }
                    buf.drain(..n);
                }
                Ok(Frame::Message(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    let msg = Message::parse(&buf[..n], Framing::Stream, limits)
                        .expect("a frame parses as a stream message");
                    assert_eq!(msg.as_bytes().len(), n);
                    exercise(&msg);
                    events.push(Event::Message(buf[..n].to_vec()));
                    buf.drain(..n);
                }
                Ok(Frame::Partial) => break,
                Err(error) => {
                    events.push(Event::Error(error));
                    break 'chunks;
                }
            }
        }
    }
    (events, buf.len())
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(first) * input.len() / 255;
    for limits in limit_variants() {
        let datagram = Message::parse(input, Framing::Datagram, &limits);
        let stream = Message::parse(input, Framing::Stream, &limits);
        if let Ok(msg) = &datagram {
            exercise(msg);
        }
        if let Ok(msg) = &stream {
            let datagram = datagram
                .as_ref()
                .expect("a stream message is a datagram too");
            assert_eq!(msg.as_bytes(), datagram.as_bytes());
        }
        let (whole, whole_left) = drive_framer(&[input], &limits);
        let (chunked, chunked_left) = drive_framer(&[&input[..split], &input[split..]], &limits);
        if input.len() < limits.max_message_size {
            assert_eq!(
                chunked, whole,
                "framing depends on where the stream was cut"
            );
            if !matches!(whole.last(), Some(Event::Error(_))) {
                assert_eq!(chunked_left, whole_left);
            }
        }
    }
});
