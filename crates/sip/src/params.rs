//! `;name=value` parameter lists of URIs and header fields.

use crate::chars::{find_byte, find_unquoted, is_lws, is_token, trim_lws};
use crate::error::FieldError;

/// A parameter list as written, its leading `;` included (or an empty slice positioned
/// where parameters would go, so that the editor can insert one there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
}

/// One parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// The name, trimmed.
    pub name: &'a [u8],
    /// The value after `=`, trimmed; quoted values keep their quotes.
    pub value: Option<&'a [u8]>,
    /// The whole `name=value` text between the separators, trimmed.
    pub raw: &'a [u8],
    /// Set by the scanner when it has already seen that the name is a token and the
    /// value (if any) a token or host, so that [`Param::validate`] need not look again.
    plain: bool,
}

impl<'a> Params<'a> {
    /// Wraps a parameter list that starts with `;` (or is empty).
    pub fn new(raw: &'a [u8]) -> Self {
        Params { raw }
    }

    /// An empty list positioned at `at` (an empty slice of the message).
    pub fn empty_at(at: &'a [u8]) -> Self {
        Params { raw: &at[..0] }
    }

    /// The list as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// True if there is no parameter.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The parameters in order. Separators inside quoted values do not split.
    pub fn iter(&self) -> ParamIter<'a> {
        // A list that does not start with ';' (never produced by this crate) yields nothing.
        ParamIter {
            rest: self.raw.strip_prefix(b";"),
        }
    }

    /// Looks a parameter up by name, case-insensitively: `None` if absent, `Some(None)`
    /// for a parameter without value, `Some(Some(v))` otherwise.
    pub fn get(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|param| param.name.eq_ignore_ascii_case(name))
            .map(|param| param.value)
    }

    /// The full parameter (for the editor, which needs its position).
    pub fn find(&self, name: &[u8]) -> Option<Param<'a>> {
        self.iter()
            .find(|param| param.name.eq_ignore_ascii_case(name))
    }

    /// True if a parameter of that name is present.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Checks the `generic-param` grammar of header parameters: every name a token,
    /// every value a token, a host (IPv6 references included) or a quoted string.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.iter().try_for_each(|param| param.validate())
    }
}

impl Param<'_> {
    /// Checks the `generic-param` grammar: the name a token, the value a token, a host
    /// (IPv6 references included) or a quoted string.
    #[inline]
    pub fn validate(&self) -> Result<(), FieldError> {
        // Nearly always the scanner has already seen that the parameter is valid.
        if self.plain {
            return Ok(());
        }
        self.validate_in_full()
    }

    /// [`Param::validate`] for a parameter the scanner could not vouch for.
    #[inline(never)]
    fn validate_in_full(&self) -> Result<(), FieldError> {
        if self.name.is_empty() || !self.name.iter().all(|&b| is_token(b)) {
            return Err(FieldError::BadParam);
        }
        match self.value {
            Some(value) => validate_gen_value(value),
            None => Ok(()),
        }
    }
}

/// Iterator over the parameters of a [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    /// What follows the last `;` consumed.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;

    #[inline]
    fn next(&mut self) -> Option<Param<'a>> {
        let s = self.rest?;
        match fast_param(s) {
            Some((param, rest)) => {
                self.rest = rest;
                Some(param)
            }
            None => Some(self.slow_param(s)),
        }
    }
}

