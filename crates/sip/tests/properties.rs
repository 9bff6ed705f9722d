//! Property tests of `sipwall-sip`: the parser, the typed accessors, [`Sanity`], the
//! stream framer and the [`Editor`] checked against properties over generated input.
//!
//! 1. No panic, on arbitrary bytes and on mutations of valid seed messages (the RFC 4475
//!    torture messages plus a few of our own), through every entry point; and the
//!    structural invariants that callers rely on (every slice an accessor returns lies
//!    inside the message, Stream and Datagram framing agree, the framer's frames parse,
//!    sanity reports the check that actually failed, the editor's output parses again).
//! 2. Round trip: structured requests and responses, generated with random header
//!    order, name case, compact forms, folding and bodies, parse into exactly what was
//!    generated and pass sanity; random sequences of edits produce a message whose
//!    re-parse matches a model of the edits header by header.
//! 3. Stream framing: generated messages and keep-alives, cut into random chunks, come
//!    out of one [`StreamFramer`] exactly as they went in.
//! 4. The editor refuses new text holding CR, LF or NUL, and accepts it without.
//!
//! Bugs these properties found are pinned by the regression tests at the end of the file.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use sipwall_sip::{
    Check, Contact, EditError, Editor, Frame, Framing, HeaderName, Limits, Message, Method,
    NameAddr, Position, Rport, Sanity, StartLine, StreamFramer, Uri, Via, eq_unescaped,
};
#[path = "support/contract.rs"]
mod contract;

use contract::*;

// ---------------------------------------------------------------------------------------
// 1. No panic on any input
// ---------------------------------------------------------------------------------------

/// Valid messages that mutations start from: the RFC 4475 torture messages and a few
/// ordinary ones with the headers that the accessors read.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<Vec<u8>> = vec![
            b"INVITE sip:bob@biloxi.example.com;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport, SIP/2.0/TCP [2001:db8::1]:5070;received=192.0.2.4;branch=z9hG4bK1\r\n\
v: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx;ttl=16;maddr=239.1.1.1\r\n\
Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice \\\"A\\\"\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>;expires=3600, sip:a2@192.0.2.1;q=0.5\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nRecord-Route: <sip:rr.example.com;lr>\r\n\
Path: <sip:path.example.com;lr>\r\nRefer-To: <sip:carol@example.com>\r\n\
Proxy-Authorization: Digest username=\"alice\", realm=\"atlanta.example.com\", nonce=\"84a4cc6f\", uri=\"sip:bob@biloxi.example.com\", response=\"7587245234b3434cc3412213e5f113a5\", qop=auth, nc=00000001, cnonce=\"0a4f113b\"\r\n\
Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l\r\n\
Require: 100rel\r\nProxy-Require: foo\r\nSupported: timer, path\r\nExpires: 7200\r\n\
Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nUser-Agent: sipwall-test/1.0\r\n\
Content-Type: application/sdp;charset=utf-8\r\nContent-Length: 4\r\n\r\nv=0\n"
                .to_vec(),
            b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK9\r\n\
f: <sip:a@b>;tag=1\r\nt: <sip:a@b>;tag=2\r\ni: x@y\r\nCSeq: 2 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"b\", nonce=\"n\", qop=\"auth,auth-int\", algorithm=MD5, stale=FALSE\r\n\
Proxy-Authenticate: Digest realm=\"b\", nonce=\"n\", domain=\"sip:b\", opaque=\"o\"\r\n\
Server: sipwall\r\nUnsupported: foo\r\nm: *\r\nl: 0\r\n\r\n"
                .to_vec(),
            b"REGISTER sips:registrar.example.com SIP/2.0\r\nVia: SIP/2.0/TLS h:5061;branch=z9hG4bKr\r\n\
From: sip:u@example.com;tag=9\r\nTo: sip:u@example.com\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\n\
Contact: \"U\" <sips:u@[2001:db8::2]:5061;transport=tls>;expires=60;+sip.instance=\"<urn:uuid:1>\"\r\n\
Expires: 60\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            b"OPTIONS tel:+1-555-0100;phone-context=example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <tel:+15550101>;tag=a\r\nTo: <tel:+15550100>\r\nCall-ID: t\r\nCSeq: 7 OPTIONS\r\n\r\n"
                .to_vec(),
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "dat"))
            .collect();
        files.sort();
        assert!(files.len() >= 40, "RFC 4475 messages missing from {dir}");
        seeds.extend(files.iter().map(|path| std::fs::read(path).unwrap()));
        seeds
    })
}

/// One change to a seed message.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, &'static [u8]),
    Delete(Index, usize),
    Duplicate(Index, usize, Index),
    Truncate(Index),
}

/// Bytes that matter to the grammar: line ends, separators, quotes, brackets.
const SPECIAL: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b"\"",
    b",",
    b";",
    b"<",
    b">",
    b" ",
    b"\t",
    b":",
    b"\\",
    b"%",
    b"@",
    b"=",
    b"\r\n ",
    b"\r\n\r\n",
    b"?",
    b"[",
    b"]",
    b"/",
    b"\xff",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        4 => (any::<Index>(), prop::sample::select(SPECIAL))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete(at, len)),
        1 => (any::<Index>(), 1usize..64, any::<Index>())
            .prop_map(|(from, len, to)| Mutation::Duplicate(from, len, to)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply_mutation(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let at = |index: &Index, len: usize| if len == 0 { 0 } else { index.index(len) };
    let len = bytes.len();
    match mutation {
        Mutation::Flip(i, mask) if len > 0 => bytes[at(i, len)] ^= mask,
        Mutation::Set(i, b) if len > 0 => bytes[at(i, len)] = *b,
        Mutation::Insert(i, text) => {
            let pos = at(i, len + 1);
            bytes.splice(pos..pos, text.iter().copied());
        }
        Mutation::Delete(i, n) if len > 0 => {
            let pos = at(i, len);
            bytes.drain(pos..(pos + n).min(len));
        }
        Mutation::Duplicate(from, n, to) if len > 0 => {
            let start = at(from, len);
            let piece = bytes[start..(start + n).min(len)].to_vec();
            let pos = at(to, len + 1);
            bytes.splice(pos..pos, piece);
        }
        Mutation::Truncate(i) => bytes.truncate(at(i, len + 1)),
        _ => {}
    }
}

fn mutated_seed() -> impl Strategy<Value = Vec<u8>> {
    (0..seeds().len(), prop::collection::vec(mutation(), 0..8)).prop_map(|(seed, mutations)| {
        let mut bytes = seeds()[seed].clone();
        for mutation in &mutations {
            apply_mutation(&mut bytes, mutation);
        }
        bytes
    })
}

const START_LINES: &[&[u8]] = &[
    b"INVITE sip:a@b SIP/2.0\r\n",
    b"SIP/2.0 200 OK\r\n",
    b"REGISTER sips:x SIP/2.0\r\n",
    b"\r\n\r\nBYE tel:1 SIP/2.0\n",
];

const REPEATED_LINES: &[&[u8]] = &[
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
    b"X: y\r\n",
    b"Route: <sip:r;lr>\r\n",
    b"Contact: *\r\n",
];

/// A start line followed by bytes from the grammar's alphabet: gets past the start line
/// far more often than uniform bytes do.
fn sip_shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(START_LINES),
        prop::collection::vec(
            prop::sample::select(&b"abvftmilcseRXY019 :;,<>\"=@/.\\%[]\t\r\n\r\n\r\n\r\n\r\n"[..]),
            0..400,
        ),
    )
        .prop_map(|(start, rest)| [start, &rest[..]].concat())
}

