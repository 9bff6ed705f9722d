//! Typed accessors: the header values that policy and routing read, parsed on demand.
//!
//! Nothing here runs unless asked for, and nothing allocates: every parsed part is a
//! slice of the message. Accessors return `None` when the header is absent and
//! `Some(Err(_))` when it is present but malformed, with the rule that failed.

use std::net::IpAddr;

use crate::chars::{
    HOST, find_byte, is_lws, is_token, parse_u32, parse_u64, run_end, trim_lws, trim_lws_start,
};
use crate::error::{FieldError, UriError};
use crate::message::{Message, split_list};
use crate::name::{HeaderName, Method};
use crate::params::{Params, quoted_string_len, quoted_value_len, unquote};
use crate::uri::{Host, Uri, parse_ipv6};

/// A `name-addr` or `addr-spec` with header parameters: the value of From, To, Contact,
/// Route, Record-Route, Path and Refer-To.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written (quoted strings keep their quotes and escapes).
    pub display_name: Option<&'a [u8]>,
    /// The URI.
    pub uri: Uri<'a>,
    /// Header parameters after the URI (`;tag=…`, `;expires=…`).
    pub params: Params<'a>,
    /// True if the URI was enclosed in `<` and `>`.
    pub bracketed: bool,
    /// The first `tag` parameter, read while validating.
    tag: Option<&'a [u8]>,
    /// How many `tag` parameters there are (more than one is malformed).
    tag_count: u8,
}

impl<'a> NameAddr<'a> {
    /// Parses a name-addr or addr-spec, refusing URIs longer than `max_uri_length`.
    pub fn parse(value: &'a [u8], max_uri_length: usize) -> Result<Self, FieldError> {
        let v = trim_lws(value);
        if v.is_empty() {
            return Err(FieldError::Empty);
        }
        let (display_name, angled) = if v[0] == b'"' {
            let len = quoted_string_len(v).ok_or(FieldError::UnterminatedQuote)?;
            let rest = trim_lws_start(&v[len..]);
            if rest.first() != Some(&b'<') {
                return Err(FieldError::BadDisplayName);
            }
            (Some(&v[..len]), Some(rest))
        } else {
            match crate::chars::find_unquoted(v, b'<') {
                Some(i) => {
                    let display = trim_lws(&v[..i]);
                    if !display.iter().all(|&b| is_token(b) || is_lws(b)) {
                        return Err(FieldError::BadDisplayName);
                    }
                    ((!display.is_empty()).then_some(display), Some(&v[i..]))
                }
                None => (None, None),
            }
        };
        let (uri_raw, after, bracketed) = match angled {
            Some(rest) => {
                let close = find_byte(rest, b'>').ok_or(FieldError::UnclosedAngle)?;
                let inner = &rest[1..close];
                if inner.first().is_some_and(|&b| is_lws(b))
                    || inner.last().is_some_and(|&b| is_lws(b))
                {
                    return Err(FieldError::SpaceInAngle);
                }
                (inner, &rest[close + 1..], true)
            }
            None => {
                // addr-spec: the URI ends at the first ';' or white space, and must not
                // need brackets (RFC 3261 §20.10).
                let end = v
                    .iter()
                    .position(|&b| b == b';' || is_lws(b))
                    .unwrap_or(v.len());
                let uri_raw = &v[..end];
                if uri_raw.iter().any(|&b| b == b'?' || b == b',') {
                    return Err(FieldError::UnbracketedUri);
                }
                (uri_raw, &v[end..], false)
            }
        };
        // Built first and its URI parsed in place, so that the URI is not copied.
        let mut addr = NameAddr {
            display_name,
            uri: Uri::unparsed(uri_raw),
            params: Params::empty_at(&after[..0]),
            bracketed,
            tag: None,
            tag_count: 0,
        };
        addr.uri.parse_in_place(max_uri_length)?;
        addr.params = header_params(after)?;
        for param in addr.params.iter() {
            param.validate()?;
            if param.name.len() == 3 && param.name.eq_ignore_ascii_case(b"tag") {
                addr.tag_count = addr.tag_count.saturating_add(1);
                addr.tag = addr.tag.or(param.value);
            }
        }
        Ok(addr)
    }

