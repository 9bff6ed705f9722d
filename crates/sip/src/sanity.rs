//! Sanity checks of a parsed message, the equivalent of Kamailio's `sanity` module plus
//! Max-Forwards, as one call that says which check failed.
//!
//! The parser has already enforced framing (Content-Length present on streams, not
//! larger than the body, not duplicated, numeric). These checks read the header values
//! an edge proxy relies on and refuse messages that a downstream element could
//! misread. Each failure maps to the SIP status an edge answers with
//! ([`SanityError::status_code`]); the caller decides whether to answer or drop.

use thiserror::Error;

use crate::error::{FieldError, UriError};
use crate::fields::{CSeq, NameAddr, Via, check_date};
use crate::message::{Message, StartLine};
use crate::name::HeaderName;
use crate::uri::Uri;
use crate::uri::{Host, Scheme};

/// One sanity check, for enabling or disabling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Check {
    /// The start line says SIP/2.0 (Kamailio: ruri sip version).
    Version,
    /// To, From, CSeq, Call-ID and Via are present (Kamailio: required headers).
    RequiredHeaders,
    /// Single-valued headers appear once: To, From, Call-ID, CSeq, Max-Forwards.
    DuplicateHeaders,
    /// The Request-URI parses, has a sip, sips or tel scheme and no headers part
    /// (Kamailio: ruri scheme, parse uri).
    RequestUri,
    /// CSeq parses, its number is below 2**31, its method equals the request method
    /// (Kamailio: cseq method, cseq value).
    CSeq,
    /// Max-Forwards parses and, in a request, is not zero.
    MaxForwards,
    /// Every Via parses and says SIP/2.0 (Kamailio: via sip version); a response's
    /// Vias name no broadcast or multicast address.
    Via,
    /// From, To and Contact parse (Kamailio: parse uri for from, to, contact).
    Uris,
    /// From and To carry at most one tag each (Kamailio: duplicated To/From tags).
    Tags,
    /// Expires and Contact `expires` values are delta-seconds (Kamailio: expires value).
    Expires,
    /// Every Proxy-Require option tag is supported (Kamailio: proxy require).
    ProxyRequire,
    /// Authorization and Proxy-Authorization parse, and Digest credentials carry the
    /// fields RFC 3261 requires (Kamailio: digest credentials, authorization header).
    Authorization,
    /// Date, if present, is an RFC 1123 date in GMT.
    Date,
}

impl Check {
    /// Every check, in the order they run.
    pub const ALL: [Check; 13] = [
        Check::Version,
        Check::RequiredHeaders,
        Check::DuplicateHeaders,
        Check::RequestUri,
        Check::CSeq,
        Check::MaxForwards,
        Check::Via,
        Check::Uris,
        Check::Tags,
        Check::Expires,
        Check::ProxyRequire,
        Check::Authorization,
        Check::Date,
    ];

    fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// Which check failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SanityError {
    /// The start line's version is not SIP/2.0.
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A required header is missing.
    #[error("missing {} header", .0.canonical())]
    MissingHeader(HeaderName),
    /// A single-valued header appears more than once.
    #[error("duplicate {} header", .0.canonical())]
    DuplicateHeader(HeaderName),
    /// The Request-URI does not parse.
    #[error("invalid Request-URI: {0}")]
    RequestUri(UriError),
    /// The Request-URI scheme is not sip, sips or tel.
    #[error("unsupported Request-URI scheme")]
    UnsupportedUriScheme,
    /// The Request-URI has a headers part (`?…`), which RFC 3261 §19.1.1 forbids.
    #[error("headers part in the Request-URI")]
    RequestUriHeaders,
    /// The CSeq number is 2**31 or more.
    #[error("CSeq number too large")]
    CSeqValue,
    /// The CSeq method is not the request method.
    #[error("CSeq method differs from the request method")]
    CSeqMethod,
    /// Max-Forwards of a request is zero.
    #[error("Max-Forwards exhausted")]
    TooManyHops,
    /// A Via does not say SIP/2.0.
    #[error("Via protocol is not SIP/2.0")]
    ViaProtocol,
    /// A Via of a response points at a broadcast, multicast or unspecified address.
    #[error("Via points at a broadcast or multicast address")]
    ViaBroadcast,
    /// From or To carries more than one tag.
    #[error("duplicate tag in {}", .0.canonical())]
    DuplicateTag(HeaderName),
    /// Proxy-Require names an extension this proxy does not support.
    #[error("unsupported extension in Proxy-Require")]
    BadExtension,
    /// Option tags are not tokens.
    #[error("invalid option tag in {}", .0.canonical())]
    BadOptionTag(HeaderName),
    /// Digest credentials lack a field RFC 3261 requires, or a field is malformed.
    #[error("incomplete or malformed digest credentials")]
    DigestCredentials,
    /// An Expires header or a Contact `expires` parameter is not delta-seconds.
    #[error("invalid expiry in {}: {error}", .header.canonical())]
    Expires {
        /// Expires or Contact.
        header: HeaderName,
        /// What is wrong with it.
        error: FieldError,
    },
    /// A header value does not parse.
    #[error("invalid {} header: {error}", .header.canonical())]
    Header {
        /// The header.
        header: HeaderName,
        /// What is wrong with it.
        error: FieldError,
    },
}

impl SanityError {
    /// The status code an edge proxy answers a request with (RFC 3261 §8.2, §16.3).
    pub fn status_code(&self) -> u16 {
        match self {
            SanityError::UnsupportedVersion => 505,
            SanityError::UnsupportedUriScheme => 416,
            SanityError::TooManyHops => 483,
            SanityError::BadExtension => 420,
            _ => 400,
        }
    }

    /// The check that failed.
    pub fn check(&self) -> Check {
        match self {
            SanityError::UnsupportedVersion => Check::Version,
            SanityError::MissingHeader(_) => Check::RequiredHeaders,
            SanityError::DuplicateHeader(_) => Check::DuplicateHeaders,
            SanityError::RequestUri(_)
            | SanityError::UnsupportedUriScheme
            | SanityError::RequestUriHeaders => Check::RequestUri,
            SanityError::CSeqValue | SanityError::CSeqMethod => Check::CSeq,
            SanityError::TooManyHops => Check::MaxForwards,
            SanityError::ViaProtocol | SanityError::ViaBroadcast => Check::Via,
            SanityError::DuplicateTag(_) => Check::Tags,
            SanityError::BadExtension | SanityError::BadOptionTag(_) => Check::ProxyRequire,
            SanityError::DigestCredentials => Check::Authorization,
            SanityError::Expires { .. } => Check::Expires,
            SanityError::Header { header, .. } => match header {
                HeaderName::CSeq => Check::CSeq,
                HeaderName::CallId => Check::RequiredHeaders,
                HeaderName::MaxForwards => Check::MaxForwards,
                HeaderName::Via => Check::Via,
                HeaderName::Authorization | HeaderName::ProxyAuthorization => Check::Authorization,
                HeaderName::Date => Check::Date,
                _ => Check::Uris,
            },
        }
    }
}

/// The configured set of sanity checks.
#[derive(Debug, Clone)]
pub struct Sanity {
    enabled: u16,
    /// Option tags this proxy supports in Proxy-Require; none by default, since an edge
    /// proxy implements no proxy extension (RFC 3261 §16.3 step 4).
    proxy_supported: Vec<Vec<u8>>,
}

impl Default for Sanity {
    fn default() -> Self {
        Sanity {
            enabled: Check::ALL.iter().fold(0, |bits, check| bits | check.bit()),
            proxy_supported: Vec::new(),
        }
    }
}

fn header_error(header: HeaderName) -> impl Fn(FieldError) -> SanityError {
    move |error| SanityError::Header { header, error }
}

