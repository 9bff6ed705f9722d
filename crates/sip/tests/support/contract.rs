//! The contract of `sipwall-sip` as executable checks, shared by the property tests
//! (`tests/properties.rs`) and the cargo-fuzz targets (`fuzz/fuzz_targets/`): parse any
//! input every way there is and check what callers rely on (every slice an accessor
//! returns lies inside the message, Stream and Datagram framing agree, the framer does
//! not depend on how a stream is cut, sanity names the check that failed), and apply
//! edits chosen by control bytes and check that the output parses again.
//!
//! Included with `#[path]`; each includer uses a part of it.
#![allow(dead_code, clippy::unwrap_used)]

use sipwall_sip::{
    CSeq, Check, Contact, DigestFields, EditError, Editor, Frame, Framing, HeaderName, Limits,
    Message, Method, NameAddr, Params, ParseError, Position, Rport, Sanity, SanityError, StartLine,
    StreamFramer, Uri, Via, check_date, eq_unescaped, is_keepalive, parse_ip, split_list, unescape,
    unquote,
};

/// Limits large enough that an edited message is never refused for its size alone.
pub const RELAXED: Limits = Limits {
    max_message_size: 1 << 20,
    max_headers: 1 << 12,
    max_line_length: 1 << 20,
    max_uri_length: 1 << 20,
};

/// The limits every input is parsed under: the defaults, tight ones that make every
/// limit reachable with small inputs, and a header limit above the inline capacity.
pub fn limit_variants() -> [Limits; 3] {
    [
        Limits::default(),
        Limits {
            max_message_size: 600,
            max_headers: 5,
            max_line_length: 80,
            max_uri_length: 24,
        },
        Limits {
            max_headers: 400,
            ..Limits::default()
        },
    ]
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `piece` is a slice of the message: the editor addresses edits by the
/// slices accessors return, so each of them must lie inside the message.
pub fn inside(msg: &Message<'_>, piece: &[u8], what: &str) {
    assert!(
        msg.range_of(piece).is_some(),
        "{what} {:?} is not a slice of the message",
        lossy(piece)
    );
}

pub fn check_params(msg: &Message<'_>, params: Params<'_>) {
    inside(msg, params.as_bytes(), "parameter list");
    let all = params.as_bytes();
    assert!(
        all.is_empty() || all[0] == b';',
        "parameter list without ';'"
    );
    for param in params.iter() {
        inside(msg, param.raw, "parameter");
        inside(msg, param.name, "parameter name");
        if let Some(value) = param.value {
            inside(msg, value, "parameter value");
            inside(msg, unquote(value), "unquoted parameter value");
        }
        assert!(params.contains(param.name));
        assert!(params.find(param.name).is_some());
    }
    let _ = params.validate();
    assert_eq!(params.is_empty(), params.as_bytes().is_empty());
}

pub fn check_uri(msg: &Message<'_>, uri: &Uri<'_>) {
    inside(msg, uri.raw, "URI");
    for part in [uri.user, uri.password, uri.headers].into_iter().flatten() {
        inside(msg, part, "URI part");
        assert!(eq_unescaped(part, part));
        assert!(unescape(part).count() <= part.len());
    }
    inside(msg, uri.host_raw, "URI host");
    inside(msg, uri.opaque, "URI opaque part");
    check_params(msg, uri.params);
    let _ = (uri.is_sip(), uri.host.ip());
}

pub fn check_name_addr(msg: &Message<'_>, addr: &NameAddr<'_>) {
    if let Some(display) = addr.display_name {
        inside(msg, display, "display name");
    }
    check_uri(msg, &addr.uri);
    check_params(msg, addr.params);
    if let Some(tag) = addr.tag() {
        inside(msg, tag, "tag");
    }
}

pub fn check_via(msg: &Message<'_>, via: &Via<'_>) {
    for part in [
        via.raw,
        via.protocol,
        via.version,
        via.transport,
        via.host_raw,
    ] {
        inside(msg, part, "Via part");
    }
    check_params(msg, via.params);
    for part in [via.branch(), via.maddr()].into_iter().flatten() {
        inside(msg, part, "Via parameter");
    }
    if let Some(received) = via.received() {
        assert_eq!(
            via.params
                .get(b"received")
                .flatten()
                .and_then(parse_ip)
                .unwrap(),
            received
        );
    }
    if let Rport::Value(port) = via.rport() {
        let raw = via.params.get(b"rport").flatten().unwrap();
        assert_eq!(lossy(raw).parse::<u16>().ok(), Some(port));
    }
    let _ = via.host.ip();
}

pub fn check_digest(msg: &Message<'_>, digest: &Option<DigestFields<'_>>) {
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
        inside(msg, field, "digest field");
    }
}

