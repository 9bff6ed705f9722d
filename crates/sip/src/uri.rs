//! URIs: `sip:`, `sips:` and `tel:` parsed into their parts, other schemes kept opaque.
//!
//! Every part is a slice of the input, still escaped; [`unescape`] and
//! [`eq_unescaped`] compare or decode `%HH` escapes when a rule needs the meaning.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::chars::{
    HOST, URI_PARAM_PLAIN, URI_USER, URI_USER_PLAIN, is_host, is_uri_headers, is_uri_opaque,
    is_uri_param, is_uri_password, run_end,
};
use crate::error::UriError;
use crate::params::Params;

/// The scheme of a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme<'a> {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other scheme, as written.
    Other(&'a [u8]),
}

/// The host of a SIP URI or Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A host name, as written.
    Name(&'a [u8]),
    /// An IPv4 literal.
    V4(Ipv4Addr),
    /// An IPv6 reference (`[…]` in URIs).
    V6(Ipv6Addr),
    /// No host: `tel:` URIs and other schemes.
    None,
}

impl Host<'_> {
    /// The address, for IP literals.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match *self {
            Host::V4(ip) => Some(ip.into()),
            Host::V6(ip) => Some(ip.into()),
            _ => None,
        }
    }

    /// Parses a host as it appears in a URI or Via: a bracketed IPv6 reference, an IPv4
    /// literal or a host name. Returns `None` if it is none of them.
    pub fn parse(raw: &[u8]) -> Option<Host<'_>> {
        if let Some(inner) = raw.strip_prefix(b"[") {
            let inner = inner.strip_suffix(b"]")?;
            return parse_ipv6(inner).map(Host::V6);
        }
        if !raw.iter().all(|&b| is_host(b)) {
            return None;
        }
        Self::from_host_chars(raw)
    }

    /// Parses a host already known to hold only host characters: labels must be
    /// non-empty and must not start or end with '-'; one trailing dot (a fully qualified
    /// name) is allowed; all digits and dots must be an IPv4 address.
    pub(crate) fn from_host_chars(raw: &[u8]) -> Option<Host<'_>> {
        let (&first, &last) = (raw.first()?, raw.last()?);
        if first == b'.' || first == b'-' || last == b'-' {
            return None;
        }
        if last.is_ascii_digit() {
            if let Some(ip) = parse_ipv4(raw) {
                return Some(Host::V4(ip));
            }
            // No TLD is numeric: all digits and dots that are not an address are nothing.
            if raw.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
                return None;
            }
        }
        // Labels are non-empty and neither start nor end with '-'.
        // A fold without early exit, which the compiler turns into vector compares.
        let bad_pair = raw.iter().zip(&raw[1..]).fold(false, |bad, (&a, &b)| {
            bad | (((a == b'.') | (a == b'-')) & (b == b'.')) | ((a == b'.') & (b == b'-'))
        });
        (!bad_pair).then_some(Host::Name(raw))
    }
}

/// Parses a dotted-quad IPv4 address of decimal parts 0 to 255, without leading zeros
/// (as the standard library does).
///
/// Each part is read as at most three digits, so the loop runs four times rather than
/// once per byte: Via sent-by and Contact hosts are mostly addresses.
fn parse_ipv4(raw: &[u8]) -> Option<Ipv4Addr> {
    let digit = |i: usize| raw.get(i).map(|b| b.wrapping_sub(b'0')).filter(|&d| d <= 9);
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if raw.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let first = digit(i)?;
        i += 1;
        let mut value = u16::from(first);
        // A leading 0 is the whole part: "01" is refused by the '.' expected next.
        if first != 0 {
            for _ in 0..2 {
                let Some(d) = digit(i) else { break };
                value = value * 10 + u16::from(d);
                i += 1;
            }
        }
        *octet = u8::try_from(value).ok()?;
    }
    (i == raw.len()).then_some(Ipv4Addr::from(octets))
}

/// Parses the inside of an IPv6 reference (without brackets).
pub(crate) fn parse_ipv6(raw: &[u8]) -> Option<Ipv6Addr> {
    if raw.len() > 45 {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse::<Ipv6Addr>().ok()
}

/// A parsed URI. All parts borrow from the input and keep their escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The whole URI as written.
    pub raw: &'a [u8],
    /// The scheme.
    pub scheme: Scheme<'a>,
    /// The user part of a SIP URI, or the number of a `tel:` URI.
    pub user: Option<&'a [u8]>,
    /// The password of a SIP URI (deprecated, but legal).
    pub password: Option<&'a [u8]>,
    /// The host of a SIP URI.
    pub host: Host<'a>,
    /// The host as written (empty for `tel:` and other schemes).
    pub host_raw: &'a [u8],
    /// The port of a SIP URI.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`), the leading `;` included.
    pub params: Params<'a>,
    /// The headers part without its `?`, if present.
    pub headers: Option<&'a [u8]>,
    /// Everything after `scheme:` for schemes other than sip, sips and tel.
    pub opaque: &'a [u8],
}