impl Sanity {
    /// All checks enabled, no Proxy-Require extension supported.
    pub fn new() -> Self {
        Self::default()
    }

    /// Disables one check.
    pub fn without(mut self, check: Check) -> Self {
        self.enabled &= !check.bit();
        self
    }

    /// Declares an option tag as supported in Proxy-Require.
    pub fn with_proxy_supported(mut self, tag: &[u8]) -> Self {
        self.proxy_supported.push(tag.to_ascii_lowercase());
        self
    }

    /// True if `check` is enabled.
    pub fn is_enabled(&self, check: Check) -> bool {
        self.enabled & check.bit() != 0
    }

    /// Runs every enabled check in order and returns the first failure, or what the
    /// checks parsed on the way (so that later stages need not parse it again).
    pub fn check<'a>(&self, msg: &Message<'a>) -> Result<Checked<'a>, SanityError> {
        let mut checked = Checked::default();
        self.check_into(msg, &mut checked)?;
        Ok(checked)
    }

    /// [`Sanity::check`] into a [`Checked`] the caller owns (fresh from
    /// `Checked::default()`), which saves copying what the checks parsed (about a
    /// kilobyte) into the result and out again.
    pub fn check_into<'a>(
        &self,
        msg: &Message<'a>,
        checked: &mut Checked<'a>,
    ) -> Result<(), SanityError> {
        for check in Check::ALL {
            if self.is_enabled(check) {
                self.run(check, msg, checked)?;
            }
        }
        Ok(())
    }

    /// The Proxy-Require option tags that are not supported (for the Unsupported
    /// header of a 420 reply).
    pub fn unsupported_proxy_require<'m>(
        &'m self,
        msg: &'m Message<'_>,
    ) -> impl Iterator<Item = &'m [u8]> + 'm {
        msg.option_tags(HeaderName::ProxyRequire)
            .filter(move |tag| !tag.is_empty() && !self.supports(tag))
    }

    fn supports(&self, tag: &[u8]) -> bool {
        self.proxy_supported
            .iter()
            .any(|known| known.eq_ignore_ascii_case(tag))
    }

    fn run<'a>(
        &self,
        check: Check,
        msg: &Message<'a>,
        checked: &mut Checked<'a>,
    ) -> Result<(), SanityError> {
        match check {
            Check::Version => check_version(msg),
            Check::RequiredHeaders => check_required(msg),
            Check::DuplicateHeaders => check_duplicates(msg),
            Check::RequestUri => check_request_uri(msg, checked),
            Check::CSeq => check_cseq(msg, checked),
            Check::MaxForwards => check_max_forwards(msg, checked),
            Check::Via => check_vias(msg, checked),
            Check::Uris => check_uris(msg, checked),
            Check::Tags => check_tags(msg, checked),
            Check::Expires => check_expires(msg, checked),
            Check::ProxyRequire => self.check_proxy_require(msg),
            Check::Authorization => check_authorization(msg, checked),
            Check::Date => match msg.header(HeaderName::Date) {
                Some(date) => check_date(date.value).map_err(header_error(HeaderName::Date)),
                None => Ok(()),
            },
        }
    }

    fn check_proxy_require(&self, msg: &Message<'_>) -> Result<(), SanityError> {
        for name in [HeaderName::Require, HeaderName::ProxyRequire] {
            let valid = msg
                .option_tags(name)
                .all(|tag| !tag.is_empty() && tag.iter().all(|&b| crate::chars::is_token(b)));
            if !valid {
                return Err(SanityError::BadOptionTag(name));
            }
        }
        if msg.is_request() && self.unsupported_proxy_require(msg).next().is_some() {
            return Err(SanityError::BadExtension);
        }
        Ok(())
    }
}

