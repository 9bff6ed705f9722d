//! Byte classes of the SIP grammar (RFC 3261 §25.1), as 256-entry lookup tables.
//!
//! Every scanner in this crate asks "may this byte appear here?" many times per
//! message; one table load answers it without branches on ranges.

/// Builds a table where the bytes of `set` plus ASCII alphanumerics are true.
const fn table_with_alnum(set: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < set.len() {
        table[set[i] as usize] = true;
        i += 1;
    }
    table
}

/// `table` with `byte` removed.
const fn without(mut table: [bool; 256], byte: u8) -> [bool; 256] {
    table[byte as usize] = false;
    table
}

/// `token` of RFC 3261: method names, header names, parameter names and most values.
pub(crate) static TOKEN: [bool; 256] = table_with_alnum(b"-.!%*_+`'~");

/// Characters allowed in the user part of a SIP URI (`unreserved / escaped /
/// user-unreserved`), the `%` of escapes included.
pub(crate) static URI_USER: [bool; 256] = table_with_alnum(b"-_.!~*'()%&=+$,;?/");

/// [`URI_USER`] without `%`: the user scan stops at an escape, notes it, and goes on.
pub(crate) static URI_USER_PLAIN: [bool; 256] = without(URI_USER, b'%');

/// Characters allowed in the password part of a SIP URI.
static URI_PASSWORD: [bool; 256] = table_with_alnum(b"-_.!~*'()%&=+$,");

/// Characters of a host name or IPv4 address (IPv6 references are handled apart).
pub(crate) static HOST: [bool; 256] = table_with_alnum(b"-.");

/// Characters of URI parameters (`paramchar` plus the `;` and `=` that separate them).
pub(crate) static URI_PARAM: [bool; 256] = table_with_alnum(b"-_.!~*'()%[]/:&+$;=");

/// [`URI_PARAM`] without `;` and `%`: the characters inside one URI parameter that need
/// no second look.
pub(crate) static URI_PARAM_PLAIN: [bool; 256] = without(without(URI_PARAM, b';'), b'%');

/// Characters of the headers part of a SIP URI (`hnv-unreserved / unreserved / escaped`
/// plus `?`, `&`, `=` separators).
static URI_HEADERS: [bool; 256] = table_with_alnum(b"-_.!~*'()%[]/?:+$&=");

/// Characters of a URI of another scheme than sip/sips/tel: RFC 3986 reserved and
/// unreserved characters plus `%`.
static URI_OPAQUE: [bool; 256] = table_with_alnum(b"-_.!~*'()%;/?:@&=+$,[]#");

/// The end of the run of `table` bytes that starts at `from` in `s`: the index of the
/// first byte at or after `from` that is not in `table`, or `s.len()`.
///
/// Four bytes are looked up per step and their answers combined, so that the loop
/// branches once per four bytes instead of once per byte; the step that holds the end
/// is redone byte by byte.
#[inline(always)]
pub(crate) fn run_end(s: &[u8], from: usize, table: &[bool; 256]) -> usize {
    let rest = s.get(from..).unwrap_or_default();
    let mut n = 0;
    for chunk in rest.chunks_exact(4) {
        let hit = |k: usize| table[usize::from(chunk[k])];
        if !(hit(0) & hit(1) & hit(2) & hit(3)) {
            break;
        }
        n += 4;
    }
    let tail = &rest[n..];
    from + n
        + tail
            .iter()
            .position(|&b| !table[usize::from(b)])
            .unwrap_or(tail.len())
}

/// The index of the first `needle` in `s`, for the short slices of a header value
/// (a parameter, a URI, a list entry): sixteen bytes are compared per step with a fold
/// that has no early exit, which the compiler turns into one vector compare; only the
/// step that holds the byte looks at single bytes. On slices of a few dozen bytes this
/// costs less than the call and dispatch of `memchr`, which is built for long inputs.
#[inline(always)]
pub(crate) fn find_byte(s: &[u8], needle: u8) -> Option<usize> {
    let mut base = 0;
    for chunk in s.chunks_exact(16) {
        if chunk.iter().fold(false, |any, &b| any | (b == needle)) {
            return chunk.iter().position(|&b| b == needle).map(|i| base + i);
        }
        base += 16;
    }
    s[base..]
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
}

/// True for bytes of a `token`.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// True for bytes of the password part of a SIP URI.
#[inline]
pub(crate) fn is_uri_password(b: u8) -> bool {
    URI_PASSWORD[b as usize]
}

/// True for bytes of a host name or IPv4 literal.
#[inline]
pub(crate) fn is_host(b: u8) -> bool {
    HOST[b as usize]
}

/// True for bytes of URI parameters.
#[inline]
pub(crate) fn is_uri_param(b: u8) -> bool {
    URI_PARAM[b as usize]
}

/// True for bytes of URI headers.
#[inline]
pub(crate) fn is_uri_headers(b: u8) -> bool {
    URI_HEADERS[b as usize]
}

/// True for bytes of an opaque URI of an unknown scheme.
#[inline]
pub(crate) fn is_uri_opaque(b: u8) -> bool {
    URI_OPAQUE[b as usize]
}

/// True for linear white space bytes as they appear inside a header value: SP, HTAB,
/// and the CR LF of a folded line (the splitter has already checked that folding is
/// followed by white space).
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Removes linear white space at both ends of `s`.
#[inline]
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Removes linear white space at the start of `s`.
#[inline]
pub(crate) fn trim_lws_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    &s[start..]
}

/// Parses an unsigned decimal number of at most `u64` range; `None` on an empty
/// input, a non-digit, or overflow.
#[inline]
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Parses an unsigned decimal number that must fit in a `u32`.
#[inline]
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

/// Finds the first byte of `s` that is outside quoted strings and equals `needle`.
/// Backslash escapes inside quotes are honoured. Returns `None` if not found or if a
/// quote is left open.
pub(crate) fn find_unquoted(s: &[u8], needle: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if in_quotes {
            match b {
                b'\\' => i += 1,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_matches_rfc3261() {
        for b in b"abcXYZ019-.!%*_+`'~" {
            assert!(is_token(*b), "{} should be a token byte", *b as char);
        }
        for b in b" \t\r\n\"(),/:;<=>?@[\\]{}" {
            assert!(!is_token(*b), "{:?} should not be a token byte", *b as char);
        }
        assert!(!is_token(0x80));
    }

    #[test]
    fn numbers_reject_overflow_and_junk() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u64(b"36893488147419103232"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"12a"), None);
    }

    #[test]
    fn trimming_handles_folding_and_empty() {
        assert_eq!(trim_lws(b" \r\n\ta b \t"), b"a b");
        assert_eq!(trim_lws(b"   "), b"");
        assert_eq!(trim_lws_start(b"\t x "), b"x ");
    }

    #[test]
    fn byte_search_matches_a_plain_search_at_every_length() {
        for len in 0..40 {
            for at in 0..=len {
                let mut s = vec![b'a'; len];
                if at < len {
                    s[at] = b'=';
                }
                let expected = s.iter().position(|&b| b == b'=');
                assert_eq!(find_byte(&s, b'='), expected, "length {len}, at {at}");
            }
        }
        assert_eq!(find_byte(b"a=b=c", b'='), Some(1), "the first of two");
    }

    #[test]
    fn unquoted_search_skips_quoted_text() {
        assert_eq!(find_unquoted(br#""a,b" <x>, y"#, b','), Some(9));
        assert_eq!(find_unquoted(br#""a\",b" c"#, b','), None);
        assert_eq!(find_unquoted(br#""open, c"#, b','), None);
    }
}