impl<'a> ParamIter<'a> {
    /// The general case: the entry runs to the next `;` outside quotes, trimmed.
    fn slow_param(&mut self, s: &'a [u8]) -> Param<'a> {
        let entry = match find_unquoted(s, b';') {
            Some(i) => {
                self.rest = Some(&s[i + 1..]);
                &s[..i]
            }
            None => {
                self.rest = None;
                s
            }
        };
        let entry = trim_lws(entry);
        let (name, value) = match find_byte(entry, b'=') {
            Some(eq) => (trim_lws(&entry[..eq]), Some(trim_lws(&entry[eq + 1..]))),
            None => (entry, None),
        };
        Param {
            name,
            value,
            raw: entry,
            plain: false,
        }
    }
}

/// The common case in one scan: `name[=value]` of plain characters, with optional white
/// space, followed by `;` or the end. Returns `None` for anything else, which
/// [`ParamIter::slow_param`] then handles with the same result.
#[inline]
fn fast_param(s: &[u8]) -> Option<(Param<'_>, Option<&[u8]>)> {
    let skip_lws = |mut i: usize| {
        while i < s.len() && is_lws(s[i]) {
            i += 1;
        }
        i
    };
    // `seen` collects the class bits common to every byte, so that one scan also tells
    // whether the name is a token and the value a token or host.
    // Four bytes are looked up per step and their classes combined, so that the loop
    // branches once per four bytes (branches and tags are long); the step that holds the
    // end is redone byte by byte. Wider steps measured slower on typical parameters.
    let scan = |i: usize, seen: &mut u8| {
        let rest = &s[i..];
        let mut n = 0;
        let mut all = u8::MAX;
        for chunk in rest.chunks_exact(4) {
            let step = chunk
                .iter()
                .fold(u8::MAX, |acc, &b| acc & CLASS[usize::from(b)]);
            if step & TEXT == 0 {
                break;
            }
            all &= step;
            n += 4;
        }
        for &b in &rest[n..] {
            let class = CLASS[usize::from(b)];
            if class & TEXT == 0 {
                break;
            }
            all &= class;
            n += 1;
        }
        *seen &= all;
        i + n
    };
    let name_start = skip_lws(0);
    let mut name_seen = TOKEN_CLASS;
    let mut i = scan(name_start, &mut name_seen);
    let name_end = i;
    let mut end = name_end;
    let mut value = None;
    let mut value_plain = true;
    i = skip_lws(i);
    if s.get(i) == Some(&b'=') {
        let value_start = skip_lws(i + 1);
        i = value_start;
        if s.get(i) == Some(&b'"') {
            // Measured as a whole quoted string: valid as it stands.
            i += quoted_value_len(&s[i..])?;
        } else {
            let mut value_seen = GEN_VALUE;
            i = scan(i, &mut value_seen);
            value_plain = value_seen & GEN_VALUE != 0 && i > value_start;
        }
        value = Some(&s[value_start..i]);
        end = i;
        i = skip_lws(i);
    }
    let rest = match s.get(i) {
        None => None,
        Some(b';') => Some(&s[i + 1..]),
        Some(_) => return None,
    };
    let param = Param {
        name: &s[name_start..name_end],
        value,
        raw: &s[name_start..end],
        plain: name_seen & TOKEN_CLASS != 0 && name_end > name_start && value_plain,
    };
    Some((param, rest))
}

/// Class bit: a character of parameter names and unquoted values (token characters and
/// the extra `paramchar`s of URI parameters, without the `;` and `=` that delimit them).
const TEXT: u8 = 1;
/// Class bit: a `token` character.
const TOKEN_CLASS: u8 = 2;
/// Class bit: a character of an unquoted `gen-value` (token or host, IPv6 included).
const GEN_VALUE: u8 = 4;

/// The class bits of every byte.
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            ) {
            TEXT | TOKEN_CLASS | GEN_VALUE
        } else if matches!(c, b':' | b'[' | b']') {
            TEXT | GEN_VALUE
        } else if matches!(c, b'(' | b')' | b'/' | b'&' | b'$') {
            TEXT
        } else {
            0
        };
        b += 1;
    }
    table
};

/// `gen-value = token / host / quoted-string`.
fn validate_gen_value(value: &[u8]) -> Result<(), FieldError> {
    if value.first() == Some(&b'"') {
        return match quoted_value_len(value) {
            Some(len) if len == value.len() => Ok(()),
            Some(_) => Err(FieldError::BadParam),
            None => Err(FieldError::UnterminatedQuote),
        };
    }
    let ok = !value.is_empty()
        && value
            .iter()
            .all(|&b| is_token(b) || matches!(b, b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::BadParam)
    }
}

/// Length of the quoted string at the start of `s` (quotes included), or `None` if it is
/// not closed. A backslash escapes any byte but CR and LF (RFC 3261 `quoted-pair`).
///
/// Read one byte at a time, which suits the short quoted strings of display names;
/// [`quoted_value_len`] gives the same answer faster on long ones.
pub(crate) fn quoted_string_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    match read_quoted(s, 1, s.len()) {
        Quoted::Ended(answer) => answer,
        Quoted::Open(_) => None,
    }
}

/// [`quoted_string_len`] for the long quoted values of parameters (Digest nonces and
/// responses, `+sip.instance`, a Contact's `methods` list): steps of sixteen bytes that
/// hold no quote, backslash or line break are skipped whole, tested with a fold that has
/// no early exit, which the compiler turns into vector compares; a step that holds one,
/// and the last bytes, are read one byte at a time. On a display name of a few bytes the
/// test of the step costs more than it saves, hence two functions.
pub(crate) fn quoted_value_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    // CR and LF are found as bytes below 0x0E (a tab, which may stand in quoted text,
    // only sends its step to the byte-at-a-time reading).
    let special = |b: u8| (b == b'"') | (b == b'\\') | (b < 0x0E);
    let mut i = 1;
    while i < s.len() {
        let step_end = match s.get(i..i + 16) {
            Some(step) if !step.iter().fold(false, |any, &b| any | special(b)) => {
                i += 16;
                continue;
            }
            Some(_) => i + 16,
            None => s.len(),
        };
        match read_quoted(s, i, step_end) {
            Quoted::Ended(answer) => return answer,
            Quoted::Open(next) => i = next,
        }
    }
    None
}