/// What the sanity checks parsed, handed to the stages after them. A field is `None`
/// when its header is absent or its check is disabled. Its fields are best read by
/// reference (`checked.from.as_ref()`): each is `Copy`, but a URI or name-addr is some
/// 170 to 220 bytes to copy.
#[derive(Debug, Clone, Default)]
pub struct Checked<'a> {
    /// The Request-URI (requests only).
    pub request_uri: Option<Uri<'a>>,
    /// The topmost Via.
    pub top_via: Option<Via<'a>>,
    /// The From header.
    pub from: Option<NameAddr<'a>>,
    /// The To header.
    pub to: Option<NameAddr<'a>>,
    /// The CSeq header.
    pub cseq: Option<CSeq<'a>>,
    /// The Max-Forwards value.
    pub max_forwards: Option<u8>,
    /// The credentials of the first Authorization header, or of the first
    /// Proxy-Authorization header if there is no Authorization.
    pub credentials: Option<crate::fields::Credentials<'a>>,
    /// The first invalid Contact `expires`, found while the Contacts were parsed for the
    /// Uris check and reported by the Expires check.
    contact_expires_error: Option<FieldError>,
    /// True once the Uris check has parsed every Contact.
    contacts_parsed: bool,
}

impl<'a> Checked<'a> {
    /// The digest user name of the request's credentials, if it carries any: as the
    /// Authorization check parsed them, or parsed here if that check is disabled.
    pub fn digest_username(&self, msg: &Message<'a>) -> Option<&'a [u8]> {
        let credentials = match self.credentials {
            Some(credentials) => credentials,
            None => msg
                .authorization()
                .or_else(|| msg.proxy_authorization())?
                .ok()?,
        };
        credentials.digest?.username
    }
}

fn is_sip_2_0(version: &[u8]) -> bool {
    version.eq_ignore_ascii_case(b"SIP/2.0")
}

fn check_version(msg: &Message<'_>) -> Result<(), SanityError> {
    let version = match msg.start_line() {
        StartLine::Request(line) => line.version,
        StartLine::Response(line) => line.version,
    };
    if is_sip_2_0(version) {
        Ok(())
    } else {
        Err(SanityError::UnsupportedVersion)
    }
}

fn check_required(msg: &Message<'_>) -> Result<(), SanityError> {
    for name in [
        HeaderName::To,
        HeaderName::From,
        HeaderName::CSeq,
        HeaderName::CallId,
        HeaderName::Via,
    ] {
        if msg.header(name).is_none() {
            return Err(SanityError::MissingHeader(name));
        }
    }
    // A Call-ID is one word, optionally `@` and another (RFC 3261 §25.1): never empty,
    // never with white space in it.
    let call_id = msg.call_id().unwrap_or_default();
    if call_id.is_empty() || call_id.iter().any(|&b| crate::chars::is_lws(b)) {
        return Err(SanityError::Header {
            header: HeaderName::CallId,
            error: FieldError::BadToken,
        });
    }
    Ok(())
}

fn check_duplicates(msg: &Message<'_>) -> Result<(), SanityError> {
    for name in [
        HeaderName::To,
        HeaderName::From,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::MaxForwards,
    ] {
        if msg.headers_named(name).nth(1).is_some() {
            return Err(SanityError::DuplicateHeader(name));
        }
    }
    Ok(())
}

fn check_request_uri<'a>(msg: &Message<'a>, checked: &mut Checked<'a>) -> Result<(), SanityError> {
    let Some(parsed) = msg.request_uri() else {
        return Ok(());
    };
    let uri = parsed.map_err(|error| match error {
        UriError::BadScheme => SanityError::UnsupportedUriScheme,
        other => SanityError::RequestUri(other),
    })?;
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) {
        return Err(SanityError::UnsupportedUriScheme);
    }
    if uri.headers.is_some() {
        return Err(SanityError::RequestUriHeaders);
    }
    checked.request_uri = Some(uri);
    Ok(())
}

