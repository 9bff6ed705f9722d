//! RFC 4475 torture tests: every vector of the RFC, with the outcome sipwall decides for
//! an edge proxy written beside it.
//!
//! - `valid` vectors (§3.1.1) must parse and pass sanity.
//! - `invalid` vectors (§3.1.2) must be rejected by the parser or by sanity, and the test
//!   names the exact rule that rejects each one.
//! - `semantic` vectors (§3.2–3.4) parse; the edge either forwards them (sanity passes)
//!   or refuses them with the status given here. The reasons are in the table.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use sipwall_sip::{
    Contact, FieldError, Framing, HeaderName, Host, Limits, Message, ParseError, Sanity,
    SanityError, Scheme, UriError,
};

/// What must happen to one vector.
enum Expect {
    /// Parses and passes every sanity check: an edge forwards it.
    Forward,
    /// The parser refuses it with this error: never forwarded (answered 400 where the
    /// message can be answered, otherwise dropped).
    ParseError(ParseError),
    /// Parses, but sanity refuses it with this error; the edge answers with
    /// `SanityError::status_code` (or drops it if it is a response).
    Refuse(SanityError, u16),
}

use Expect::*;

fn field(header: HeaderName, error: FieldError) -> SanityError {
    SanityError::Header { header, error }
}