impl<'a> Uri<'a> {
    /// Parses a URI with no length limit beyond the message's own.
    pub fn parse(raw: &'a [u8]) -> Result<Uri<'a>, UriError> {
        Self::parse_with_limit(raw, usize::MAX)
    }

    /// Parses a URI, refusing one longer than `max_length`.
    pub fn parse_with_limit(raw: &'a [u8], max_length: usize) -> Result<Uri<'a>, UriError> {
        let mut uri = Uri::unparsed(raw);
        uri.parse_in_place(max_length)?;
        Ok(uri)
    }

    /// A URI with every part empty but `raw`, for [`Uri::parse_in_place`].
    pub(crate) fn unparsed(raw: &'a [u8]) -> Uri<'a> {
        Uri {
            raw,
            scheme: Scheme::Other(&raw[..0]),
            user: None,
            password: None,
            host: Host::None,
            host_raw: &raw[..0],
            port: None,
            params: Params::empty_at(&raw[raw.len()..]),
            headers: None,
            opaque: &raw[..0],
        }
    }

    /// Parses `self.raw` into the other parts, in place, refusing a URI longer than
    /// `max_length`. `self` must be as [`Uri::unparsed`] made it: only the parts found
    /// are written, not every part a second time. A name-addr parses its URI where it
    /// keeps it this way, instead of copying a returned one (a URI is about 170 bytes).
    /// On error the parts are left half set; the caller drops the URI.
    pub(crate) fn parse_in_place(&mut self, max_length: usize) -> Result<(), UriError> {
        let raw = self.raw;
        if raw.is_empty() {
            return Err(UriError::Empty);
        }
        if raw.len() > max_length {
            return Err(UriError::TooLong);
        }
        // Nearly every URI is sip:; find its colon without a search, and recognise the
        // scheme in any case with one compare (setting bit 0x20 lower-cases the letters,
        // and only letters fold onto them; the colon is checked exactly).
        let (colon, is_sip) = match raw.first_chunk::<4>() {
            Some(head) if raw.len() > 4 && head[3] == b':' => (
                3,
                u32::from_le_bytes(*head) | 0x2020_2020 == u32::from_le_bytes(*b"sip:"),
            ),
            _ => {
                let colon = raw
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or(UriError::BadScheme)?;
                (colon, raw[..colon].eq_ignore_ascii_case(b"sip"))
            }
        };
        let scheme_raw = &raw[..colon];
        let scheme_ok = is_sip
            || scheme_raw.first().is_some_and(u8::is_ascii_alphabetic)
                && scheme_raw
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(UriError::BadScheme);
        }
        let rest = &raw[colon + 1..];
        let uri = self;
        // The other parts are as `Uri::unparsed` left them.
        uri.scheme = Scheme::Other(scheme_raw);
        uri.host_raw = &rest[..0];
        uri.opaque = &rest[..0];
        // One call site for both SIP schemes, so that `parse_sip` is inlined once.
        let sip_scheme = if is_sip {
            Some(Scheme::Sip)
        } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
            Some(Scheme::Sips)
        } else {
            None
        };
        if let Some(scheme) = sip_scheme {
            uri.scheme = scheme;
            parse_sip(rest, uri)?;
        } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
            uri.scheme = Scheme::Tel;
            parse_tel(rest, uri)?;
        } else {
            if rest.is_empty() || !rest.iter().all(|&b| is_uri_opaque(b)) {
                return Err(UriError::BadCharacter);
            }
            uri.opaque = rest;
        }
        Ok(())
    }

    /// True for `sip:` and `sips:` URIs.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }
}