fn check_cseq<'a>(msg: &Message<'a>, checked: &mut Checked<'a>) -> Result<(), SanityError> {
    let Some(parsed) = msg.cseq() else {
        return Ok(());
    };
    let cseq = parsed.map_err(header_error(HeaderName::CSeq))?;
    if cseq.number >= 1 << 31 {
        return Err(SanityError::CSeqValue);
    }
    if let Some(method) = msg.method()
        && method != cseq.method
    {
        return Err(SanityError::CSeqMethod);
    }
    checked.cseq = Some(cseq);
    Ok(())
}

fn check_max_forwards(msg: &Message<'_>, checked: &mut Checked<'_>) -> Result<(), SanityError> {
    let Some(parsed) = msg.max_forwards() else {
        return Ok(());
    };
    let hops = parsed.map_err(header_error(HeaderName::MaxForwards))?;
    // A proxy must not forward a request with Max-Forwards 0 (RFC 3261 §16.3 step 2).
    // ACK and CANCEL are included: they are hop-by-hop and an edge does not consume them.
    if hops == 0 && msg.is_request() {
        return Err(SanityError::TooManyHops);
    }
    checked.max_forwards = Some(hops);
    Ok(())
}

fn check_vias<'a>(msg: &Message<'a>, checked: &mut Checked<'a>) -> Result<(), SanityError> {
    for (index, via) in msg.vias().enumerate() {
        let via = via.map_err(header_error(HeaderName::Via))?;
        if !via.protocol.eq_ignore_ascii_case(b"SIP") || via.version != b"2.0" {
            return Err(SanityError::ViaProtocol);
        }
        // A response travels to the addresses of its Vias: none may be a broadcast or
        // multicast address (RFC 4475 §3.3.10), or a source of amplification.
        if !msg.is_request() && via_is_broadcast(&via) {
            return Err(SanityError::ViaBroadcast);
        }
        if index == 0 {
            checked.top_via = Some(via);
        }
    }
    Ok(())
}

fn via_is_broadcast(via: &crate::fields::Via<'_>) -> bool {
    let bad = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    };
    let maddr = via.maddr().and_then(crate::fields::parse_ip);
    let sent_by = match via.host {
        Host::V4(ip) => Some(ip.into()),
        Host::V6(ip) => Some(ip.into()),
        _ => None,
    };
    [sent_by, via.received(), maddr]
        .into_iter()
        .flatten()
        .any(bad)
}

fn check_uris<'a>(msg: &Message<'a>, checked: &mut Checked<'a>) -> Result<(), SanityError> {
    if let Some(from) = msg.from() {
        checked.from = Some(from.map_err(header_error(HeaderName::From))?);
    }
    if let Some(to) = msg.to() {
        checked.to = Some(to.map_err(header_error(HeaderName::To))?);
    }
    for contact in msg.contacts() {
        let contact = contact.map_err(header_error(HeaderName::Contact))?;
        if let Some(Err(error)) = contact.expires() {
            checked.contact_expires_error.get_or_insert(error);
        }
    }
    checked.contacts_parsed = true;
    Ok(())
}

fn check_tags<'a>(msg: &Message<'a>, checked: &mut Checked<'a>) -> Result<(), SanityError> {
    // Parsed by the Uris check unless it is disabled.
    if checked.from.is_none() {
        checked.from = msg.from().and_then(Result::ok);
    }
    if checked.to.is_none() {
        checked.to = msg.to().and_then(Result::ok);
    }
    for (name, addr) in [
        (HeaderName::From, &checked.from),
        (HeaderName::To, &checked.to),
    ] {
        if addr.as_ref().is_some_and(|addr| addr.tag_count() > 1) {
            return Err(SanityError::DuplicateTag(name));
        }
    }
    Ok(())
}

fn expires_error(header: HeaderName) -> impl Fn(FieldError) -> SanityError {
    move |error| SanityError::Expires { header, error }
}