    /// The `tag` parameter (From and To).
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.tag
    }

    /// How many `tag` parameters the value carries (sanity refuses more than one).
    pub fn tag_count(&self) -> usize {
        usize::from(self.tag_count)
    }
}

/// Splits off what follows a URI or sent-by: nothing, or header parameters (not yet
/// validated: each caller validates them in the same pass that reads the ones it needs).
fn header_params(after: &[u8]) -> Result<Params<'_>, FieldError> {
    let rest = trim_lws_start(after);
    if rest.is_empty() {
        return Ok(Params::empty_at(&after[after.len()..]));
    }
    if rest[0] != b';' {
        return Err(FieldError::TrailingGarbage);
    }
    Ok(Params::new(rest))
}

/// One Contact entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Contacts are short-lived values on the stack; boxing the address would allocate.
#[allow(clippy::large_enum_variant)]
pub enum Contact<'a> {
    /// `Contact: *`, which removes all bindings in a REGISTER.
    Star,
    /// A contact address.
    Address(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// The `expires` parameter, if present and valid.
    pub fn expires(&self) -> Option<Result<u32, FieldError>> {
        match self {
            Contact::Star => None,
            Contact::Address(addr) => addr.params.get(b"expires").map(|value| {
                value
                    .ok_or(FieldError::BadNumber)
                    .and_then(parse_delta_seconds)
            }),
        }
    }
}

/// `rport` of a Via (RFC 3581).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// No rport parameter.
    Absent,
    /// `;rport` without value: the client asks for symmetric response routing.
    Requested,
    /// `;rport=N`, as stamped by the server that received the request.
    Value(u16),
}

/// One Via entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// The whole entry.
    pub raw: &'a [u8],
    /// Protocol name, `SIP`.
    pub protocol: &'a [u8],
    /// Protocol version, `2.0`.
    pub version: &'a [u8],
    /// Transport, such as `UDP`, `TCP`, `TLS`, `WS` (any token).
    pub transport: &'a [u8],
    /// The host of sent-by.
    pub host: Host<'a>,
    /// The host of sent-by as written.
    pub host_raw: &'a [u8],
    /// The port of sent-by.
    pub port: Option<u16>,
    /// The parameters.
    pub params: Params<'a>,
    /// The parameters routing reads, found in the validating pass.
    branch: Option<&'a [u8]>,
    received: Option<IpAddr>,
    rport: Rport,
    maddr: Option<&'a [u8]>,
}

impl<'a> Via<'a> {
    /// Parses one Via entry (`SIP/2.0/UDP host:port;params`).
    pub fn parse(raw: &'a [u8]) -> Result<Self, FieldError> {
        let v = trim_lws(raw);
        if v.is_empty() {
            return Err(FieldError::Empty);
        }
        let mut cursor = Cursor { s: v, pos: 0 };
        // Nearly every Via starts with exactly this, which the general steps below would
        // read as the same protocol and version.
        let (protocol, version) = if v.starts_with(b"SIP/2.0/") {
            cursor.pos = 8;
            cursor.skip_lws();
            (&v[..3], &v[4..7])
        } else {
            let protocol = cursor.token().ok_or(FieldError::BadProtocol)?;
            cursor.skip_lws();
            cursor.expect(b'/').ok_or(FieldError::BadProtocol)?;
            cursor.skip_lws();
            let version = cursor.token().ok_or(FieldError::BadProtocol)?;
            cursor.skip_lws();
            cursor.expect(b'/').ok_or(FieldError::BadProtocol)?;
            cursor.skip_lws();
            (protocol, version)
        };
        let transport = cursor.token().ok_or(FieldError::BadProtocol)?;
        if cursor.skip_lws() == 0 {
            return Err(FieldError::BadSentBy);
        }
        let rest = &v[cursor.pos..];
        let host_len = if rest.first() == Some(&b'[') {
            memchr::memchr(b']', rest).ok_or(FieldError::BadSentBy)? + 1
        } else {
            run_end(rest, 0, &HOST)
        };
        let host_raw = &rest[..host_len];
        let host = if host_raw.first() == Some(&b'[') {
            Host::parse(host_raw)
        } else {
            Host::from_host_chars(host_raw)
        }
        .ok_or(FieldError::BadSentBy)?;
        cursor.pos += host_len;
        cursor.skip_lws();
        let mut port = None;
        if cursor.expect(b':').is_some() {
            cursor.skip_lws();
            let digits = cursor.take_while(|b| b.is_ascii_digit());
            let value = parse_u32(digits).ok_or(FieldError::BadSentBy)?;
            port = Some(u16::try_from(value).map_err(|_| FieldError::BadSentBy)?);
        }
        let params = header_params(&v[cursor.pos..])?;
        let mut via = Via {
            raw: v,
            protocol,
            version,
            transport,
            host,
            host_raw,
            port,
            params,
            branch: None,
            received: None,
            rport: Rport::Absent,
            maddr: None,
        };
        via.read_params()?;
        Ok(via)
    }