/// A message with more header fields than fit inline.
fn many_headers() -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds().len(),
        50usize..120,
        prop::sample::select(REPEATED_LINES),
    )
        .prop_map(|(seed, n, line)| {
            let seed = &seeds()[seed];
            let at = seed
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(seed.len(), |i| i + 2);
            [&seed[..at], &line.repeat(n), &seed[at..]].concat()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_panic_on_arbitrary_bytes(
        input in prop::collection::vec(any::<u8>(), 0..2048),
        split in any::<usize>(),
    ) {
        parse_everything(&input, split % (input.len() + 1));
    }

    #[test]
    fn no_panic_on_sip_shaped_bytes(input in sip_shaped(), split in any::<usize>()) {
        parse_everything(&input, split % (input.len() + 1));
    }

    #[test]
    fn no_panic_on_mutated_seeds(input in mutated_seed(), split in any::<usize>()) {
        parse_everything(&input, split % (input.len() + 1));
    }

    #[test]
    fn no_panic_with_many_headers(input in many_headers(), split in any::<usize>()) {
        parse_everything(&input, split % (input.len() + 1));
    }

    #[test]
    fn editor_output_of_mutated_seeds_parses(input in mutated_seed(), ctl in any::<[u8; 5]>()) {
        check_edit_contract(&input, ctl);
    }
}

#[test]
fn seeds_are_valid_where_the_rfc_says_so() {
    // The properties above mean something only if the seeds reach the accessors.
    let parsed = seeds()
        .iter()
        .filter(|seed| Message::parse(seed, Framing::Datagram, &Limits::default()).is_ok())
        .count();
    assert!(parsed >= 30, "only {parsed} seeds parse");
    for seed in &seeds()[..4] {
        let msg = Message::parse(seed, Framing::Stream, &Limits::default())
            .or_else(|_| Message::parse(seed, Framing::Datagram, &Limits::default()))
            .unwrap();
        exercise(&msg);
        assert_eq!(
            check_sanity(&msg).err().map(|e| e.check()),
            match msg.start_line() {
                // The first seed asks for an unsupported Proxy-Require extension.
                StartLine::Request(line) if line.method == Method::Invite =>
                    Some(Check::ProxyRequire),
                _ => None,
            }
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. Round trip of generated messages, and edits
// ---------------------------------------------------------------------------------------

const TOKEN: &str = "[A-Za-z0-9.!%*_+`'~-]{1,10}";

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,6}[a-z0-9])?){0,2}",
        1 => (1u8..=254).prop_map(|n| format!("192.0.2.{n}")),
        1 => (1u8..=254).prop_map(|n| format!("198.51.100.{n}")),
        1 => (1u16..).prop_map(|n| format!("[2001:db8::{n:x}]")),
    ]
}

fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u8..=254).prop_map(|n| format!("192.0.2.{n}")),
        (1u16..).prop_map(|n| format!("2001:db8::{n:x}")),
        (1u16..).prop_map(|n| format!("[2001:db8::{n:x}]")),
    ]
}

fn render_params(params: &[(String, Option<String>)]) -> String {
    params
        .iter()
        .map(|(name, value)| match value {
            Some(value) => format!(";{name}={value}"),
            None => format!(";{name}"),
        })
        .collect()
}

fn uri_params() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    prop::collection::vec(
        (
            "[a-z][a-z0-9-]{0,6}",
            prop::option::of("[a-zA-Z0-9._~-]{1,8}"),
        ),
        0..3,
    )
}

#[derive(Debug, Clone)]
struct UriSpec {
    scheme: &'static str,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    params: Vec<(String, Option<String>)>,
}

impl UriSpec {
    fn render(&self) -> String {
        let mut out = format!("{}:", self.scheme);
        if let Some(user) = &self.user {
            out.push_str(user);
            out.push('@');
        }
        out.push_str(&self.host);
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        out.push_str(&render_params(&self.params));
        out
    }

    fn assert_parsed(&self, uri: &Uri<'_>) {
        assert_eq!(lossy(uri.raw), self.render());
        assert!(uri.is_sip());
        assert_eq!(uri.user.map(lossy), self.user);
        assert_eq!(lossy(uri.host_raw), self.host);
        assert_eq!(uri.port, self.port);
        assert_eq!(lossy(uri.params.as_bytes()), render_params(&self.params));
        assert_eq!(uri.headers, None);
        if let Some(user) = &self.user {
            assert!(eq_unescaped(uri.user.unwrap(), user.as_bytes()));
        }
    }
}

fn uri_spec() -> impl Strategy<Value = UriSpec> {
    (
        prop::sample::select(&["sip", "sips", "SIP"][..]),
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$-]{1,10}(%[0-9A-F]{2})?"),
        host(),
        prop::option::of(1u16..),
        uri_params(),
    )
        .prop_map(|(scheme, user, host, port, params)| UriSpec {
            scheme,
            user,
            host,
            port,
            params,
        })
}

/// White space between a Via's transport and host, folds included.
const VIA_LWS: &[&str] = &[" ", " ", " ", "  ", "\t", "\r\n ", "\r\n\t"];

#[derive(Debug, Clone)]
struct ViaSpec {
    transport: &'static str,
    /// White space between the transport and the host: a fold sometimes.
    lws: &'static str,
    host: String,
    port: Option<u16>,
    params: Vec<(String, Option<String>)>,
}

impl ViaSpec {
    fn render(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "SIP/2.0/{}{}{}{}{}",
            self.transport,
            self.lws,
            self.host,
            port,
            render_params(&self.params)
        )
    }

    fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_deref())
    }

    fn assert_parsed(&self, via: &Via<'_>) {
        assert_eq!(lossy(via.raw), self.render());
        assert_eq!(via.protocol, b"SIP");
        assert_eq!(via.version, b"2.0");
        assert_eq!(lossy(via.transport), self.transport);
        assert_eq!(lossy(via.host_raw), self.host);
        assert_eq!(via.port, self.port);
        assert_eq!(
            via.branch().map(lossy).as_deref(),
            self.param("branch").flatten()
        );
        let rport = match self.param("rport") {
            None => Rport::Absent,
            Some(None) => Rport::Requested,
            Some(Some(port)) => Rport::Value(port.parse().unwrap()),
        };
        assert_eq!(via.rport(), rport);
        let received = self
            .param("received")
            .flatten()
            .map(|ip| ip.trim_matches(['[', ']']).parse::<IpAddr>().unwrap());
        assert_eq!(via.received(), received);
    }
}

/// A Via entry; `lws` is what may separate the transport from the host (a fold is
/// fine in a message, not in text given to the editor).
fn via_spec(lws: &'static [&'static str]) -> impl Strategy<Value = ViaSpec> {
    (
        prop::sample::select(&["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"][..]),
        prop::sample::select(lws),
        host(),
        prop::option::of(1u16..),
        TOKEN,
        prop::option::of(prop::option::of(1u16..)),
        prop::option::of(ip()),
    )
        .prop_flat_map(|(transport, lws, host, port, branch, rport, received)| {
            let mut params = vec![("branch".to_string(), Some(format!("z9hG4bK{branch}")))];
            if let Some(rport) = rport {
                params.push(("rport".into(), rport.map(|p| p.to_string())));
            }
            if let Some(received) = received {
                params.push(("received".into(), Some(received)));
            }
            Just(params).prop_shuffle().prop_map(move |params| ViaSpec {
                transport,
                lws,
                host: host.clone(),
                port,
                params,
            })
        })
}