/// Parses `[userinfo@]host[:port][;params][?headers]`.
#[inline(always)]
fn parse_sip<'a>(rest: &'a [u8], uri: &mut Uri<'a>) -> Result<(), UriError> {
    // The user part may hold ';', '?' and '/' (RFC 3261 user-unreserved), so the '@'
    // decides where it ends. One scan over user characters finds it in the common case;
    // the escapes are checked only if a '%' was seen: the scan stops at the first one,
    // notes it, and goes on with '%' allowed.
    let mut escaped = false;
    let mut user_end = run_end(rest, 0, &URI_USER_PLAIN);
    if rest.get(user_end) == Some(&b'%') {
        escaped = true;
        user_end = run_end(rest, user_end, &URI_USER);
    }
    let (userinfo_end, password) = match rest.get(user_end) {
        Some(b'@') => (Some(user_end), None),
        Some(b':') => {
            let password_end = rest[user_end + 1..]
                .iter()
                .position(|&b| {
                    escaped |= b == b'%';
                    !is_uri_password(b)
                })
                .map_or(rest.len(), |i| user_end + 1 + i);
            if rest.get(password_end) == Some(&b'@') {
                (Some(password_end), Some(&rest[user_end + 1..password_end]))
            } else if memchr::memchr(b'@', &rest[password_end..]).is_some() {
                return Err(UriError::BadPassword);
            } else {
                // Not a password: the ':' starts the port.
                (None, None)
            }
        }
        Some(_) if memchr::memchr(b'@', &rest[user_end..]).is_some() => {
            return Err(UriError::BadUser);
        }
        _ => (None, None),
    };
    let hostport_and_more = match userinfo_end {
        Some(at) => {
            let user = &rest[..user_end];
            if user.is_empty() {
                return Err(UriError::BadUser);
            }
            if escaped {
                check_escapes(user)?;
                if let Some(password) = password {
                    check_escapes(password)?;
                }
            }
            uri.user = Some(user);
            uri.password = password;
            &rest[at + 1..]
        }
        None => rest,
    };
    let host_end = if hostport_and_more.first() == Some(&b'[') {
        memchr::memchr(b']', hostport_and_more).ok_or(UriError::BadHost)? + 1
    } else {
        run_end(hostport_and_more, 0, &HOST)
    };
    let host_raw = &hostport_and_more[..host_end];
    uri.host = if host_raw.first() == Some(&b'[') {
        Host::parse(host_raw)
    } else {
        Host::from_host_chars(host_raw)
    }
    .ok_or(UriError::BadHost)?;
    uri.host_raw = host_raw;
    let mut rest = &hostport_and_more[host_end..];
    if let Some(after_colon) = rest.strip_prefix(b":") {
        let digits = after_colon
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(after_colon.len());
        uri.port = Some(parse_port(&after_colon[..digits]).ok_or(UriError::BadPort)?);
        rest = &after_colon[digits..];
    }
    // Parameters run to the '?' of the headers or the end: every byte a parameter
    // character, and no empty parameter name (`;;`, `;=x`, `;?` or a trailing `;`). The
    // scan stops only at ';', '%' and the end of the parameters.
    let mut escaped = false;
    let params_end = match rest.first() {
        None | Some(b'?') => 0,
        Some(b';') => {
            let mut i = 0;
            loop {
                if rest[i] == b'%' {
                    escaped = true;
                } else if matches!(rest.get(i + 1), None | Some(b';' | b'=' | b'?')) {
                    return Err(UriError::BadParam);
                }
                i = run_end(rest, i + 1, &URI_PARAM_PLAIN);
                match rest.get(i) {
                    Some(b';' | b'%') => {}
                    None | Some(b'?') => break i,
                    Some(_) => return Err(UriError::BadParam),
                }
            }
        }
        Some(_) => return Err(UriError::BadParam),
    };
    let params = &rest[..params_end];
    if escaped {
        check_escapes(params)?;
    }
    uri.params = Params::new(params);
    if params_end < rest.len() {
        let headers = &rest[params_end + 1..];
        if !headers.iter().all(|&b| is_uri_headers(b)) {
            return Err(UriError::BadHeaders);
        }
        check_escapes(headers)?;
        uri.headers = Some(headers);
    }
    Ok(())
}

/// Parses `number[;params]` of a `tel:` URI (RFC 3966).
fn parse_tel<'a>(rest: &'a [u8], uri: &mut Uri<'a>) -> Result<(), UriError> {
    let number_end = memchr::memchr(b';', rest).unwrap_or(rest.len());
    let number = &rest[..number_end];
    let number_ok = !number.is_empty()
        && number.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_hexdigit()
                || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')')
                || (b == b'+' && i == 0)
        });
    if !number_ok {
        return Err(UriError::BadNumber);
    }
    let params = &rest[number_end..];
    if !params.iter().all(|&b| is_uri_param(b)) {
        return Err(UriError::BadParam);
    }
    check_escapes(params)?;
    uri.user = Some(number);
    uri.params = Params::new(params);
    Ok(())
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    crate::chars::parse_u32(digits).and_then(|n| u16::try_from(n).ok())
}