    /// Validates every parameter and reads those routing trusts: branch (once, with a
    /// value), received (an IP address), rport (empty or a port), ttl, maddr.
    fn read_params(&mut self) -> Result<(), FieldError> {
        for param in self.params.iter() {
            param.validate()?;
            let name = param.name;
            // Dispatch on the length first: most parameters are none of these.
            match name.len() {
                6 if name.eq_ignore_ascii_case(b"branch") => {
                    if self.branch.is_some() || param.value.is_none() {
                        return Err(FieldError::BadParam);
                    }
                    self.branch = param.value;
                }
                8 if name.eq_ignore_ascii_case(b"received") => {
                    let ip = param.value.and_then(parse_ip).ok_or(FieldError::BadParam)?;
                    self.received = Some(ip);
                }
                5 if name.eq_ignore_ascii_case(b"rport") => {
                    self.rport = match param.value {
                        None => Rport::Requested,
                        Some(value) => Rport::Value(
                            parse_u32(value)
                                .and_then(|n| u16::try_from(n).ok())
                                .ok_or(FieldError::BadParam)?,
                        ),
                    };
                }
                5 if name.eq_ignore_ascii_case(b"maddr") => self.maddr = param.value,
                3 if name.eq_ignore_ascii_case(b"ttl") => {
                    param
                        .value
                        .and_then(parse_u32)
                        .filter(|&ttl| ttl <= 255)
                        .ok_or(FieldError::BadParam)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The branch parameter, the transaction identifier.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.branch
    }

    /// The received parameter, already checked to be an IP address.
    pub fn received(&self) -> Option<IpAddr> {
        self.received
    }

    /// The rport parameter.
    pub fn rport(&self) -> Rport {
        self.rport
    }

    /// The maddr parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.maddr
    }
}

/// An IP address as written in `received` or `maddr` (IPv6 with or without brackets).
pub fn parse_ip(raw: &[u8]) -> Option<IpAddr> {
    if let Some(inner) = raw.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
        return parse_ipv6(inner).map(IpAddr::V6);
    }
    if raw.len() > 45 {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// The CSeq header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number (RFC 3261 requires it below 2**31; sanity checks that).
    pub number: u32,
    /// The method.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// Parses `number method`.
    pub fn parse(value: &'a [u8]) -> Result<Self, FieldError> {
        let v = trim_lws(value);
        let mut cursor = Cursor { s: v, pos: 0 };
        let digits = cursor.take_while(|b| b.is_ascii_digit());
        let number = parse_number(digits)?;
        if cursor.skip_lws() == 0 {
            return Err(FieldError::BadToken);
        }
        let method = cursor.token().ok_or(FieldError::BadToken)?;
        if cursor.pos != v.len() {
            return Err(FieldError::TrailingGarbage);
        }
        Ok(CSeq {
            number,
            method: Method::from_bytes(method),
        })
    }
}

/// Parses a decimal u32, telling "too large" apart from "not a number".
fn parse_number(digits: &[u8]) -> Result<u32, FieldError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FieldError::BadNumber);
    }
    // Nine digits cannot overflow a u32: no checked arithmetic needed.
    if digits.len() <= 9 {
        return Ok(digits.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0')));
    }
    parse_u32(digits).ok_or(FieldError::OutOfRange)
}