#[derive(Debug, Clone)]
struct NameAddrSpec {
    /// As written: a quoted string or tokens separated by spaces.
    display: Option<String>,
    /// Between the display name and `<`.
    gap: &'static str,
    bracketed: bool,
    uri: UriSpec,
    params: Vec<(String, Option<String>)>,
}

impl NameAddrSpec {
    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(display) = &self.display {
            out.push_str(display);
            out.push_str(self.gap);
        }
        if self.bracketed {
            out.push_str(&format!("<{}>", self.uri.render()));
        } else {
            out.push_str(&self.uri.render());
        }
        out.push_str(&render_params(&self.params));
        out
    }

    fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_deref())
    }

    fn assert_parsed(&self, addr: &NameAddr<'_>) {
        assert_eq!(addr.display_name.map(lossy), self.display);
        assert_eq!(addr.bracketed, self.bracketed);
        self.uri.assert_parsed(&addr.uri);
        assert_eq!(lossy(addr.params.as_bytes()), render_params(&self.params));
        assert_eq!(
            addr.tag().map(lossy).as_deref(),
            self.param("tag").flatten()
        );
    }
}

fn display_name() -> impl Strategy<Value = Option<String>> {
    let quoted = prop::collection::vec(
        prop_oneof![4 => "[ !#-\\[\\]-~]", 1 => "\\\\[\"\\\\a-z]"],
        0..12,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()));
    prop_oneof![
        Just(None),
        proptest::string::string_regex(&format!("{TOKEN}( {TOKEN}){{0,2}}"))
            .unwrap()
            .prop_map(Some),
        quoted.prop_map(Some),
    ]
}

/// A name-addr with `params` (besides any that the caller adds).
fn name_addr(tag: impl Strategy<Value = Option<String>>) -> impl Strategy<Value = NameAddrSpec> {
    (
        display_name(),
        prop::sample::select(&["", " ", " ", "\r\n "][..]),
        any::<bool>(),
        uri_spec(),
        tag,
    )
        .prop_map(|(display, gap, bracketed, uri, tag)| {
            // An addr-spec cannot carry URI parameters (they would become header
            // parameters) nor a display name.
            let bracketed = bracketed || display.is_some() || !uri.params.is_empty();
            let params = tag
                .map(|tag| vec![("tag".to_string(), Some(tag))])
                .unwrap_or_default();
            NameAddrSpec {
                display,
                gap,
                bracketed,
                uri,
                params,
            }
        })
}

#[derive(Debug, Clone)]
enum ContactSpec {
    Star,
    Address(NameAddrSpec, Option<u32>),
}

impl ContactSpec {
    fn render(&self) -> String {
        match self {
            ContactSpec::Star => "*".into(),
            ContactSpec::Address(addr, _) => addr.render(),
        }
    }
}

fn contact() -> impl Strategy<Value = ContactSpec> {
    (
        name_addr(Just(None)),
        prop::option::of(any::<u32>()),
        any::<bool>(),
    )
        .prop_map(|(mut addr, expires, q)| {
            if let Some(expires) = expires {
                addr.params
                    .push(("expires".into(), Some(expires.to_string())));
            }
            if q {
                addr.params.push(("q".into(), Some("0.5".into())));
            }
            ContactSpec::Address(addr, expires)
        })
}

/// A header value as the model knows it: text, or a list the editor changes entry by
/// entry.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Vias(Vec<ViaSpec>, Vec<&'static str>),
    Contacts(Vec<ContactSpec>, Vec<&'static str>),
}

impl Value {
    fn render(&self) -> String {
        fn join(entries: Vec<String>, seps: &[&str]) -> String {
            let mut out = String::new();
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(seps[i - 1]);
                }
                out.push_str(entry);
            }
            out
        }
        match self {
            Value::Text(text) => text.clone(),
            Value::Vias(entries, seps) => join(entries.iter().map(ViaSpec::render).collect(), seps),
            Value::Contacts(entries, seps) => {
                join(entries.iter().map(ContactSpec::render).collect(), seps)
            }
        }
    }
}

/// One header line of the model.
#[derive(Debug, Clone)]
struct Line {
    /// The name as written.
    name: String,
    kind: HeaderName,
    /// What separates name and value, white space and folding included.
    colon: &'static str,
    value: Value,
    /// White space after the value: blanks, or a folded line holding only blanks.
    trail: &'static str,
}

impl Line {
    fn wire(&self) -> (String, String) {
        (self.name.clone(), self.value.render())
    }
}

/// How one header name is written.
#[derive(Debug, Clone, Copy)]
struct NameStyle {
    compact: bool,
    case_mask: u64,
    colon: &'static str,
    trail: &'static str,
}

fn name_style() -> impl Strategy<Value = NameStyle> {
    (
        any::<bool>(),
        prop_oneof![Just(0u64), any::<u64>()],
        prop::sample::select(&[": ", ": ", ": ", ":", " : ", ":\t", "\t:  ", ":\r\n "][..]),
        prop::sample::select(&["", "", "", "", "", "", "", " ", "\t", "\r\n ", " \r\n\t "][..]),
    )
        .prop_map(|(compact, case_mask, colon, trail)| NameStyle {
            compact,
            case_mask,
            colon,
            trail,
        })
}

fn styled_name(long: &str, compact: Option<&str>, style: NameStyle) -> String {
    let name = match compact {
        Some(compact) if style.compact => compact,
        _ => long,
    };
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if style.case_mask >> (i % 64) & 1 == 1 {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// Words of visible bytes (UTF-8 or not) separated by spaces; one space may be a fold.
/// Never leading or trailing white space, never CR, LF or NUL outside a fold.
fn text_value() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[!-~\u{a0}-\u{ff}]{1,8}", 0..5),
        prop::option::of(prop::sample::select(&["\r\n ", "\r\n\t", "\r\n  "][..])),
        any::<Index>(),
    )
        .prop_map(|(words, fold, at)| {
            let mut seps = vec![" "; words.len().saturating_sub(1)];
            if let Some(fold) = fold
                && !seps.is_empty()
            {
                let i = at.index(seps.len());
                seps[i] = fold;
            }
            let mut out = String::new();
            for (i, word) in words.iter().enumerate() {
                if i > 0 {
                    out.push_str(seps[i - 1]);
                }
                out.push_str(word);
            }
            out
        })
}

/// Like [`text_value`], without folding.
fn plain_text_value() -> impl Strategy<Value = String> {
    prop::collection::vec("[!-~\u{a0}-\u{ff}]{1,8}", 0..5).prop_map(|words| words.join(" "))
}

/// An extension header name: any token that is not a name the parser knows.
fn extension_name() -> impl Strategy<Value = String> {
    prop_oneof!["X-[A-Za-z0-9-]{1,10}", TOKEN].prop_filter("known header name", |name| {
        HeaderName::from_bytes(name.as_bytes()) == HeaderName::Other
    })
}

#[derive(Debug, Clone)]
enum Start {
    Request { method: String, uri: UriSpec },
    Response { code: u16, reason: String },
}

/// A generated message: its header lines in wire order, its body, and what the single
/// headers hold.
#[derive(Debug, Clone)]
struct Generated {
    start: Start,
    lines: Vec<Line>,
    body: Vec<u8>,
    from: NameAddrSpec,
    to: NameAddrSpec,
    call_id: String,
    cseq: (u32, String),
    max_forwards: Option<u8>,
    expires: Option<u32>,
    user_agent: Option<String>,
    supported: Vec<String>,
    with_content_length: bool,
}