/// How far [`read_quoted`] got.
enum Quoted {
    /// The string closed (its length) or is malformed (`None`).
    Ended(Option<usize>),
    /// Still open at this position (one past `end` after an escape pair that straddles it).
    Open(usize),
}

/// The quoted-string rule, one byte at a time from `i` (inside the string) to `end`.
#[inline(always)]
fn read_quoted(s: &[u8], mut i: usize, end: usize) -> Quoted {
    while i < end {
        match s[i] {
            b'"' => return Quoted::Ended(Some(i + 1)),
            b'\\' => {
                if matches!(s.get(i + 1), None | Some(b'\r' | b'\n')) {
                    return Quoted::Ended(None);
                }
                i += 2;
            }
            // Folding inside a quoted string is LWS; a lone CR or LF is not.
            b'\r' | b'\n' if !s.get(i + 1).is_some_and(|&b| is_lws(b)) => {
                return Quoted::Ended(None);
            }
            _ => i += 1,
        }
    }
    Quoted::Open(i)
}

/// Removes the surrounding quotes of a quoted value, if any (escapes are kept).
pub fn unquote(value: &[u8]) -> &[u8] {
    if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoted_strings_end_where_the_rule_says() {
        let cases: [(&[u8], Option<usize>); 9] = [
            (b"\"abc\" rest", Some(5)),
            (b"\"a\\\"b\"", Some(6)),
            (b"\"a\r\n b\"", Some(7)),
            (b"\"a\rb\"", None),
            (b"\"a\\\r\n\"", None),
            (b"\"open", None),
            (b"\"ends in a backslash\\", None),
            (b"no quote", None),
            (
                b"\"0123456789abcdef0123456789abcdef\\\"0123456789\"",
                Some(46),
            ),
        ];
        for (input, expected) in cases {
            let shown = String::from_utf8_lossy(input);
            assert_eq!(quoted_string_len(input), expected, "{shown:?}");
            assert_eq!(quoted_value_len(input), expected, "{shown:?}");
        }
    }

    proptest! {
        /// The skipping reading agrees with the byte-at-a-time one: quotes,
        /// backslashes, CR, LF and white space at every offset around its steps.
        #[test]
        fn quoted_value_search_matches_the_bytewise_rule(
            body in proptest::collection::vec(
                prop_oneof![
                    Just(b'a'), Just(b'"'), Just(b'\\'), Just(b'\r'),
                    Just(b'\n'), Just(b' '), Just(b'\t'),
                ],
                0..80,
            ),
            padding in 0usize..40,
        ) {
            let mut input = vec![b'"'];
            input.extend(std::iter::repeat_n(b'x', padding));
            input.extend(&body);
            prop_assert_eq!(quoted_value_len(&input), quoted_string_len(&input));
        }
    }

    #[test]
    fn iterates_with_white_space_and_quotes() {
        let params = Params::new(b";  tag = 1918 ; x=\"a;b\";lr");
        let all: Vec<_> = params.iter().map(|p| (p.name, p.value)).collect();
        assert_eq!(
            all,
            vec![
                (&b"tag"[..], Some(&b"1918"[..])),
                (&b"x"[..], Some(&b"\"a;b\""[..])),
                (&b"lr"[..], None),
            ]
        );
        assert_eq!(params.get(b"TAG"), Some(Some(&b"1918"[..])));
        assert!(params.validate().is_ok());
    }

    #[test]
    fn empty_and_malformed_params_fail_validation() {
        assert_eq!(Params::new(b";;").validate(), Err(FieldError::BadParam));
        assert_eq!(Params::new(b";a=").validate(), Err(FieldError::BadParam));
        assert_eq!(
            Params::new(b";a=\"x").validate(),
            Err(FieldError::UnterminatedQuote)
        );
        assert_eq!(Params::new(b";a=<x>").validate(), Err(FieldError::BadParam));
        assert!(Params::new(b";received=[2001:db8::1]").validate().is_ok());
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(quoted_string_len(br#""a\"b" rest"#), Some(6));
        assert_eq!(quoted_string_len(br#""open"#), None);
        assert_eq!(quoted_string_len(b"\"a\\\0b\""), Some(6));
        assert_eq!(unquote(br#""x""#), b"x");
    }
}