/// `delta-seconds` (Expires, Contact expires): at most 2**32-1.
fn parse_delta_seconds(value: &[u8]) -> Result<u32, FieldError> {
    parse_number(trim_lws(value))
}

/// Credentials of an Authorization or Proxy-Authorization header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The scheme, such as `Digest`.
    pub scheme: &'a [u8],
    /// Everything after the scheme.
    pub params: &'a [u8],
    /// The digest fields, when the scheme is Digest.
    pub digest: Option<DigestFields<'a>>,
}

/// The fields of Digest credentials or a Digest challenge (RFC 3261 §25, RFC 7616).
/// Values are unquoted but keep backslash escapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each field is the parameter of the same name
pub struct DigestFields<'a> {
    pub username: Option<&'a [u8]>,
    pub realm: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
    pub uri: Option<&'a [u8]>,
    pub response: Option<&'a [u8]>,
    pub algorithm: Option<&'a [u8]>,
    pub cnonce: Option<&'a [u8]>,
    pub opaque: Option<&'a [u8]>,
    pub qop: Option<&'a [u8]>,
    pub nc: Option<&'a [u8]>,
    pub stale: Option<&'a [u8]>,
    pub domain: Option<&'a [u8]>,
}

impl<'a> Credentials<'a> {
    /// Parses `scheme params`. For Digest, every known field is read in one pass; a field
    /// given twice is an error (two parsers could pick different ones).
    pub fn parse(value: &'a [u8]) -> Result<Self, FieldError> {
        let v = trim_lws(value);
        let mut cursor = Cursor { s: v, pos: 0 };
        let scheme = cursor.token().ok_or(FieldError::BadToken)?;
        let params = trim_lws(&v[cursor.pos..]);
        if !params.is_empty() && cursor.skip_lws() == 0 {
            return Err(FieldError::BadToken);
        }
        let digest = if scheme.eq_ignore_ascii_case(b"Digest") {
            Some(parse_digest(params)?)
        } else {
            None
        };
        Ok(Credentials {
            scheme,
            params,
            digest,
        })
    }
}

/// Reads the comma-separated `name=value` list of a Digest header.
fn parse_digest(params: &[u8]) -> Result<DigestFields<'_>, FieldError> {
    let mut fields = DigestFields::default();
    let mut cursor = Cursor { s: params, pos: 0 };
    loop {
        // Items are separated by commas; RFC 7235 tolerates empty ones (`a=1,,b=2`).
        cursor.skip_lws();
        match cursor.peek() {
            None => return Ok(fields),
            Some(b',') => {
                cursor.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = cursor.token().ok_or(FieldError::BadParam)?;
        cursor.skip_lws();
        cursor.expect(b'=').ok_or(FieldError::BadParam)?;
        cursor.skip_lws();
        let rest = &params[cursor.pos..];
        let value = if rest.first() == Some(&b'"') {
            let len = quoted_value_len(rest).ok_or(FieldError::UnterminatedQuote)?;
            cursor.pos += len;
            unquote(&rest[..len])
        } else {
            cursor.token().ok_or(FieldError::BadParam)?
        };
        cursor.skip_lws();
        if !matches!(cursor.peek(), None | Some(b',')) {
            return Err(FieldError::BadParam);
        }
        // Parameters of extensions (RFC 7616 userhash, charset…) are not needed here.
        if let Some(slot) = fields.slot(name)
            && slot.replace(value).is_some()
        {
            return Err(FieldError::DuplicateParam);
        }
    }
}

impl<'a> DigestFields<'a> {
    /// The field that stores parameter `name` (case-insensitive), if it is a known one.
    fn slot(&mut self, name: &[u8]) -> Option<&mut Option<&'a [u8]>> {
        // Dispatch on the length, then one compare.
        let (known, slot): (&[u8], &mut Option<&'a [u8]>) = match name.len() {
            2 => (b"nc", &mut self.nc),
            3 if name[0].eq_ignore_ascii_case(&b'u') => (b"uri", &mut self.uri),
            3 => (b"qop", &mut self.qop),
            5 if name[0].eq_ignore_ascii_case(&b'r') => (b"realm", &mut self.realm),
            5 if name[0].eq_ignore_ascii_case(&b'n') => (b"nonce", &mut self.nonce),
            5 => (b"stale", &mut self.stale),
            6 if name[0].eq_ignore_ascii_case(&b'c') => (b"cnonce", &mut self.cnonce),
            6 if name[0].eq_ignore_ascii_case(&b'o') => (b"opaque", &mut self.opaque),
            6 => (b"domain", &mut self.domain),
            8 if name[0].eq_ignore_ascii_case(&b'u') => (b"username", &mut self.username),
            8 => (b"response", &mut self.response),
            9 => (b"algorithm", &mut self.algorithm),
            _ => return None,
        };
        known.eq_ignore_ascii_case(name).then_some(slot)
    }
}