impl Generated {
    fn head(&self) -> Vec<u8> {
        let mut out = match &self.start {
            Start::Request { method, uri } => format!("{method} {} SIP/2.0\r\n", uri.render()),
            Start::Response { code, reason } => format!("SIP/2.0 {code} {reason}\r\n"),
        }
        .into_bytes();
        for line in &self.lines {
            out.extend_from_slice(line.name.as_bytes());
            out.extend_from_slice(line.colon.as_bytes());
            out.extend_from_slice(line.value.render().as_bytes());
            out.extend_from_slice(line.trail.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn render(&self) -> Vec<u8> {
        [&self.head()[..], b"\r\n", &self.body].concat()
    }

    fn vias(&self) -> Vec<&ViaSpec> {
        self.lines
            .iter()
            .flat_map(|line| match &line.value {
                Value::Vias(entries, _) => entries.iter().collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn contacts(&self) -> Vec<&ContactSpec> {
        self.lines
            .iter()
            .flat_map(|line| match &line.value {
                Value::Contacts(entries, _) => entries.iter().collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Checks every accessor against what was generated.
    fn assert_parsed(&self, msg: &Message<'_>) {
        exercise(msg);
        match (&self.start, msg.start_line()) {
            (Start::Request { method, uri }, StartLine::Request(line)) => {
                assert_eq!(lossy(line.method.as_bytes()), *method);
                assert_eq!(line.version, b"SIP/2.0");
                uri.assert_parsed(&msg.request_uri().unwrap().unwrap());
            }
            (Start::Response { code, reason }, StartLine::Response(line)) => {
                assert_eq!(line.code, *code);
                assert_eq!(lossy(line.reason), *reason);
            }
            (_, line) => panic!("wrong kind of start line {line:?}"),
        }
        // Every header, in order, name as written and value as written.
        let headers: Vec<(String, String)> = msg
            .headers()
            .map(|h| (lossy(h.raw_name), lossy(h.value)))
            .collect();
        let expected: Vec<_> = self.lines.iter().map(Line::wire).collect();
        assert_eq!(headers, expected);
        for (header, line) in msg.headers().zip(&self.lines) {
            assert_eq!(header.name, line.kind, "{}", line.name);
            if line.kind == HeaderName::Other {
                let same: Vec<_> = self
                    .lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.name.eq_ignore_ascii_case(&line.name))
                    .map(|(i, _)| i)
                    .collect();
                let found: Vec<_> = msg
                    .headers_by_raw_name(line.name.to_ascii_uppercase().as_bytes())
                    .map(|h| h.index)
                    .collect();
                assert_eq!(found, same);
            }
        }
        // Typed accessors.
        let vias: Vec<_> = msg.vias().map(Result::unwrap).collect();
        let expected_vias = self.vias();
        assert_eq!(vias.len(), expected_vias.len());
        for (via, spec) in vias.iter().zip(&expected_vias) {
            spec.assert_parsed(via);
        }
        expected_vias[0].assert_parsed(&msg.top_via().unwrap().unwrap());
        self.from.assert_parsed(&msg.from().unwrap().unwrap());
        self.to.assert_parsed(&msg.to().unwrap().unwrap());
        assert_eq!(msg.call_id().map(lossy), Some(self.call_id.clone()));
        let cseq = msg.cseq().unwrap().unwrap();
        assert_eq!(cseq.number, self.cseq.0);
        assert_eq!(lossy(cseq.method.as_bytes()), self.cseq.1);
        assert_eq!(msg.max_forwards(), self.max_forwards.map(Ok));
        let contacts: Vec<_> = msg.contacts().map(Result::unwrap).collect();
        let expected_contacts = self.contacts();
        assert_eq!(contacts.len(), expected_contacts.len());
        for (contact, spec) in contacts.iter().zip(expected_contacts) {
            match (contact, spec) {
                (Contact::Star, ContactSpec::Star) => {}
                (Contact::Address(addr), ContactSpec::Address(spec_addr, expires)) => {
                    spec_addr.assert_parsed(addr);
                    assert_eq!(contact.expires(), expires.map(Ok));
                }
                _ => panic!("contact {contact:?} is not {spec:?}"),
            }
        }
        assert_eq!(msg.expires(), self.expires.map(Ok));
        assert_eq!(msg.user_agent().map(lossy), self.user_agent);
        let supported: Vec<_> = msg.option_tags(HeaderName::Supported).map(lossy).collect();
        assert_eq!(supported, self.supported);
        if let Some(content_type) = msg.content_type() {
            assert!(content_type.unwrap().is(b"application", b"sdp"));
        }
        assert_eq!(msg.body(), &self.body[..]);
        let length = self.with_content_length.then_some(self.body.len());
        assert_eq!(msg.content_length(), length);
        assert_eq!(check_sanity(msg), Ok(()));
    }
}

/// Header lines of one kind: `entries` split into header fields where `splits` says.
fn list_lines(
    long: &str,
    compact: &str,
    kind: HeaderName,
    styles: &mut impl Iterator<Item = NameStyle>,
    entries: Vec<Value>,
) -> Vec<Line> {
    entries
        .into_iter()
        .map(|value| {
            let style = styles.next().unwrap();
            Line {
                name: styled_name(long, Some(compact), style),
                kind,
                colon: style.colon,
                trail: style.trail,
                value,
            }
        })
        .collect()
}

/// Splits `entries` into groups, one per header field, where `breaks` says.
fn group<T: Clone>(entries: &[T], breaks: &[bool]) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if i == 0 || breaks[i % breaks.len()] {
            groups.push(Vec::new());
        }
        groups.last_mut().unwrap().push(entry.clone());
    }
    groups
}

const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "PUBLISH",
];

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(METHODS).prop_map(String::from),
        1 => "[A-Z][A-Z0-9.!%*_+`'~-]{0,9}",
    ]
}

const LIST_SEPS: &[&str] = &[",", ", ", " , ", ",\r\n "];

fn generated(with_content_length: impl Strategy<Value = bool>) -> impl Strategy<Value = Generated> {
    let start = prop_oneof![
        (method(), uri_spec()).prop_map(|(method, uri)| Start::Request { method, uri }),
        (100u16..=699, "[A-Za-z0-9 \t\u{80}-\u{ff}]{0,20}")
            .prop_map(|(code, reason)| Start::Response { code, reason }),
    ];
    let identity = (
        name_addr(prop::option::of(TOKEN).prop_map(|tag| tag.or(Some("1".into())))),
        name_addr(prop::option::of(TOKEN)),
        "[A-Za-z0-9.!%*_+~-]{1,20}(@[a-z0-9.-]{1,12})?",
        (
            0u32..1 << 31,
            method(),
            prop::sample::select(&[" ", "  ", "\t", "\r\n "][..]),
        ),
        prop::option::of(0u8..),
    );
    let lists = (
        prop::collection::vec(via_spec(VIA_LWS), 1..=3),
        prop::collection::vec(any::<bool>(), 3),
        prop::collection::vec(prop::sample::select(LIST_SEPS), 3),
        prop_oneof![
            3 => prop::collection::vec(contact(), 0..=3),
            1 => Just(vec![ContactSpec::Star]),
        ],
        prop::collection::vec(any::<bool>(), 3),
    );
    let extras = (
        prop::collection::vec((extension_name(), text_value()), 0..4),
        prop::option::of(any::<u32>()),
        prop::option::of("[A-Za-z0-9/.()-]{1,10}( [A-Za-z0-9/.()-]{1,10}){0,2}"),
        prop::collection::vec("[a-z0-9-]{1,8}", 0..3),
        prop::collection::vec(any::<u8>(), 0..80),
        with_content_length,
        any::<bool>(),
    );
    let styles = prop::collection::vec(name_style(), 40);
    (start, identity, lists, extras, styles).prop_flat_map(
        |(start, identity, lists, extras, styles)| {
            let (from, to, call_id, (cseq_number, cseq_method, cseq_lws), max_forwards) = identity;
            let (vias, via_breaks, via_seps, contacts, contact_breaks) = lists;
            let (extensions, expires, user_agent, supported, body, with_cl, content_type) = extras;
            let cseq_method = match &start {
                // A request's CSeq names its method; a response's any method.
                Start::Request { method, .. } => method.clone(),
                Start::Response { .. } => cseq_method,
            };
            let max_forwards = match (&start, max_forwards) {
                (Start::Request { .. }, hops) => Some(hops.unwrap_or(70).max(1)),
                (Start::Response { .. }, hops) => hops,
            };
            let mut styles = styles.into_iter();
            let mut lines = Vec::new();
            let via_values = group(&vias, &via_breaks)
                .into_iter()
                .map(|entries| {
                    let seps = via_seps[..entries.len() - 1].to_vec();
                    Value::Vias(entries, seps)
                })
                .collect();
            lines.extend(list_lines(
                "Via",
                "v",
                HeaderName::Via,
                &mut styles,
                via_values,
            ));
            let contact_values = group(&contacts, &contact_breaks)
                .into_iter()
                .map(|entries| {
                    let seps = via_seps[..entries.len() - 1].to_vec();
                    Value::Contacts(entries, seps)
                })
                .collect();
            lines.extend(list_lines(
                "Contact",
                "m",
                HeaderName::Contact,
                &mut styles,
                contact_values,
            ));
            let mut single = |long: &str, compact: Option<&str>, kind, text: String| {
                let style = styles.next().unwrap();
                Line {
                    name: styled_name(long, compact, style),
                    kind,
                    colon: style.colon,
                    trail: style.trail,
                    value: Value::Text(text),
                }
            };
            lines.push(single("From", Some("f"), HeaderName::From, from.render()));
            lines.push(single("To", Some("t"), HeaderName::To, to.render()));
            lines.push(single(
                "Call-ID",
                Some("i"),
                HeaderName::CallId,
                call_id.clone(),
            ));
            lines.push(single(
                "CSeq",
                None,
                HeaderName::CSeq,
                format!("{cseq_number}{cseq_lws}{cseq_method}"),
            ));
            if let Some(hops) = max_forwards {
                lines.push(single(
                    "Max-Forwards",
                    None,
                    HeaderName::MaxForwards,
                    hops.to_string(),
                ));
            }
            if let Some(expires) = expires {
                lines.push(single(
                    "Expires",
                    None,
                    HeaderName::Expires,
                    expires.to_string(),
                ));
            }
            if let Some(agent) = &user_agent {
                lines.push(single(
                    "User-Agent",
                    None,
                    HeaderName::UserAgent,
                    agent.clone(),
                ));
            }
            if !supported.is_empty() {
                lines.push(single(
                    "Supported",
                    Some("k"),
                    HeaderName::Supported,
                    supported.join(", "),
                ));
            }
            if content_type {
                lines.push(single(
                    "Content-Type",
                    Some("c"),
                    HeaderName::ContentType,
                    "application/sdp".into(),
                ));
            }
            for (name, value) in &extensions {
                lines.push(single(name, None, HeaderName::Other, value.clone()));
            }
            if with_cl {
                lines.push(single(
                    "Content-Length",
                    Some("l"),
                    HeaderName::ContentLength,
                    body.len().to_string(),
                ));
            }
            Just(lines).prop_shuffle().prop_map(move |lines| Generated {
                start: start.clone(),
                lines,
                body: body.clone(),
                from: from.clone(),
                to: to.clone(),
                call_id: call_id.clone(),
                cseq: (cseq_number, cseq_method.clone()),
                max_forwards,
                expires,
                user_agent: user_agent.clone(),
                supported: supported.clone(),
                with_content_length: with_cl,
            })
        },
    )
}

/// One edit of the round-trip property. Indexes are resolved against the message.
#[derive(Debug, Clone)]
enum Op {
    PushVia(ViaSpec),
    PopVia,
    SetViaParam(String, Option<String>),
    RemoveViaParam(&'static str),
    ReplaceRequestUri(UriSpec),
    Insert(PositionSpec, String, String),
    Remove(Index),
    ReplaceValue(Index, String),
    SetBody(Vec<u8>),
}

#[derive(Debug, Clone)]
enum PositionSpec {
    First,
    Last,
    Before(Index),
    After(Index),
}

fn op() -> impl Strategy<Value = Op> {
    let via_param = prop_oneof![
        ip().prop_map(|ip| ("received".to_string(), Some(ip))),
        prop::option::of(1u16..).prop_map(|p| ("rport".to_string(), p.map(|p| p.to_string()))),
        any::<u8>().prop_map(|ttl| ("ttl".to_string(), Some(ttl.to_string()))),
        prop::option::of(TOKEN).prop_map(|v| ("x-sw".to_string(), v)),
    ];
    let position = prop_oneof![
        Just(PositionSpec::First),
        Just(PositionSpec::Last),
        any::<Index>().prop_map(PositionSpec::Before),
        any::<Index>().prop_map(PositionSpec::After),
    ];
    let new_header = prop_oneof![
        3 => (extension_name(), plain_text_value()),
        1 => Just(("Record-Route".to_string(), "<sip:edge.example.com;lr>".to_string())),
        1 => Just(("Subject".to_string(), String::new())),
    ];
    prop_oneof![
        1 => via_spec(&[" ", "\t", "  "]).prop_map(Op::PushVia),
        1 => Just(Op::PopVia),
        1 => via_param.prop_map(|(name, value)| Op::SetViaParam(name, value)),
        1 => prop::sample::select(&["received", "rport", "branch", "ttl", "x-sw"][..])
            .prop_map(Op::RemoveViaParam),
        1 => uri_spec().prop_map(Op::ReplaceRequestUri),
        2 => (position, new_header).prop_map(|(at, (name, value))| Op::Insert(at, name, value)),
        2 => any::<Index>().prop_map(Op::Remove),
        1 => (any::<Index>(), plain_text_value())
            .prop_map(|(at, value)| Op::ReplaceValue(at, value)),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Op::SetBody),
    ]
}

/// What the edited message must hold.
struct Expected {
    headers: Vec<(String, String)>,
    vias: Vec<String>,
    body: Vec<u8>,
    request_uri: Option<String>,
    pushed: Option<ViaSpec>,
    /// Parameters of the Via that was on top once the pop is done: name, and the value
    /// expected (`None`: removed).
    via_params: Vec<(String, Option<Option<String>>)>,
    /// True when no edit removed or garbled what sanity checks.
    sane: bool,
}

/// Applies `ops` to `msg` (parsed from `generated`) through `editor`, and to a model.
fn apply_ops(
    msg: &Message<'_>,
    generated: &Generated,
    ops: &[Op],
    editor: &mut Editor,
) -> Expected {
    let n = msg.header_count();
    assert_eq!(n, generated.lines.len());
    let mut lines = generated.lines.clone();
    let mut inserted: Vec<Vec<Line>> = vec![Vec::new(); n + 1];
    let mut touched = BTreeSet::new();
    let mut removed = BTreeSet::new();
    let mut sane = true;
    let via_ops = ops.iter().any(|op| {
        matches!(
            op,
            Op::PopVia | Op::SetViaParam(..) | Op::RemoveViaParam(..)
        )
    });
    let pop = ops.iter().any(|op| matches!(op, Op::PopVia));
    // Where each Via entry of the original lives: (line, entry).
    let via_coords: Vec<(usize, usize)> = lines
        .iter()
        .enumerate()
        .flat_map(|(i, line)| match &line.value {
            Value::Vias(entries, _) => (0..entries.len()).map(|e| (i, e)).collect(),
            _ => Vec::new(),
        })
        .collect();
    // The Via whose parameters change: the top one once the pop is done.
    let target = via_coords.get(usize::from(pop)).copied();
    let mut param_names = BTreeSet::new();
    let mut via_params = Vec::new();
    let mut pushed: Option<ViaSpec> = None;
    let mut popped = false;
    let mut request_uri = None;
    let mut body = generated.body.clone();
    // Headers that removal and replacement may pick: not Content-Length, and not a Via
    // when Via entries are edited (those edits would overlap).
    let candidates: Vec<usize> = (0..n)
        .filter(|&i| lines[i].kind != HeaderName::ContentLength)
        .filter(|&i| !(via_ops && lines[i].kind == HeaderName::Via))
        .collect();
    let first_via = lines
        .iter()
        .position(|line| line.kind == HeaderName::Via)
        .unwrap();
    for op in ops {
        match op {
            Op::PushVia(spec) if pushed.is_none() => {
                editor.push_via(msg, spec.render().as_bytes()).unwrap();
                inserted[first_via].push(Line {
                    name: "Via".into(),
                    kind: HeaderName::Via,
                    colon: ": ",
                    trail: "",
                    value: Value::Vias(vec![spec.clone()], Vec::new()),
                });
                pushed = Some(spec.clone());
            }
            Op::PopVia if !popped => {
                editor.pop_via(msg).unwrap();
                popped = true;
            }
            Op::SetViaParam(name, value) => {
                let Some((line, entry)) = target else {
                    continue;
                };
                if !param_names.insert(name.clone()) {
                    continue;
                }
                let via = msg.vias().nth(usize::from(pop)).unwrap().unwrap();
                editor
                    .set_param(
                        msg,
                        via.params,
                        name.as_bytes(),
                        value.as_deref().map(str::as_bytes),
                    )
                    .unwrap();
                let Value::Vias(entries, _) = &mut lines[line].value else {
                    unreachable!()
                };
                let params = &mut entries[entry].params;
                match params.iter_mut().find(|(n, _)| n == name) {
                    Some(param) => *param = (name.clone(), value.clone()),
                    None => params.push((name.clone(), value.clone())),
                }
                via_params.push((name.clone(), Some(value.clone())));
            }
            Op::RemoveViaParam(name) => {
                let Some((line, entry)) = target else {
                    continue;
                };
                if !param_names.insert(name.to_string()) {
                    continue;
                }
                let via = msg.vias().nth(usize::from(pop)).unwrap().unwrap();
                editor
                    .remove_param(msg, via.params, name.as_bytes())
                    .unwrap();
                let Value::Vias(entries, _) = &mut lines[line].value else {
                    unreachable!()
                };
                entries[entry].params.retain(|(n, _)| n != name);
                via_params.push((name.to_string(), None));
            }
            Op::ReplaceRequestUri(uri) => match &generated.start {
                Start::Request { .. } if request_uri.is_none() => {
                    editor
                        .replace_request_uri(msg, uri.render().as_bytes())
                        .unwrap();
                    request_uri = Some(uri.render());
                }
                Start::Request { .. } => {}
                Start::Response { .. } => assert_eq!(
                    editor.replace_request_uri(msg, uri.render().as_bytes()),
                    Err(EditError::NotARequest)
                ),
            },
            Op::Insert(at, name, value) => {
                let (position, point) = match at {
                    PositionSpec::First => (Position::First, 0),
                    PositionSpec::Last => (Position::Last, n),
                    PositionSpec::Before(i) => (Position::Before(i.index(n)), i.index(n)),
                    PositionSpec::After(i) => (Position::After(i.index(n)), i.index(n) + 1),
                };
                editor
                    .insert_header(msg, position, name.as_bytes(), value.as_bytes())
                    .unwrap();
                inserted[point].push(Line {
                    name: name.clone(),
                    kind: HeaderName::from_bytes(name.as_bytes()),
                    colon: ": ",
                    trail: "",
                    value: Value::Text(value.clone()),
                });
            }
            Op::Remove(i) if !candidates.is_empty() => {
                let index = candidates[i.index(candidates.len())];
                if touched.insert(index) {
                    editor.remove_header(msg, index).unwrap();
                    removed.insert(index);
                    sane &= lines[index].kind == HeaderName::Other;
                }
            }
            Op::ReplaceValue(i, value) if !candidates.is_empty() => {
                let index = candidates[i.index(candidates.len())];
                // A Via replaced by free text would no longer parse as a Via.
                if lines[index].kind != HeaderName::Via && touched.insert(index) {
                    editor
                        .replace_header_value(msg, index, value.as_bytes())
                        .unwrap();
                    lines[index].value = Value::Text(value.clone());
                    sane &= lines[index].kind == HeaderName::Other;
                }
            }
            Op::SetBody(new_body) => {
                editor.set_body(new_body);
                body = new_body.clone();
            }
            _ => {}
        }
    }
    if popped {
        let Value::Vias(entries, seps) = &mut lines[first_via].value else {
            unreachable!()
        };
        if entries.len() == 1 {
            removed.insert(first_via);
        } else {
            entries.remove(0);
            seps.remove(0);
        }
        // Popping the only Via leaves none, which sanity refuses.
        sane &= pushed.is_some() || via_coords.len() > 1;
    }
    // Content-Length follows the body; finish adds it after everything when absent.
    let length = body.len().to_string();
    for line in &mut lines {
        if line.kind == HeaderName::ContentLength {
            line.value = Value::Text(length.clone());
        }
    }
    if !generated.with_content_length {
        inserted[n].push(Line {
            name: "Content-Length".into(),
            kind: HeaderName::ContentLength,
            colon: ": ",
            value: Value::Text(length),
            trail: "",
        });
    }
    let mut out_lines = Vec::new();
    for (point, new_lines) in inserted.into_iter().enumerate() {
        out_lines.extend(new_lines);
        if point < n && !removed.contains(&point) {
            out_lines.push(lines[point].clone());
        }
    }
    let vias = out_lines
        .iter()
        .flat_map(|line| match &line.value {
            Value::Vias(entries, _) => entries.iter().map(ViaSpec::render).collect(),
            _ => Vec::new(),
        })
        .collect();
    Expected {
        headers: out_lines.iter().map(Line::wire).collect(),
        vias,
        body,
        request_uri,
        pushed,
        via_params,
        sane,
    }
}

fn round_trip_and_edit(generated: &Generated, ops: &[Op]) {
    let bytes = generated.render();
    let msg = Message::parse(&bytes, Framing::Datagram, &Limits::default()).unwrap_or_else(|e| {
        panic!(
            "generated message does not parse ({e}):\n{:?}",
            lossy(&bytes)
        )
    });
    assert_eq!(msg.as_bytes(), &bytes[..]);
    generated.assert_parsed(&msg);
    if generated.with_content_length {
        let stream = Message::parse(&bytes, Framing::Stream, &Limits::default()).unwrap();
        assert_eq!(stream.as_bytes(), &bytes[..]);
    }

    // No edit: the same bytes, plus Content-Length when it was absent.
    let mut editor = Editor::new();
    let mut out = Vec::new();
    editor.finish(&msg, &mut out).unwrap();
    let mut expected = generated.head();
    if !generated.with_content_length {
        expected
            .extend_from_slice(format!("Content-Length: {}\r\n", generated.body.len()).as_bytes());
    }
    expected.extend_from_slice(b"\r\n");
    expected.extend_from_slice(&generated.body);
    assert_eq!(lossy(&out), lossy(&expected));

    // The edits, with the editor reused as a proxy would.
    editor.clear();
    assert!(editor.is_empty());
    let expect = apply_ops(&msg, generated, ops, &mut editor);
    editor.finish(&msg, &mut out).unwrap();
    let edited = Message::parse(&out, Framing::Datagram, &RELAXED)
        .unwrap_or_else(|e| panic!("edited message does not parse ({e}):\n{:?}", lossy(&out)));
    assert_eq!(
        edited.as_bytes().len(),
        out.len(),
        "output is not one message"
    );
    let headers: Vec<(String, String)> = edited
        .headers()
        .map(|h| (lossy(h.raw_name), lossy(h.value)))
        .collect();
    assert_eq!(headers, expect.headers, "headers after edits");
    assert_eq!(edited.body(), &expect.body[..]);
    assert_eq!(edited.content_length(), Some(expect.body.len()));
    let vias: Vec<String> = edited.vias().map(|via| lossy(via.unwrap().raw)).collect();
    assert_eq!(vias, expect.vias, "Via stack after edits");
    if let Some(pushed) = &expect.pushed {
        pushed.assert_parsed(&edited.top_via().unwrap().unwrap());
    }
    if !expect.via_params.is_empty() {
        let target = edited
            .vias()
            .nth(usize::from(expect.pushed.is_some()))
            .unwrap()
            .unwrap();
        for (name, value) in &expect.via_params {
            let got = target.params.get(name.as_bytes()).map(|v| v.map(lossy));
            assert_eq!(&got, value, "Via parameter {name}");
        }
    }
    if let Some(uri) = &expect.request_uri {
        assert_eq!(lossy(edited.request_line().unwrap().uri), *uri);
    }
    if expect.sane {
        assert_eq!(check_sanity(&edited), Ok(()));
    }
    exercise(&edited);

    // Cleared, the reused editor reproduces the message again.
    editor.clear();
    editor.finish(&msg, &mut out).unwrap();
    assert_eq!(out, expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_messages_round_trip_and_edit(
        generated in generated(any::<bool>()),
        ops in prop::collection::vec(op(), 0..8),
    ) {
        round_trip_and_edit(&generated, &ops);
    }

    #[test]
    fn overlapping_edits_are_refused(generated in generated(Just(true)), text in plain_text_value()) {
        let bytes = generated.render();
        let msg = Message::parse(&bytes, Framing::Datagram, &Limits::default()).unwrap();
        let via = msg.top_via().unwrap().unwrap();
        let mut out = Vec::new();
        // Pop the top Via and change a parameter of it: the same bytes, twice.
        let mut editor = Editor::new();
        editor.pop_via(&msg).unwrap();
        editor.set_param(&msg, via.params, b"received", Some(b"192.0.2.1")).unwrap();
        prop_assert_eq!(editor.finish(&msg, &mut out), Err(EditError::Overlap));
        // Remove a header and replace its value.
        let index = msg.headers().position(|h| h.name == HeaderName::CallId).unwrap();
        let mut editor = Editor::new();
        editor.remove_header(&msg, index).unwrap();
        editor.replace_header_value(&msg, index, text.as_bytes()).unwrap();
        prop_assert_eq!(editor.finish(&msg, &mut out), Err(EditError::Overlap));
    }
}

/// Values that break one sanity check or another, for any header.
const BAD_VALUES: &[&str] = &[
    "<sip:a@example.com>;expires=x",
    "<sip:a@example.com>;expires=4294967296",
    "<sip:a@example.com>;tag=1;tag=2",
    "sip:a@example.com;tag=1;TAG=2",
    "\"open <sip:a@example.com>",
    "<sip:a@example.com",
    "<sips:a@[::1>",
    "*",
    "SIP/2.0/UDP 224.0.0.1;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;received=255.255.255.255",
    "SIP/2.0/UDP 192.0.2.1;maddr=ff02::1",
    "SIP/2.0/UDP 0.0.0.0",
    "SIP/3.0/UDP 192.0.2.1",
    "SIP/2.0/UDP 192.0.2.1;ttl=256",
    "2147483648 INVITE",
    "4294967296 INVITE",
    "1 BYE",
    "1",
    "0",
    "256",
    "-1",
    "",
    "100rel, , timer",
    "foo",
    "Digest username=\"a\"",
    "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:a@b\", response=\"0123456789abcdef0123456789abcdef\"",
    "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:a@b\", response=\"0123456789abcdef0123456789abcdef\", qop=auth",
    "Digest username=\"a\", username=\"b\"",
    "Sat, 13 Nov 2010 23:29:00 EST",
    "Sat, 13 Nov 2010 23:29:00 GMT",
];

/// Names of headers that sanity reads, to add with a bad value.
const CHECKED_NAMES: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Contact",
    "Expires",
    "Require",
    "Proxy-Require",
    "Authorization",
    "Proxy-Authorization",
    "Date",
    "t",
    "m",
    "v",
];

fn bad_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(BAD_VALUES).prop_map(String::from),
        1 => "[!-~]{0,12}( [!-~]{1,12})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Messages with some header values replaced by bad ones, and bad headers added:
    /// sanity fails with the error of the first check that fails alone, and the error
    /// names that check (see `check_sanity`).
    #[test]
    fn sanity_names_the_check_that_failed(
        generated in generated(any::<bool>()),
        replaced in prop::collection::vec((any::<Index>(), bad_value()), 0..3),
        added in prop::collection::vec(
            (prop::sample::select(CHECKED_NAMES), bad_value(), any::<Index>()),
            0..3,
        ),
    ) {
        let mut generated = generated;
        let n = generated.lines.len();
        for (at, value) in replaced {
            let line = &mut generated.lines[at.index(n)];
            if line.kind != HeaderName::ContentLength {
                line.value = Value::Text(value);
            }
        }
        for (name, value, at) in added {
            let line = Line {
                name: name.to_string(),
                kind: HeaderName::from_bytes(name.as_bytes()),
                colon: ": ",
                value: Value::Text(value),
                trail: "",
            };
            let at = at.index(generated.lines.len() + 1);
            generated.lines.insert(at, line);
        }
        let bytes = generated.render();
        let msg = Message::parse(&bytes, Framing::Datagram, &Limits::default());
        let msg = msg.unwrap_or_else(|e| panic!("{e}: {:?}", lossy(&bytes)));
        exercise(&msg);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Stream framing
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn framer_cuts_a_chunked_stream_into_the_original_messages(
        messages in prop::collection::vec(generated(Just(true)), 1..4),
        keepalives in prop::collection::vec(
            prop::sample::select(&["", "", "\r\n", "\r\n\r\n", "\n", "\r\n\r\n\r\n"][..]),
            4,
        ),
        chunk_sizes in prop::collection::vec(1usize..80, 1..20),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let keepalive = |stream: &mut Vec<u8>, expected: &mut Vec<Event>, text: &str| {
            if !text.is_empty() {
                stream.extend_from_slice(text.as_bytes());
                expected.push(Event::KeepAlive(text.len()));
            }
        };
        for (i, generated) in messages.iter().enumerate() {
            keepalive(&mut stream, &mut expected, keepalives[i]);
            let bytes = generated.render();
            stream.extend_from_slice(&bytes);
            expected.push(Event::Message(bytes));
        }
        keepalive(&mut stream, &mut expected, keepalives[messages.len()]);
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        for size in chunk_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        let (events, left) = drive_framer(chunks, &Limits::default());
        prop_assert_eq!(left, 0);
        prop_assert_eq!(events, expected);
        // And each frame parses into what was generated.
        let mut rest = &stream[..];
        let mut framer = StreamFramer::new();
        let mut seen = 0;
        while !rest.is_empty() {
            match framer.next_frame(rest, &Limits::default()).unwrap() {
                Frame::KeepAlive(n) => rest = &rest[n..],
                Frame::Message(n) => {
                    let msg = Message::parse(&rest[..n], Framing::Stream, &Limits::default()).unwrap();
                    messages[seen].assert_parsed(&msg);
                    seen += 1;
                    rest = &rest[n..];
                }
                Frame::Partial => prop_assert!(false, "complete stream reported partial"),
            }
        }
        prop_assert_eq!(seen, messages.len());
    }
}

// ---------------------------------------------------------------------------------------
// 4. Header injection
// ---------------------------------------------------------------------------------------

/// Random text holding at least one CR, LF or NUL.
fn injected_text() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(
            (
                any::<Index>(),
                prop::sample::select(&[b'\r', b'\n', 0u8][..]),
            ),
            1..4,
        ),
    )
        .prop_map(|(mut text, bad)| {
            for (at, byte) in bad {
                let pos = at.index(text.len() + 1);
                text.insert(pos, byte);
            }
            text
        })
}

const INJECTION_TARGET: &[u8] = b"INVITE sip:bob@example.com;lr SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport\r\nFrom: <sip:a@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-Note: hello\r\n\
Content-Length: 0\r\n\r\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn editor_refuses_line_breaks_and_nul(text in injected_text()) {
        let msg = Message::parse(INJECTION_TARGET, Framing::Datagram, &Limits::default()).unwrap();
        let via = msg.top_via().unwrap().unwrap();
        let note = msg.headers_by_raw_name(b"x-note").next().unwrap();
        let mut editor = Editor::new();
        let bad = Err(EditError::BadText);
        prop_assert_eq!(editor.replace(&msg, note.value, &text), bad);
        prop_assert_eq!(editor.insert_before(&msg, note.value, &text), bad);
        prop_assert_eq!(editor.insert_after(&msg, note.value, &text), bad);
        prop_assert_eq!(editor.replace_request_uri(&msg, &text), bad);
        prop_assert_eq!(editor.replace_header_value(&msg, note.index, &text), bad);
        prop_assert_eq!(editor.push_via(&msg, &text), bad);
        prop_assert_eq!(editor.set_param(&msg, via.params, b"received", Some(&text)), bad);
        prop_assert_eq!(editor.set_param(&msg, via.params, &text, None), bad);
        for position in [Position::First, Position::Last, Position::Before(1), Position::After(1)] {
            prop_assert_eq!(editor.insert_header(&msg, position, b"X-New", &text), bad);
            prop_assert_eq!(
                editor.insert_header(&msg, position, &text, b"v"),
                Err(EditError::BadHeaderName)
            );
        }
        // Nothing was recorded: the message comes out as it went in.
        prop_assert!(editor.is_empty());
        let mut out = Vec::new();
        editor.finish(&msg, &mut out).unwrap();
        prop_assert_eq!(&out[..], INJECTION_TARGET);