pub fn check_method(msg: &Message<'_>, method: Method<'_>) {
    if let Method::Other(token) = method {
        inside(msg, token, "extension method");
    }
    assert_eq!(Method::from_bytes(method.as_bytes()), method);
}

/// Calls every accessor of a parsed message and checks what they return.
pub fn exercise(msg: &Message<'_>) {
    let bytes = msg.as_bytes();
    assert!(!bytes.is_empty());
    assert!(!is_keepalive(bytes), "a message starts with its start line");
    inside(msg, msg.body(), "body");
    if let Some(length) = msg.content_length() {
        assert_eq!(msg.body().len(), length);
    }

    // Start line.
    match msg.start_line() {
        StartLine::Request(line) => {
            assert!(msg.is_request());
            assert_eq!(msg.method(), Some(line.method));
            assert_eq!(msg.status_code(), None);
            inside(msg, line.uri, "Request-URI");
            inside(msg, line.version, "version");
            check_method(msg, line.method);
        }
        StartLine::Response(line) => {
            assert!(!msg.is_request());
            assert!(msg.request_line().is_none() && msg.method().is_none());
            assert_eq!(msg.status_code(), Some(line.code));
            assert!((100..=699).contains(&line.code));
            inside(msg, line.version, "version");
            inside(msg, line.reason, "reason phrase");
        }
    }

    // The header index.
    let count = msg.header_count();
    assert_eq!(msg.headers().count(), count);
    assert!(msg.header_at(count).is_none());
    for (i, header) in msg.headers().enumerate() {
        assert_eq!(header.index, i);
        assert_eq!(msg.header_at(i), Some(header));
        inside(msg, header.raw_name, "header name");
        inside(msg, header.value, "header value");
        assert_eq!(HeaderName::from_bytes(header.raw_name), header.name);
        let value = header.value;
        assert!(
            value.first().is_none_or(|b| !b" \t\r\n".contains(b))
                && value.last().is_none_or(|b| !b" \t\r\n".contains(b)),
            "header value not trimmed: {:?}",
            lossy(value)
        );
        for entry in split_list(value) {
            inside(msg, entry, "list entry");
        }
        if header.name == HeaderName::Other {
            assert!(
                msg.headers_by_raw_name(header.raw_name)
                    .any(|h| h.index == header.index)
            );
        }
    }
    for name in HeaderName::ALL {
        let named: Vec<_> = msg.headers_named(name).collect();
        assert!(named.iter().all(|h| h.name == name));
        assert_eq!(msg.header(name), named.first().copied());
        let by_raw: Vec<_> = msg
            .headers_by_raw_name(name.canonical().as_bytes())
            .collect();
        assert_eq!(by_raw, named);
        for value in msg.values(name) {
            inside(msg, value.value, "list value");
            assert_eq!(msg.header_at(value.header_index).unwrap().name, name);
        }
    }

    // Typed accessors.
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
        inside(msg, call_id, "Call-ID");
    }
    if let Some(Ok(cseq)) = msg.cseq() {
        check_method(msg, cseq.method);
        assert_eq!(
            CSeq::parse(msg.header(HeaderName::CSeq).unwrap().value),
            Ok(cseq)
        );
    }
    let _ = msg.max_forwards();
    for contact in msg.contacts() {
        match contact {
            Ok(Contact::Star) => assert!(Contact::Star.expires().is_none()),
            Ok(contact @ Contact::Address(addr)) => {
                check_name_addr(msg, &addr);
                let _ = contact.expires();
            }
            Err(_) => {}
        }
    }
    let _ = msg.expires();
    if let Some(Ok(content_type)) = msg.content_type() {
        inside(msg, content_type.kind, "media type");
        inside(msg, content_type.subtype, "media subtype");
        check_params(msg, content_type.params);
        assert!(content_type.is(content_type.kind, content_type.subtype));
    }
    for text in [msg.user_agent(), msg.server()].into_iter().flatten() {
        inside(msg, text, "User-Agent/Server");
    }
    for credentials in [msg.authorization(), msg.proxy_authorization()]
        .into_iter()
        .flatten()
        .flatten()
    {
        inside(msg, credentials.scheme, "scheme");
        inside(msg, credentials.params, "credentials");
        check_digest(msg, &credentials.digest);
    }
    for challenge in [msg.www_authenticate(), msg.proxy_authenticate()]
        .into_iter()
        .flatten()
        .flatten()
    {
        inside(msg, challenge.scheme, "scheme");
        inside(msg, challenge.params, "challenge");
        check_digest(msg, &challenge.digest);
    }
    let route_lists = [
        msg.routes().collect::<Vec<_>>(),
        msg.record_routes().collect(),
        msg.paths().collect(),
        msg.name_addrs(HeaderName::ReferTo).collect(),
    ];
    for addr in route_lists.iter().flatten().flatten() {
        check_name_addr(msg, addr);
    }
    for name in [
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Supported,
        HeaderName::Unsupported,
    ] {
        for tag in msg.option_tags(name) {
            inside(msg, tag, "option tag");
        }
    }
    if let Some(date) = msg.header(HeaderName::Date) {
        let _ = check_date(date.value);
    }
    let _ = check_sanity(msg);
}