/// A challenge of a WWW-Authenticate or Proxy-Authenticate header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge<'a> {
    /// The scheme, such as `Digest`.
    pub scheme: &'a [u8],
    /// Everything after the scheme.
    pub params: &'a [u8],
    /// The digest fields, when the scheme is Digest.
    pub digest: Option<DigestFields<'a>>,
}

impl<'a> Challenge<'a> {
    /// Parses `scheme params`.
    pub fn parse(value: &'a [u8]) -> Result<Self, FieldError> {
        let credentials = Credentials::parse(value)?;
        Ok(Challenge {
            scheme: credentials.scheme,
            params: credentials.params,
            digest: credentials.digest,
        })
    }
}

/// A Content-Type value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType<'a> {
    /// The top-level type, such as `application`.
    pub kind: &'a [u8],
    /// The subtype, such as `sdp`.
    pub subtype: &'a [u8],
    /// Parameters such as `;boundary=…`.
    pub params: Params<'a>,
}

impl<'a> ContentType<'a> {
    /// Parses `type/subtype;params`.
    pub fn parse(value: &'a [u8]) -> Result<Self, FieldError> {
        let v = trim_lws(value);
        let mut cursor = Cursor { s: v, pos: 0 };
        let kind = cursor.token().ok_or(FieldError::BadToken)?;
        cursor.skip_lws();
        cursor.expect(b'/').ok_or(FieldError::BadToken)?;
        cursor.skip_lws();
        let subtype = cursor.token().ok_or(FieldError::BadToken)?;
        let params = header_params(&v[cursor.pos..])?;
        Ok(ContentType {
            kind,
            subtype,
            params,
        })
    }

    /// True if the media type is `kind/subtype`, compared case-insensitively.
    pub fn is(&self, kind: &[u8], subtype: &[u8]) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

/// A tiny scanner over one header value.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Skips white space; returns how much was skipped.
    #[inline]
    fn skip_lws(&mut self) -> usize {
        let start = self.pos;
        while self.pos < self.s.len() && is_lws(self.s[self.pos]) {
            self.pos += 1;
        }
        self.pos - start
    }

    #[inline]
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.pos < self.s.len() && keep(self.s[self.pos]) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// A non-empty token.
    #[inline]
    fn token(&mut self) -> Option<&'a [u8]> {
        let token = self.take_while(is_token);
        (!token.is_empty()).then_some(token)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        if self.s.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }
}