/// Every vector and its outcome. Reasons for each decision follow the RFC section.
fn expectations() -> Vec<(&'static str, Expect)> {
    vec![
        // 3.1.1 valid: all forwarded.
        ("wsinv.dat", Forward),
        ("intmeth.dat", Forward),
        ("esc01.dat", Forward),
        ("escnull.dat", Forward),
        ("esc02.dat", Forward),
        ("lwsdisp.dat", Forward),
        ("longreq.dat", Forward),
        // Only the first message of the datagram counts; the rest is ignored.
        ("dblreq.dat", Forward),
        ("semiuri.dat", Forward),
        ("transports.dat", Forward),
        ("mpart01.dat", Forward),
        ("unreason.dat", Forward),
        ("noreason.dat", Forward),
        // 3.1.2 invalid.
        // Empty Via and Contact parameters (`;;,;,,`).
        (
            "badinv01.dat",
            Refuse(field(HeaderName::Via, FieldError::BadParam), 400),
        ),
        (
            "clerr.dat",
            ParseError(ParseError::BodyTruncated {
                declared: 9999,
                available: 154,
            }),
        ),
        ("ncl.dat", ParseError(ParseError::BadContentLength)),
        // CSeq above 2**32 (Max-Forwards 300 and the huge Expires would fail next).
        (
            "scalar02.dat",
            Refuse(field(HeaderName::CSeq, FieldError::OutOfRange), 400),
        ),
        (
            "scalarlg.dat",
            Refuse(field(HeaderName::CSeq, FieldError::OutOfRange), 400),
        ),
        (
            "quotbal.dat",
            Refuse(field(HeaderName::To, FieldError::UnterminatedQuote), 400),
        ),
        ("ltgtruri.dat", ParseError(ParseError::BadRequestUri)),
        // `sip:user@example.com; lr` splits the line in four: the version is wrong.
        ("lwsruri.dat", ParseError(ParseError::BadVersion)),
        // Two spaces after the method leave an empty Request-URI.
        ("lwsstart.dat", ParseError(ParseError::BadRequestUri)),
        ("trws.dat", ParseError(ParseError::BadVersion)),
        ("escruri.dat", Refuse(SanityError::RequestUriHeaders, 400)),
        (
            "baddate.dat",
            Refuse(field(HeaderName::Date, FieldError::BadDate), 400),
        ),
        (
            "regbadct.dat",
            Refuse(field(HeaderName::Contact, FieldError::UnbracketedUri), 400),
        ),
        (
            "badaspec.dat",
            Refuse(field(HeaderName::To, FieldError::SpaceInAngle), 400),
        ),
        // Unquoted comma in a display name. The message also lacks the empty line that
        // ends the headers, which the parser refuses first.
        ("baddn.dat", ParseError(ParseError::UnterminatedHeaders)),
        ("badvers.dat", Refuse(SanityError::UnsupportedVersion, 505)),
        ("mismatch01.dat", Refuse(SanityError::CSeqMethod, 400)),
        ("mismatch02.dat", Refuse(SanityError::CSeqMethod, 400)),
        ("bigcode.dat", ParseError(ParseError::BadStatusCode)),
        // 3.2.1: branch is just the magic cookie. An edge proxy is stateless and derives
        // its own branch from the request, so it forwards; the UAS deals with matching.
        ("badbranch.dat", Forward),
        // 3.3.1: no To, From, Call-ID: refused with 400 as the RFC asks.
        (
            "insuf.dat",
            Refuse(SanityError::MissingHeader(HeaderName::To), 400),
        ),
        // 3.3.2, 3.3.3: the edge fronts a SIP server: any scheme but sip, sips and tel in
        // the Request-URI is answered 416 (Unsupported URI Scheme).
        ("unkscm.dat", Refuse(SanityError::UnsupportedUriScheme, 416)),
        (
            "novelsc.dat",
            Refuse(SanityError::UnsupportedUriScheme, 416),
        ),
        // 3.3.4: unknown schemes in To/From/Contact are opaque data to a proxy: forwarded.
        ("unksm2.dat", Forward),
        // 3.3.5: Proxy-Require names extensions no proxy supports: 420 Bad Extension.
        // (Require is for the UAS; a proxy ignores it.)
        ("bext01.dat", Refuse(SanityError::BadExtension, 420)),
        // 3.3.6: an unknown Content-Type is for the UAS to refuse (415): forwarded.
        ("invut.dat", Forward),
        // 3.3.7: an unknown authorization scheme is for the registrar to reject: forwarded.
        ("regaut01.dat", Forward),
        // 3.3.8: two To, From, Call-ID, CSeq: refused with 400.
        (
            "multi01.dat",
            Refuse(SanityError::DuplicateHeader(HeaderName::To), 400),
        ),
        // 3.3.9: two Content-Length values frame two different bodies (a smuggling
        // vector): the parser refuses the message.
        ("mcl01.dat", ParseError(ParseError::DuplicateContentLength)),
        // 3.3.10: a response whose Via points at 255.255.255.255 is dropped, never sent.
        ("bcast.dat", Refuse(SanityError::ViaBroadcast, 400)),
        // 3.3.11: Max-Forwards 0 on an OPTIONS: 483 Too Many Hops (the edge does not
        // answer OPTIONS for the server behind it).
        ("zeromf.dat", Refuse(SanityError::TooManyHops, 483)),
        // 3.3.12, 3.3.13: contact and URI parameters are the registrar's business:
        // forwarded, each parameter where it belongs (checked below).
        ("cparam01.dat", Forward),
        ("cparam02.dat", Forward),
        // 3.3.14: an escaped Route header in a Contact URI is legal; forwarded, and the
        // headers part stays visible to policy (checked below).
        ("regescrt.dat", Forward),
        // 3.3.15: Accept negotiation is between the UAs: forwarded.
        ("sdp01.dat", Forward),
        // 3.4.1: RFC 2543 syntax (no branch, no Max-Forwards, no Content-Length over UDP):
        // a lenient element accepts it, and an edge in front of old gateways must.
        ("inv2543.dat", Forward),
    ]
}

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475"))
}

fn parse(bytes: &[u8]) -> Result<Message<'_>, ParseError> {
    Message::parse(bytes, Framing::Datagram, &Limits::default())
}

#[test]
fn every_vector_of_the_manifest_has_an_expectation() {
    let manifest = std::fs::read_to_string(data_dir().join("MANIFEST.tsv")).unwrap();
    let listed: BTreeSet<&str> = manifest
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split('\t').next().unwrap())
        .collect();
    let expected: BTreeSet<&str> = expectations().iter().map(|(name, _)| *name).collect();
    assert_eq!(listed.len(), 49);
    assert_eq!(listed, expected);
}