/// A Sanity that runs `check` alone.
pub fn only(check: Check) -> Sanity {
    Check::ALL
        .iter()
        .filter(|&&other| other != check)
        .fold(Sanity::new(), |sanity, &other| sanity.without(other))
}

/// Runs sanity and checks that it agrees with the checks run one at a time: the full
/// run fails with the error of the first check that fails alone, and that error names
/// its check.
pub fn check_sanity(msg: &Message<'_>) -> Result<(), SanityError> {
    let full = Sanity::new().check(msg).map(|_| ());
    let first_failing = Check::ALL
        .iter()
        .find_map(|&check| only(check).check(msg).err().map(|error| (check, error)));
    match (full, first_failing) {
        (Ok(()), None) => {}
        (Err(error), Some((check, alone))) => {
            assert_eq!(error, alone, "full sanity and {check:?} alone disagree");
            assert!(matches!(error.status_code(), 400 | 416 | 420 | 483 | 505));
            assert_eq!(error.check(), check, "{error:?} names the wrong check");
            let _ = error.to_string();
        }
        (full, first) => panic!("full sanity says {full:?}, checks alone say {first:?}"),
    }
    for tag in Sanity::new().unsupported_proxy_require(msg) {
        inside(msg, tag, "unsupported option tag");
    }
    full
}

/// What [`StreamFramer`] reported, with consecutive keep-alives merged (how CRLFs are
/// grouped depends on where the chunks were cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    KeepAlive(usize),
    Message(Vec<u8>),
    Error(ParseError),
}