/// Checks that every `%` is followed by two hexadecimal digits.
fn check_escapes(s: &[u8]) -> Result<(), UriError> {
    let mut rest = s;
    while let Some(i) = memchr::memchr(b'%', rest) {
        match rest.get(i + 1..i + 3) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => rest = &rest[i + 3..],
            _ => return Err(UriError::BadEscape),
        }
    }
    Ok(())
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Decodes `%HH` escapes. A `%` that does not start a valid escape is kept as is.
pub fn unescape(s: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *s.get(i)?;
        if b == b'%'
            && let Some([hi, lo]) = s.get(i + 1..i + 3)
            && hi.is_ascii_hexdigit()
            && lo.is_ascii_hexdigit()
        {
            i += 3;
            return Some(hex_value(*hi) << 4 | hex_value(*lo));
        }
        i += 1;
        Some(b)
    })
}

/// Compares two escaped strings by their decoded bytes (RFC 3261 §19.1.4: `%61lice`
/// and `alice` are the same user).
pub fn eq_unescaped(a: &[u8], b: &[u8]) -> bool {
    unescape(a).eq(unescape(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_with_every_part() {
        let uri =
            Uri::parse(b"sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=y")
                .unwrap();
        assert_eq!(uri.scheme, Scheme::Sips);
        assert_eq!(uri.user, Some(&b"alice"[..]));
        assert_eq!(uri.password, Some(&b"secret"[..]));
        assert_eq!(uri.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(uri.port, Some(5061));
        assert_eq!(uri.params.get(b"transport"), Some(Some(&b"tls"[..])));
        assert_eq!(uri.params.get(b"LR"), Some(None));
        assert_eq!(uri.headers, Some(&b"subject=hi&x=y"[..]));
    }

    #[test]
    fn user_part_may_hold_semicolons_and_escapes() {
        let uri = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(uri.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(uri.host, Host::Name(b"example.com"));
        assert!(uri.params.is_empty());
        let decoded: Vec<u8> = unescape(uri.user.unwrap()).collect();
        assert_eq!(decoded, b"user;par=u@example.net");
    }

    #[test]
    fn ipv4_and_host_names() {
        assert_eq!(
            Uri::parse(b"sip:10.0.0.1:5060").unwrap().host,
            Host::V4(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(Uri::parse(b"sip:1.2.3.4.5"), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:a..b"), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:-a.b"), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:[::1"), Err(UriError::BadHost));
        assert!(Uri::parse(b"sip:example.com.").is_ok());
        assert_eq!(Uri::parse(b"sip:a-.b"), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:256.1.1.1"), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:01.1.1.1"), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:1.2.3"), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:."), Err(UriError::BadHost));
        assert_eq!(Uri::parse(b"sip:a@b;lr;"), Err(UriError::BadParam));
        assert_eq!(Uri::parse(b"sip:a@b;=x"), Err(UriError::BadParam));
        assert_eq!(
            Uri::parse(b"sip:0.0.0.0").unwrap().host,
            Host::V4(Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn tel_and_other_schemes() {
        let tel = Uri::parse(b"tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(tel.scheme, Scheme::Tel);
        assert_eq!(tel.user, Some(&b"+1-201-555-0123"[..]));
        assert!(tel.params.contains(b"phone-context"));
        assert_eq!(Uri::parse(b"tel:12+3"), Err(UriError::BadNumber));
        let other = Uri::parse(b"soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(other.scheme, Scheme::Other(b"soap.beep"));
        assert_eq!(other.opaque, b"//192.0.2.103:3002");
    }

    #[test]
    fn malformed_uris_say_which_part_failed() {
        assert_eq!(Uri::parse(b""), Err(UriError::Empty));
        assert_eq!(Uri::parse(b"sip"), Err(UriError::BadScheme));
        assert_eq!(Uri::parse(b"<sip:a@b>"), Err(UriError::BadScheme));
        assert_eq!(Uri::parse(b"sip:a b@c"), Err(UriError::BadUser));
        assert_eq!(Uri::parse(b"sip:a@b:99999"), Err(UriError::BadPort));
        assert_eq!(Uri::parse(b"sip:a@b:"), Err(UriError::BadPort));
        assert_eq!(Uri::parse(b"sip:a@b;;lr"), Err(UriError::BadParam));
        assert_eq!(Uri::parse(b"sip:a%zz@b"), Err(UriError::BadEscape));
        assert_eq!(Uri::parse(b"sip:a@b?x=<y>"), Err(UriError::BadHeaders));
        assert_eq!(Uri::parse_with_limit(b"sip:a@b", 5), Err(UriError::TooLong));
    }

    #[test]
    fn escaped_comparison() {
        assert!(eq_unescaped(b"%61lice", b"alice"));
        assert!(!eq_unescaped(b"%61lice", b"alicf"));
        assert_eq!(unescape(b"null-%00-%").collect::<Vec<_>>(), b"null-\0-%");
    }
}