/// Accessors on a parsed message.
impl<'a> Message<'a> {
    /// The Request-URI, parsed (requests only).
    pub fn request_uri(&self) -> Option<Result<Uri<'a>, UriError>> {
        self.request_line()
            .map(|line| Uri::parse_with_limit(line.uri, self.max_uri_length))
    }

    /// Every Via entry, top first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'a>, FieldError>> + '_ {
        self.values(HeaderName::Via).map(|v| Via::parse(v.value))
    }

    /// The topmost Via entry.
    pub fn top_via(&self) -> Option<Result<Via<'a>, FieldError>> {
        let header = self.header(HeaderName::Via)?;
        let first = split_list(header.value).next()?;
        Some(Via::parse(first))
    }

    fn name_addr(&self, name: HeaderName) -> Option<Result<NameAddr<'a>, FieldError>> {
        self.header(name)
            .map(|header| NameAddr::parse(header.value, self.max_uri_length))
    }

    /// The From header.
    pub fn from(&self) -> Option<Result<NameAddr<'a>, FieldError>> {
        self.name_addr(HeaderName::From)
    }

    /// The To header.
    pub fn to(&self) -> Option<Result<NameAddr<'a>, FieldError>> {
        self.name_addr(HeaderName::To)
    }

    /// The Call-ID, as written.
    pub fn call_id(&self) -> Option<&'a [u8]> {
        self.header(HeaderName::CallId).map(|header| header.value)
    }

    /// The CSeq header.
    pub fn cseq(&self) -> Option<Result<CSeq<'a>, FieldError>> {
        self.header(HeaderName::CSeq)
            .map(|header| CSeq::parse(header.value))
    }

    /// Max-Forwards, 0 to 255.
    pub fn max_forwards(&self) -> Option<Result<u8, FieldError>> {
        self.header(HeaderName::MaxForwards).map(|header| {
            let n = parse_number(header.value)?;
            u8::try_from(n).map_err(|_| FieldError::OutOfRange)
        })
    }

    /// Every Contact entry.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'a>, FieldError>> + '_ {
        let max_uri = self.max_uri_length;
        self.values(HeaderName::Contact).map(move |v| {
            if v.value == b"*" {
                Ok(Contact::Star)
            } else {
                NameAddr::parse(v.value, max_uri).map(Contact::Address)
            }
        })
    }

    /// The Expires header, in seconds.
    pub fn expires(&self) -> Option<Result<u32, FieldError>> {
        self.header(HeaderName::Expires)
            .map(|header| parse_delta_seconds(header.value))
    }

    /// The Content-Type header.
    pub fn content_type(&self) -> Option<Result<ContentType<'a>, FieldError>> {
        self.header(HeaderName::ContentType)
            .map(|header| ContentType::parse(header.value))
    }

    /// The User-Agent header, as written.
    pub fn user_agent(&self) -> Option<&'a [u8]> {
        self.header(HeaderName::UserAgent)
            .map(|header| header.value)
    }

    /// The Server header, as written.
    pub fn server(&self) -> Option<&'a [u8]> {
        self.header(HeaderName::Server).map(|header| header.value)
    }

    /// The first Authorization header.
    pub fn authorization(&self) -> Option<Result<Credentials<'a>, FieldError>> {
        self.header(HeaderName::Authorization)
            .map(|header| Credentials::parse(header.value))
    }

    /// The first Proxy-Authorization header.
    pub fn proxy_authorization(&self) -> Option<Result<Credentials<'a>, FieldError>> {
        self.header(HeaderName::ProxyAuthorization)
            .map(|header| Credentials::parse(header.value))
    }

    /// The first WWW-Authenticate challenge.
    pub fn www_authenticate(&self) -> Option<Result<Challenge<'a>, FieldError>> {
        self.header(HeaderName::WwwAuthenticate)
            .map(|header| Challenge::parse(header.value))
    }

    /// The first Proxy-Authenticate challenge.
    pub fn proxy_authenticate(&self) -> Option<Result<Challenge<'a>, FieldError>> {
        self.header(HeaderName::ProxyAuthenticate)
            .map(|header| Challenge::parse(header.value))
    }

    /// Every entry of a list of name-addrs: Route, Record-Route, Path.
    pub fn name_addrs(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<NameAddr<'a>, FieldError>> + '_ {
        let max_uri = self.max_uri_length;
        self.values(name)
            .map(move |v| NameAddr::parse(v.value, max_uri))
    }

    /// Every Route entry.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'a>, FieldError>> + '_ {
        self.name_addrs(HeaderName::Route)
    }

    /// Every Record-Route entry.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'a>, FieldError>> + '_ {
        self.name_addrs(HeaderName::RecordRoute)
    }

    /// Every Path entry.
    pub fn paths(&self) -> impl Iterator<Item = Result<NameAddr<'a>, FieldError>> + '_ {
        self.name_addrs(HeaderName::Path)
    }

    /// The option tags of every header of `name` (Require, Proxy-Require, Supported,
    /// Unsupported): comma-separated tokens, trimmed. Empty entries are yielded so that
    /// sanity can reject them.
    pub fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.headers_named(name)
            .flat_map(|header| split_list(header.value))
    }
}