        // The same text without those bytes is accepted, and adds no line.
        let clean: Vec<u8> = text.iter().copied().filter(|b| !b"\r\n\0".contains(b)).collect();
        let mut editor = Editor::new();
        prop_assert_eq!(editor.replace(&msg, note.value, &clean), Ok(()));
        editor.finish(&msg, &mut out).unwrap();
        let edited = Message::parse(&out, Framing::Datagram, &Limits::default()).unwrap();
        prop_assert_eq!(edited.header_count(), msg.header_count());
        let start = clean.iter().position(|b| !b" \t".contains(b)).unwrap_or(clean.len());
        let end = clean.iter().rposition(|b| !b" \t".contains(b)).map_or(start, |i| i + 1);
        let trimmed = &clean[start..end];
        let value = edited.headers_by_raw_name(b"X-Note").next().unwrap().value;
        prop_assert_eq!(value, trimmed);
    }
}

// ---------------------------------------------------------------------------------------
// Regression tests of bugs these properties found in sipwall-sip
// ---------------------------------------------------------------------------------------

/// `Editor::remove_header` once cut a header only up to the first line end after its
/// trimmed value. A folded continuation line holding only white space stays behind and becomes
/// a continuation of whatever precedes it; after the start line, that makes the message
/// unparseable. `pop_via` (single-entry Via) and `insert_header(Position::After(i))` use
/// the same end; see the next two tests.
#[test]
fn regression_remove_header_leaves_a_blank_continuation_line() {
    let input = b"OPTIONS sip:a@b SIP/2.0\r\nX: a\r\n \r\nContent-Length: 0\r\n\r\n";
    let msg = Message::parse(input, Framing::Datagram, &Limits::default()).unwrap();
    let mut editor = Editor::new();
    editor.remove_header(&msg, 0).unwrap();
    let mut out = Vec::new();
    editor.finish(&msg, &mut out).unwrap();
    let edited = Message::parse(&out, Framing::Datagram, &Limits::default());
    assert_eq!(edited.map(|m| m.header_count()), Ok(1), "{:?}", lossy(&out));
}