fn check_expires(msg: &Message<'_>, checked: &mut Checked<'_>) -> Result<(), SanityError> {
    if let Some(expires) = msg.expires() {
        expires.map_err(expires_error(HeaderName::Expires))?;
    }
    if let Some(error) = checked.contact_expires_error {
        return Err(expires_error(HeaderName::Contact)(error));
    }
    if checked.contacts_parsed {
        return Ok(());
    }
    // The Uris check is disabled: read the Contacts here.
    for contact in msg.contacts().flatten() {
        if let Some(expires) = contact.expires() {
            expires.map_err(expires_error(HeaderName::Contact))?;
        }
    }
    Ok(())
}

fn check_authorization<'a>(
    msg: &Message<'a>,
    checked: &mut Checked<'a>,
) -> Result<(), SanityError> {
    for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
        for header in msg.headers_named(name) {
            let credentials =
                crate::fields::Credentials::parse(header.value).map_err(header_error(name))?;
            if let Some(digest) = credentials.digest {
                check_digest(&digest)?;
            }
            if checked.credentials.is_none() {
                checked.credentials = Some(credentials);
            }
        }
    }
    Ok(())
}

/// RFC 3261 §22.4 and RFC 2617 §3.2.2: the fields a digest response must carry.
fn check_digest(digest: &crate::fields::DigestFields<'_>) -> Result<(), SanityError> {
    let present = |field: Option<&[u8]>| field.is_some_and(|value| !value.is_empty());
    let required = present(digest.username)
        && digest.realm.is_some()
        && present(digest.nonce)
        && present(digest.uri)
        && present(digest.response);
    if !required {
        return Err(SanityError::DigestCredentials);
    }
    // MD5 responses are 32 hex digits, SHA-256 ones 64 (RFC 8760).
    let response = digest.response.unwrap_or_default();
    if !matches!(response.len(), 32 | 64) || !response.iter().all(u8::is_ascii_hexdigit) {
        return Err(SanityError::DigestCredentials);
    }
    if digest.qop.is_some() {
        let nc_ok = digest
            .nc
            .is_some_and(|nc| nc.len() == 8 && nc.iter().all(u8::is_ascii_hexdigit));
        if !nc_ok || !present(digest.cnonce) {
            return Err(SanityError::DigestCredentials);
        }
    }
    if let Some(uri) = digest.uri
        && crate::uri::Uri::parse(uri).is_err()
    {
        return Err(SanityError::DigestCredentials);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Framing, Limits};

    const BASE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n";

    /// Checks BASE with `extra` header lines appended, or with `from` replaced by `to`.
    fn check_with(replace: (&str, &str), extra: &str) -> Result<(), SanityError> {
        check_with_sanity(&Sanity::new(), replace, extra)
    }

    fn check_with_sanity(
        sanity: &Sanity,
        replace: (&str, &str),
        extra: &str,
    ) -> Result<(), SanityError> {
        let text = format!(
            "{}{extra}Content-Length: 0\r\n\r\n",
            BASE.replace(replace.0, replace.1)
        );
        let msg = Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default())
            .expect("test messages parse");
        sanity.check(&msg).map(|_| ())
    }

    fn check_extra(extra: &str) -> Result<(), SanityError> {
        check_with(("", ""), extra)
    }

    const DIGEST: &str = "Authorization: Digest username=\"alice\", realm=\"example.com\", \
nonce=\"n\", uri=\"sip:bob@example.com\", response=\"0123456789abcdef0123456789abcdef\"";

    #[test]
    fn a_plain_request_passes_and_hands_over_what_it_parsed() {
        assert!(check_extra(&format!("{DIGEST}\r\n")).is_ok());
        let text = format!("{BASE}Content-Length: 0\r\n\r\n");
        let msg = Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
        let checked = Sanity::new().check(&msg).unwrap();
        assert_eq!(checked.top_via.unwrap().branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(checked.from.unwrap().tag(), Some(&b"1"[..]));
        assert_eq!(checked.to.unwrap().tag(), None);
        assert_eq!(checked.cseq.unwrap().number, 1);
        assert_eq!(checked.max_forwards, Some(70));
        assert_eq!(checked.request_uri.unwrap().host_raw, b"example.com");
    }

    #[test]
    fn check_into_fills_what_check_returns_and_fails_alike() {
        let text = format!("{BASE}Content-Length: 0\r\n\r\n");
        let msg = Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
        let mut checked = Checked::default();
        Sanity::new().check_into(&msg, &mut checked).unwrap();
        let returned = Sanity::new().check(&msg).unwrap();
        assert_eq!(format!("{checked:?}"), format!("{returned:?}"));
        assert!(checked.top_via.is_some() && checked.request_uri.is_some());

        let bad = text.replace("CSeq: 1 ", "CSeq: x ");
        let msg = Message::parse(bad.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
        let into = Sanity::new().check_into(&msg, &mut Checked::default());
        assert!(into.is_err());
        assert_eq!(into.err(), Sanity::new().check(&msg).err());
    }

    #[test]
    fn contact_expires_is_checked_with_the_uris_check_off() {
        let text =
            format!("{BASE}Contact: <sip:a@b>;expires=99999999999\r\nContent-Length: 0\r\n\r\n");
        let msg = Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
        let want = Err(SanityError::Expires {
            header: HeaderName::Contact,
            error: FieldError::OutOfRange,
        });
        assert_eq!(Sanity::new().check(&msg).map(|_| ()), want);
        assert_eq!(
            Sanity::new().without(Check::Uris).check(&msg).map(|_| ()),
            want
        );
        assert!(Sanity::new().without(Check::Expires).check(&msg).is_ok());
    }

    #[test]
    fn each_check_reports_itself() {
        use HeaderName as H;
        let cases: Vec<(Result<(), SanityError>, SanityError, u16)> = vec![
            (
                check_with(("SIP/2.0\r\n", "SIP/3.0\r\n"), ""),
                SanityError::UnsupportedVersion,
                505,
            ),
            (
                check_with(("Call-ID: c1\r\n", ""), ""),
                SanityError::MissingHeader(H::CallId),
                400,
            ),
            (
                check_extra("f: <sip:x@y>\r\n"),
                SanityError::DuplicateHeader(H::From),
                400,
            ),
            (
                check_extra("Max-Forwards: 3\r\n"),
                SanityError::DuplicateHeader(H::MaxForwards),
                400,
            ),
            (
                check_with(("sip:bob@example.com SIP", "sip:bob@exa..mple SIP"), ""),
                SanityError::RequestUri(UriError::BadHost),
                400,
            ),
            (
                check_with(("INVITE sip:", "INVITE http:"), ""),
                SanityError::UnsupportedUriScheme,
                416,
            ),
            (
                check_with(("1 INVITE", "2147483648 INVITE"), ""),
                SanityError::CSeqValue,
                400,
            ),
            (
                check_with(("1 INVITE", "1 BYE"), ""),
                SanityError::CSeqMethod,
                400,
            ),
            (
                check_with(("Forwards: 70", "Forwards: 0"), ""),
                SanityError::TooManyHops,
                483,
            ),
            (
                check_with(("Forwards: 70", "Forwards: 256"), ""),
                SanityError::Header {
                    header: H::MaxForwards,
                    error: FieldError::OutOfRange,
                },
                400,
            ),
            (
                check_with(("SIP/2.0/UDP", "SIP/1.0/UDP"), ""),
                SanityError::ViaProtocol,
                400,
            ),
            (
                check_with(("branch=z9hG4bK1", "branch="), ""),
                SanityError::Header {
                    header: H::Via,
                    error: FieldError::BadParam,
                },
                400,
            ),
            (
                check_with(("tag=1", "tag=1;tag=2"), ""),
                SanityError::DuplicateTag(H::From),
                400,
            ),
            (
                check_extra("Expires: 4294967296\r\n"),
                SanityError::Expires {
                    header: H::Expires,
                    error: FieldError::OutOfRange,
                },
                400,
            ),
            (
                check_extra("Contact: <sip:a@b>;expires=x\r\n"),
                SanityError::Expires {
                    header: H::Contact,
                    error: FieldError::BadNumber,
                },
                400,
            ),
            (
                check_extra("Proxy-Require: foo\r\n"),
                SanityError::BadExtension,
                420,
            ),
            (
                check_extra("Require: a,,b\r\n"),
                SanityError::BadOptionTag(H::Require),
                400,
            ),
            (
                check_extra("Authorization: Digest username=\"alice\"\r\n"),
                SanityError::DigestCredentials,
                400,
            ),
            (
                check_extra(&format!(
                    "{}\r\n",
                    DIGEST.replace("0123456789abcdef0123", "xyz")
                )),
                SanityError::DigestCredentials,
                400,
            ),
            (
                check_extra(&format!("{DIGEST}, qop=auth\r\n")),
                SanityError::DigestCredentials,
                400,
            ),
            (
                check_extra("Date: Sat, 13 Nov 2010 23:29:00 PST\r\n"),
                SanityError::Header {
                    header: H::Date,
                    error: FieldError::BadDate,
                },
                400,
            ),
        ];
        for (got, want, status) in cases {
            assert_eq!(got, Err(want));
            assert_eq!(want.status_code(), status, "{want:?}");
        }
    }

    #[test]
    fn every_error_maps_back_to_an_enabled_check() {
        let errors = [
            SanityError::UnsupportedVersion,
            SanityError::MissingHeader(HeaderName::To),
            SanityError::CSeqValue,
            SanityError::TooManyHops,
            SanityError::ViaBroadcast,
            SanityError::BadExtension,
            SanityError::DigestCredentials,
            SanityError::Header {
                header: HeaderName::Date,
                error: FieldError::BadDate,
            },
        ];
        let expected = [
            Check::Version,
            Check::RequiredHeaders,
            Check::CSeq,
            Check::MaxForwards,
            Check::Via,
            Check::ProxyRequire,
            Check::Authorization,
            Check::Date,
        ];
        for (error, check) in errors.iter().zip(expected) {
            assert_eq!(error.check(), check);
        }
    }

    #[test]
    fn disabled_checks_do_not_run() {
        let text = format!(
            "{}Content-Length: 0\r\n\r\n",
            BASE.replace("Forwards: 70", "Forwards: 0")
        );
        let msg = Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
        assert_eq!(
            Sanity::new().check(&msg).err(),
            Some(SanityError::TooManyHops)
        );
        let lenient = Sanity::new().without(Check::MaxForwards);
        assert!(!lenient.is_enabled(Check::MaxForwards));
        assert!(lenient.check(&msg).is_ok());
        // Every check can be switched off on its own.
        let none = Check::ALL.iter().fold(Sanity::new(), |s, c| s.without(*c));
        assert!(Check::ALL.iter().all(|c| !none.is_enabled(*c)));
        assert_eq!(
            check_with_sanity(&none, ("1 INVITE", "1 BYE"), "Proxy-Require: x\r\n"),
            Ok(())
        );
    }

    #[test]
    fn zero_max_forwards_in_a_response_is_fine_and_broadcast_vias_are_not() {
        let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP 192.0.2.2;received=224.0.0.1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n\
Call-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n";
        let msg =
            Message::parse(response.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
        assert_eq!(
            Sanity::new().check(&msg).err(),
            Some(SanityError::ViaBroadcast)
        );
        let fixed = response.replace("224.0.0.1", "203.0.113.1");
        let msg = Message::parse(fixed.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
        assert!(Sanity::new().check(&msg).is_ok());
    }
}