#[test]
fn every_vector_gets_its_decided_outcome() {
    let sanity = Sanity::new();
    let mut failures = Vec::new();
    for (name, expect) in expectations() {
        let bytes = std::fs::read(data_dir().join(name)).unwrap();
        let outcome = parse(&bytes).map(|msg| sanity.check(&msg).map(|_| ()));
        let ok = match (&expect, &outcome) {
            (Forward, Ok(Ok(()))) => true,
            (ParseError(want), Err(got)) => want == got,
            (Refuse(want, status), Ok(Err(got))) => want == got && got.status_code() == *status,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: got {outcome:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn datagram_with_two_messages_keeps_only_the_first() {
    let bytes = std::fs::read(data_dir().join("dblreq.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    assert_eq!(msg.body(), b"");
    assert!(msg.as_bytes().len() < bytes.len());
    assert_eq!(
        msg.call_id(),
        Some(&b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"[..])
    );
}

#[test]
fn tortuous_invite_reads_correctly() {
    let bytes = std::fs::read(data_dir().join("wsinv.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    assert_eq!(msg.max_forwards(), Some(Ok(68)));
    let cseq = msg.cseq().unwrap().unwrap();
    assert_eq!(cseq.number, 9);
    let vias: Vec<_> = msg.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some(&b"390skdjuw"[..]));
    assert_eq!(vias[1].transport, b"TCP");
    assert_eq!(vias[1].host_raw, b"spindle.example.com");
    assert_eq!(vias[2].branch(), Some(&b"z9hG4bK30239"[..]));
    assert_eq!(msg.to().unwrap().unwrap().tag(), Some(&b"1918181833n"[..]));
    assert_eq!(msg.from().unwrap().unwrap().tag(), Some(&b"98asjd8"[..]));
    let contacts: Vec<_> = msg.contacts().map(Result::unwrap).collect();
    let Contact::Address(contact) = contacts[0] else {
        panic!("expected an address");
    };
    assert_eq!(contact.params.get(b"q"), Some(Some(&b"0.33"[..])));
    assert_eq!(
        contact.params.get(b"newparam"),
        Some(Some(&b"newvalue"[..]))
    );
    assert_eq!(msg.header(HeaderName::Subject).unwrap().value, b"");
    let unknown = msg.headers_by_raw_name(b"newfangledheader").next().unwrap();
    assert_eq!(
        unknown.value,
        b"newfangled value\r\n continued newfangled value"
    );
    assert_eq!(msg.body().len(), 150);
}

#[test]
fn escaped_uris_keep_escapes_and_decode_on_demand() {
    let bytes = std::fs::read(data_dir().join("esc01.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let ruri = msg.request_uri().unwrap().unwrap();
    assert!(sipwall_sip::eq_unescaped(
        ruri.user.unwrap(),
        b"sips:user@example.com"
    ));
    let to = msg.to().unwrap().unwrap();
    assert!(sipwall_sip::eq_unescaped(to.uri.user.unwrap(), b"user"));

    let bytes = std::fs::read(data_dir().join("escnull.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let users: Vec<Vec<u8>> = msg
        .contacts()
        .map(|contact| match contact.unwrap() {
            Contact::Address(addr) => sipwall_sip::unescape(addr.uri.user.unwrap()).collect(),
            Contact::Star => unreachable!(),
        })
        .collect();
    assert_eq!(users, vec![vec![0u8], vec![0u8, 0u8]]);
}

#[test]
fn unusual_method_and_uri_are_kept_verbatim() {
    let bytes = std::fs::read(data_dir().join("intmeth.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let method = msg.method().unwrap();
    assert_eq!(
        method.as_bytes(),
        b"!interesting-Method0123456789_*+`.%indeed'~"
    );
    let uri = msg.request_uri().unwrap().unwrap();
    assert_eq!(uri.host, Host::Name(b"example.com"));
    assert_eq!(
        uri.password,
        Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
    );
}

#[test]
fn contact_parameters_land_where_they_belong() {
    // cparam01: without brackets, `;unknownparam` is a header parameter.
    let bytes = std::fs::read(data_dir().join("cparam01.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let Some(Ok(Contact::Address(addr))) = msg.contacts().next() else {
        panic!("expected a contact");
    };
    assert!(addr.params.contains(b"unknownparam"));
    assert!(addr.uri.params.is_empty());
    // cparam02: inside brackets, it is a URI parameter.
    let bytes = std::fs::read(data_dir().join("cparam02.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let Some(Ok(Contact::Address(addr))) = msg.contacts().next() else {
        panic!("expected a contact");
    };
    assert!(addr.uri.params.contains(b"unknownparam"));
    assert!(addr.params.is_empty());
    // regescrt: the escaped Route stays in the URI's headers part, visible to policy.
    let bytes = std::fs::read(data_dir().join("regescrt.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let Some(Ok(Contact::Address(addr))) = msg.contacts().next() else {
        panic!("expected a contact");
    };
    assert_eq!(
        addr.uri.headers,
        Some(&b"Route=%3Csip:sip.example.com%3E"[..])
    );
}

#[test]
fn unknown_schemes_in_headers_are_opaque() {
    let bytes = std::fs::read(data_dir().join("unksm2.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    assert_eq!(
        msg.to().unwrap().unwrap().uri.scheme,
        Scheme::Other(b"isbn")
    );
    assert_eq!(
        msg.from().unwrap().unwrap().uri.scheme,
        Scheme::Other(b"http")
    );
}

#[test]
fn unsupported_proxy_require_tags_are_listed_for_the_420() {
    let bytes = std::fs::read(data_dir().join("bext01.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let sanity = Sanity::new();
    let tags: Vec<&[u8]> = sanity.unsupported_proxy_require(&msg).collect();
    assert_eq!(
        tags,
        vec![&b"noProxiesSupportThis"[..], b"norDoAnyProxiesSupportThis"]
    );
    let tolerant = Sanity::new()
        .with_proxy_supported(b"noproxiessupportthis")
        .with_proxy_supported(b"NORDOANYPROXIESSUPPORTTHIS");
    assert!(tolerant.check(&msg).is_ok());
}

#[test]
fn overlarge_scalars_each_fail_their_own_check() {
    let bytes = std::fs::read(data_dir().join("scalar02.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    assert_eq!(msg.max_forwards(), Some(Err(FieldError::OutOfRange)));
    assert_eq!(msg.expires(), Some(Err(FieldError::OutOfRange)));
    let Some(Ok(contact)) = msg.contacts().next() else {
        panic!("expected a contact");
    };
    assert_eq!(contact.expires(), Some(Err(FieldError::OutOfRange)));
}

#[test]
fn display_name_with_comma_is_refused_even_with_terminated_headers() {
    let mut bytes = std::fs::read(data_dir().join("baddn.dat")).unwrap();
    bytes.extend_from_slice(b"\r\n");
    let msg = parse(&bytes).unwrap();
    assert_eq!(
        Sanity::new().check(&msg).map(|_| ()),
        Err(field(HeaderName::From, FieldError::BadDisplayName))
    );
}

#[test]
fn unknown_scheme_request_uri_is_typed() {
    let bytes = std::fs::read(data_dir().join("novelsc.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    let uri = msg.request_uri().unwrap().unwrap();
    assert_eq!(uri.scheme, Scheme::Other(b"soap.beep"));
    let bytes = std::fs::read(data_dir().join("escruri.dat")).unwrap();
    let msg = parse(&bytes).unwrap();
    assert!(msg.request_uri().unwrap().unwrap().headers.is_some());
    assert_ne!(msg.request_uri(), Some(Err(UriError::Empty)));
}