/// Feeds `chunks` in order to one framer, consuming what it reports as a caller would.
/// Returns the events and the bytes left unconsumed.
pub fn drive_framer<'c>(
    chunks: impl IntoIterator<Item = &'c [u8]>,
    limits: &Limits,
) -> (Vec<Event>, usize) {
    let mut framer = StreamFramer::new();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    'chunks: for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match framer.next_frame(&buf, limits) {
                Ok(Frame::KeepAlive(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    assert!(is_keepalive(&buf[..n]));
                    assert!(!matches!(buf.get(n), Some(b'\r' | b'\n')));
                    match events.last_mut() {
                        Some(Event::KeepAlive(m)) => *m += n,
                        _ => events.push(Event::KeepAlive(n)),
                    }
                    buf.drain(..n);
                }
                Ok(Frame::Message(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    let frame = &buf[..n];
                    // A frame is exactly one message that parses with Stream framing.
                    let msg = Message::parse(frame, Framing::Stream, limits)
                        .unwrap_or_else(|e| panic!("frame {:?} does not parse: {e}", lossy(frame)));
                    assert_eq!(msg.as_bytes().len(), n);
                    events.push(Event::Message(frame.to_vec()));
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

/// Parses `input` every way there is and checks what comes out.
pub fn parse_everything(input: &[u8], split: usize) {
    for limits in limit_variants() {
        let datagram = Message::parse(input, Framing::Datagram, &limits);
        let stream = Message::parse(input, Framing::Stream, &limits);
        if let Ok(msg) = &datagram {
            let offset = msg.as_bytes().as_ptr() as usize - input.as_ptr() as usize;
            assert!(offset + msg.as_bytes().len() <= input.len());
            assert!(is_keepalive(&input[..offset]) || offset == 0);
            exercise(msg);
        }
        match (&stream, &datagram) {
            (Ok(s), Ok(d)) => {
                assert_eq!(s.as_bytes(), d.as_bytes());
                assert_eq!(s.header_count(), d.header_count());
            }
            (Ok(_), Err(e)) => panic!("parses as a stream message but not as a datagram: {e}"),
            (Err(_), _) => {}
        }
        // The framer gives the same frames whatever the chunking (as long as the size
        // limit is not what stops it, since that depends on how much is buffered).
        let split = split.min(input.len());
        let (whole, whole_left) = drive_framer([input], &limits);
        let (chunked, chunked_left) = drive_framer([&input[..split], &input[split..]], &limits);
        if input.len() < limits.max_message_size {
            assert_eq!(chunked, whole, "framing depends on where the input was cut");
            // After an error the stream is closed with whatever was buffered.
            if !matches!(whole.last(), Some(Event::Error(_))) {
                assert_eq!(chunked_left, whole_left);
            }
        }
    }
}

/// Edits chosen from a few control bytes, with fixed valid texts, applied to any
/// parsed message (the same scheme as the `edit` fuzz target).
pub fn edit_with_choices(msg: &Message<'_>, ctl: [u8; 5], editor: &mut Editor) {
    const VIA: &[u8] = b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-sipwall;rport";
    const PARAMS: [(&[u8], Option<&[u8]>); 5] = [
        (b"received", Some(b"192.0.2.7")),
        (b"rport", Some(b"5060")),
        (b"rport", None),
        (b"x-sipwall", Some(b"1")),
        (b"maddr", Some(b"[2001:db8::9]")),
    ];
    const HEADERS: [(&[u8], &[u8]); 3] = [
        (b"X-Sipwall", b"edited"),
        (b"Record-Route", b"<sip:edge.example.com;lr>"),
        (b"Subject", b""),
    ];
    const VALUES: [&[u8]; 3] = [b"replaced", b"", b"<sip:x@example.com>;tag=1"];
    let not_outside = |result: Result<(), EditError>| {
        assert_ne!(
            result,
            Err(EditError::NotInMessage),
            "accessor slice outside the message"
        );
        assert_ne!(result, Err(EditError::BadText), "valid text refused");
    };
    let n = msg.header_count();
    let editable = |i: usize| {
        msg.header_at(i)
            .is_some_and(|h| h.name != HeaderName::ContentLength)
    };
    if ctl[0] & 0x01 != 0 {
        not_outside(editor.push_via(msg, VIA));
    }
    if ctl[0] & 0x02 != 0 {
        not_outside(editor.pop_via(msg));
    }
    if let Some(Ok(via)) = msg.top_via() {
        if ctl[0] & 0x04 != 0 {
            let (name, value) = PARAMS[usize::from(ctl[1] & 7) % PARAMS.len()];
            not_outside(editor.set_param(msg, via.params, name, value));
        }
        if ctl[0] & 0x08 != 0 {
            let name =
                [&b"received"[..], b"rport", b"branch", b"x-sipwall"][usize::from(ctl[1] >> 3) & 3];
            not_outside(editor.remove_param(msg, via.params, name));
        }
    }
    if ctl[0] & 0x10 != 0 {
        let uri = if ctl[4] & 1 == 0 {
            &b"sip:alice@example.com;transport=tcp"[..]
        } else {
            b"sips:[2001:db8::1]:5061"
        };
        let result = editor.replace_request_uri(msg, uri);
        assert_eq!(result.is_ok(), msg.is_request());
    }
    if ctl[0] & 0x20 != 0 {
        let index = usize::from(ctl[2]) % (n + 1);
        let position = match (ctl[4] >> 1) & 3 {
            0 => Position::First,
            1 => Position::Last,
            2 => Position::Before(index),
            _ => Position::After(index),
        };
        let (name, value) = HEADERS[usize::from(ctl[4] >> 3) % HEADERS.len()];
        let result = editor.insert_header(msg, position, name, value);
        not_outside(result);
        if index < n {
            assert!(result.is_ok());
        }
    }
    if ctl[0] & 0x40 != 0 && n > 0 && editable(usize::from(ctl[2]) % n) {
        not_outside(editor.remove_header(msg, usize::from(ctl[2]) % n));
    }
    if ctl[0] & 0x80 != 0 && n > 0 && editable(usize::from(ctl[3]) % n) {
        let value = VALUES[usize::from(ctl[4] >> 5) % VALUES.len()];
        not_outside(editor.replace_header_value(msg, usize::from(ctl[3]) % n, value));
    }
    if ctl[1] & 0x40 != 0 {
        if let Some(Ok(from)) = msg.from() {
            not_outside(editor.set_param(msg, from.params, b"tag", Some(b"sipwall")));
        }
        if let Some(Ok(uri)) = msg.request_uri() {
            not_outside(editor.set_param(msg, uri.params, b"lr", None));
        }
    }
    if ctl[1] & 0x80 != 0 {
        editor.set_body([&b""[..], b"v=0\r\n", b"\r\n\r\n"][usize::from(ctl[3] >> 6) % 3]);
    }
}

/// The editor's contract: whatever valid edits are applied to a parsed message, if
/// `finish` succeeds its output is one message that parses, with a Content-Length that
/// matches its body.
pub fn check_edit_contract(input: &[u8], ctl: [u8; 5]) {
    let Ok(msg) = Message::parse(input, Framing::Datagram, &Limits::default()) else {
        return;
    };
    let mut editor = Editor::new();
    edit_with_choices(&msg, ctl, &mut editor);
    let no_edits = editor.is_empty();
    let mut out = Vec::new();
    if editor.finish(&msg, &mut out).is_err() {
        return;
    }
    let edited = Message::parse(&out, Framing::Datagram, &RELAXED).unwrap_or_else(|e| {
        panic!(
            "edited message does not parse ({e}):\n{:?}\nfrom:\n{:?}",
            lossy(&out),
            lossy(msg.as_bytes())
        )
    });
    assert_eq!(
        edited.as_bytes().len(),
        out.len(),
        "output is not one message"
    );
    assert_eq!(edited.content_length(), Some(edited.body().len()));
    let canonical_length = msg
        .header(HeaderName::ContentLength)
        .is_some_and(|h| h.value == msg.body().len().to_string().as_bytes());
    if no_edits && canonical_length {
        assert_eq!(out, msg.as_bytes());
    }
}