/// Checks an RFC 1123 date in GMT, as the Date header requires (RFC 3261 §20.17):
/// `Sat, 13 Nov 2010 23:29:00 GMT`.
pub fn check_date(value: &[u8]) -> Result<(), FieldError> {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let v = trim_lws(value);
    if v.len() != 29 {
        return Err(FieldError::BadDate);
    }
    let number = |range: std::ops::Range<usize>, max: u64| {
        let digits = &v[range];
        digits.iter().all(u8::is_ascii_digit) && parse_u64(digits).is_some_and(|n| n <= max)
    };
    let ok = DAYS.contains(&&v[0..3])
        && &v[3..5] == b", "
        && number(5..7, 31)
        && v[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && v[11] == b' '
        && number(12..16, 9999)
        && v[16] == b' '
        && number(17..19, 23)
        && v[19] == b':'
        && number(20..22, 59)
        && v[22] == b':'
        && number(23..25, 60)
        && &v[25..] == b" GMT";
    if ok { Ok(()) } else { Err(FieldError::BadDate) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(br#""J Rosenberg \\\"" <sip:j@example.com>;tag=98"#, 256).unwrap();
        assert_eq!(a.display_name, Some(&br#""J Rosenberg \\\"""#[..]));
        assert_eq!(a.uri.host_raw, b"example.com");
        assert_eq!(a.tag(), Some(&b"98"[..]));

        let b = NameAddr::parse(b"sip:j@example.com ;   tag    = 1918", 256).unwrap();
        assert!(!b.bracketed);
        assert_eq!(b.tag(), Some(&b"1918"[..]));

        let c = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323", 256).unwrap();
        assert_eq!(c.display_name, Some(&b"caller"[..]));

        let d = NameAddr::parse(b"<sip:a@b;lr>", 256).unwrap();
        assert!(d.uri.params.contains(b"lr"));
        assert!(d.params.is_empty());
    }

    #[test]
    fn name_addr_errors() {
        assert_eq!(
            NameAddr::parse(br#""Mr. J. User <sip:j@example.com>"#, 256),
            Err(FieldError::UnterminatedQuote)
        );
        assert_eq!(
            NameAddr::parse(b"Bell, Alexander <sip:a@b>", 256),
            Err(FieldError::BadDisplayName)
        );
        assert_eq!(
            NameAddr::parse(b"< sip:a@b >", 256),
            Err(FieldError::SpaceInAngle)
        );
        assert_eq!(
            NameAddr::parse(b"sip:user@example.com?Route=%3Csip:x%3E", 256),
            Err(FieldError::UnbracketedUri)
        );
        assert_eq!(
            NameAddr::parse(b"\"Joe\" <sip:joe@example.org>;;;;", 256),
            Err(FieldError::BadParam)
        );
        assert_eq!(
            NameAddr::parse(b"<sip:a@b", 256),
            Err(FieldError::UnclosedAngle)
        );
        assert_eq!(
            NameAddr::parse(b"<sip:a@b> x", 256),
            Err(FieldError::TrailingGarbage)
        );
        assert_eq!(
            NameAddr::parse(b"<sip:averyveryverylonguser@b>", 10),
            Err(FieldError::Uri(UriError::TooLong))
        );
    }

    #[test]
    fn via_with_folding_and_params() {
        let via = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(via.transport, b"UDP");
        assert_eq!(via.host, Host::V4("192.0.2.2".parse().unwrap()));
        assert_eq!(via.branch(), Some(&b"390skdjuw"[..]));

        let via =
            Via::parse(b"SIP/2.0/TCP [2001:db8::9]:5070;rport=4000;received=2001:db8::1").unwrap();
        assert_eq!(via.port, Some(5070));
        assert_eq!(via.rport(), Rport::Value(4000));
        assert_eq!(via.received(), Some("2001:db8::1".parse().unwrap()));

        let via = Via::parse(b"SIP/2.0/UDP h;rport").unwrap();
        assert_eq!(via.rport(), Rport::Requested);
        assert_eq!(via.port, None);
    }

    #[test]
    fn via_errors() {
        assert_eq!(Via::parse(b"SIP/2.0 h"), Err(FieldError::BadProtocol));
        assert_eq!(Via::parse(b"SIP/2.0/UDPh"), Err(FieldError::BadSentBy));
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP 192.0.2.15;;"),
            Err(FieldError::BadParam)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP h:70000"),
            Err(FieldError::BadSentBy)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP h;received=nothost"),
            Err(FieldError::BadParam)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP h;rport=x"),
            Err(FieldError::BadParam)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP h;branch=a;branch=b"),
            Err(FieldError::BadParam)
        );
    }

    #[test]
    fn cseq_and_numbers() {
        let cseq = CSeq::parse(b"0009\r\n  INVITE").unwrap();
        assert_eq!(cseq.number, 9);
        assert_eq!(cseq.method, Method::Invite);
        assert_eq!(
            CSeq::parse(b"36893488147419103232 REGISTER"),
            Err(FieldError::OutOfRange)
        );
        assert_eq!(CSeq::parse(b"x INVITE"), Err(FieldError::BadNumber));
        assert_eq!(CSeq::parse(b"1 INVITE x"), Err(FieldError::TrailingGarbage));
        assert_eq!(CSeq::parse(b"1"), Err(FieldError::BadToken));
    }

    #[test]
    fn digest_credentials() {
        let credentials = Credentials::parse(
            br#"Digest username="alice", realm="example.com", nonce="abc", uri="sip:example.com", response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, cnonce="xyz""#,
        )
        .unwrap();
        let digest = credentials.digest.unwrap();
        assert_eq!(digest.username, Some(&b"alice"[..]));
        assert_eq!(digest.algorithm, Some(&b"MD5"[..]));
        assert_eq!(digest.nc, Some(&b"00000001"[..]));
        assert_eq!(
            Credentials::parse(br#"Digest username="a", username="b""#),
            Err(FieldError::DuplicateParam)
        );
        let other = Credentials::parse(b"NoOneKnowsThisScheme opaque-data=here").unwrap();
        assert_eq!(other.scheme, b"NoOneKnowsThisScheme");
        assert!(other.digest.is_none());
    }

    #[test]
    fn dates() {
        assert!(check_date(b"Sat, 13 Nov 2010 23:29:00 GMT").is_ok());
        assert_eq!(
            check_date(b"Fri, 01 Jan 2010 16:00:00 EST"),
            Err(FieldError::BadDate)
        );
        assert_eq!(
            check_date(b"Fri, 41 Jan 2010 16:00:00 GMT"),
            Err(FieldError::BadDate)
        );
    }

    #[test]
    fn content_type() {
        let ct = ContentType::parse(b"multipart/mixed;boundary=unique-boundary-1").unwrap();
        assert!(ct.is(b"Multipart", b"MIXED"));
        assert_eq!(
            ct.params.get(b"boundary"),
            Some(Some(&b"unique-boundary-1"[..]))
        );
    }
}