#[test]
fn regression_pop_via_leaves_a_blank_continuation_line() {
    let input = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\t\r\n\
Via: SIP/2.0/UDP g;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n\
Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let msg = Message::parse(input, Framing::Datagram, &Limits::default()).unwrap();
    let mut editor = Editor::new();
    editor.pop_via(&msg).unwrap();
    let mut out = Vec::new();
    editor.finish(&msg, &mut out).unwrap();
    let edited = Message::parse(&out, Framing::Datagram, &Limits::default());
    assert_eq!(edited.map(|m| m.header_count()), Ok(6), "{:?}", lossy(&out));
}

#[test]
fn regression_insert_after_lands_inside_the_folded_header() {
    let input = b"OPTIONS sip:a@b SIP/2.0\r\nX: a\r\n \r\n\r\n";
    let msg = Message::parse(input, Framing::Datagram, &Limits::default()).unwrap();
    let mut editor = Editor::new();
    editor
        .insert_header(&msg, Position::Last, b"Y", b"1")
        .unwrap();
    editor
        .insert_header(&msg, Position::After(0), b"Z", b"2")
        .unwrap();
    let mut out = Vec::new();
    editor.finish(&msg, &mut out).unwrap();
    // After(0) and Last are the same point here; insertions there keep their order.
    let edited = Message::parse(&out, Framing::Datagram, &Limits::default()).unwrap();
    let names: Vec<_> = edited.headers().map(|h| lossy(h.raw_name)).collect();
    assert_eq!(
        names,
        ["X", "Y", "Z", "Content-Length"],
        "{:?}",
        lossy(&out)
    );
}

/// `SanityError::check` once named `Check::Uris` for a Contact whose `expires` parameter is
/// not delta-seconds, but the check that fails is `Check::Expires` (disabling `Uris`
/// does not make the error go away; disabling `Expires` does).
#[test]
fn regression_sanity_blames_uris_for_a_bad_contact_expires() {
    let input = b"REGISTER sip:b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:a@c>;expires=x\r\nContent-Length: 0\r\n\r\n";
    let msg = Message::parse(input, Framing::Datagram, &Limits::default()).unwrap();
    let error = Sanity::new().check(&msg).unwrap_err();
    assert_eq!(only(Check::Expires).check(&msg).map(|_| ()), Err(error));
    assert_eq!(error.check(), Check::Expires, "{error:?}");
}
