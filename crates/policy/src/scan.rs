//! Scanner detection: user-agent patterns, fingerprints of known tools, SQL injection
//! judged per header grammar.
//!
//! Matching is case-insensitive substring search with a first-byte filter: a byte that
//! cannot start any pattern costs one table lookup, so scanning a User-Agent against
//! the whole default list costs about as much as reading it once.

/// A compiled list of case-insensitive patterns.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// Lowercased patterns.
    patterns: Vec<Vec<u8>>,
    /// For each byte, the patterns starting with it (either case), as a bit set.
    starts: Box<[u64; 256]>,
    /// For each byte, the patterns whose second byte it is (either case); a pattern of
    /// one byte is in every entry.
    seconds: Box<[u64; 256]>,
    /// The patterns of one byte.
    singles: u64,
}

impl Patterns {
    /// Compiles `patterns` (at most 64; empty ones are ignored).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Patterns {
        let mut list: Vec<Vec<u8>> = Vec::new();
        let mut starts = Box::new([0u64; 256]);
        let mut seconds = Box::new([0u64; 256]);
        let mut singles = 0u64;
        for pattern in patterns.iter().take(64) {
            let bytes = pattern.as_ref().as_bytes().to_ascii_lowercase();
            let Some(&first) = bytes.first() else {
                continue;
            };
            let bit = 1u64 << list.len();
            starts[usize::from(first)] |= bit;
            starts[usize::from(first.to_ascii_uppercase())] |= bit;
            match bytes.get(1) {
                Some(&second) => {
                    seconds[usize::from(second)] |= bit;
                    seconds[usize::from(second.to_ascii_uppercase())] |= bit;
                }
                None => {
                    seconds.iter_mut().for_each(|s| *s |= bit);
                    singles |= bit;
                }
            }
            list.push(bytes);
        }
        Patterns {
            patterns: list,
            starts,
            seconds,
            singles,
        }
    }

    /// The first pattern found in `text`, as written in the list (lowercased).
    pub fn find(&self, text: &[u8]) -> Option<&[u8]> {
        for at in 0..text.len() {
            let first = self.starts[usize::from(text[at])];
            // A pattern of two bytes or more needs its second byte next.
            let second = text
                .get(at + 1)
                .map_or(self.singles, |&b| self.seconds[usize::from(b)]);
            let mut candidates = first & second;
            while candidates != 0 {
                let index = candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                let pattern = &self.patterns[index];
                if text
                    .get(at..at + pattern.len())
                    .is_some_and(|piece| piece.eq_ignore_ascii_case(pattern))
                    && self.whole_word_if_short(text, at, pattern.len())
                {
                    return Some(pattern);
                }
            }
        }
        None
    }

    /// Short alphanumeric patterns (`sipv`, `smap`, `Gulp`) match only as whole
    /// words, so that a product called "SIPVoice" or "Gulpstream" is not taken for a
    /// scanner.
    fn whole_word_if_short(&self, text: &[u8], at: usize, len: usize) -> bool {
        let word = text[at..at + len].iter().all(u8::is_ascii_alphanumeric);
        if len > 4 || !word {
            return true;
        }
        let before = at.checked_sub(1).and_then(|i| text.get(i));
        let after = text.get(at + len);
        !before.is_some_and(u8::is_ascii_alphanumeric)
            && !after.is_some_and(u8::is_ascii_alphanumeric)
    }

    /// True if the list is empty.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Recognises a tag made by sipvicious: the hexadecimal form of `<text>\x01<digits>`
/// (its `createTag`). The tools put it in every From tag, whatever user agent they are
/// told to show.
pub fn is_sipvicious_tag(tag: &[u8]) -> bool {
    if tag.len() < 8 || !tag.len().is_multiple_of(2) || tag.len() > 256 {
        return false;
    }
    let mut decoded = [0u8; 128];
    for (i, pair) in tag.chunks_exact(2).enumerate() {
        let (Some(high), Some(low)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return false;
        };
        decoded[i] = high << 4 | low;
    }
    let decoded = &decoded[..tag.len() / 2];
    let Some(separator) = decoded.iter().rposition(|&b| b == 1) else {
        return false;
    };
    let (text, digits) = (&decoded[..separator], &decoded[separator + 1..]);
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && text.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// SQL fragments that no user name, extension or display name of a phone contains.
const SQL_KEYWORDS: &[&[u8]] = &[
    b"'--",
    b"' or ",
    b"'or'",
    b"' and ",
    b"or 1=1",
    b"' =",
    b"'='",
    b"/*",
    b"union select",
    b"union all select",
    b"drop table",
    b"insert into",
    b"delete from",
    b"sleep(",
    b"benchmark(",
    b"waitfor delay",
    b"xp_cmdshell",
    b"information_schema",
    b"%27",
];

/// Judges a free-text field (a display name, a URI user): only SQL fragments count, so
/// a display name "O'Reilly" passes.
pub fn is_sql_in_text(value: &[u8]) -> bool {
    static KEYWORDS: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    let keywords = KEYWORDS.get_or_init(|| {
        let list: Vec<&str> = SQL_KEYWORDS
            .iter()
            .filter_map(|k| std::str::from_utf8(k).ok())
            .collect();
        Patterns::new(&list)
    });
    // One pass: a byte that starts no fragment costs a table lookup.
    keywords.find(value).is_some()
}

/// Judges a digest user name, which authenticates against a database: quotes, comment
/// markers, `=`, `;` and escaped quotes have no business there (the seeds' Homer rule,
/// `(\=)|(\-\-)|(')|(\#)|(\%27)|(\%24)`).
pub fn is_sql_in_username(value: &[u8]) -> bool {
    // Fast path: an ordinary user name is letters, digits and a few marks.
    if value
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'@'))
    {
        return false;
    }
    value
        .iter()
        .any(|&b| matches!(b, b'\'' | b'"' | b'=' | b'#' | b';' | b'\\'))
        || value.windows(2).any(|w| w == b"--" || w == b"/*")
        || value
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%27") || w.eq_ignore_ascii_case(b"%24"))
        || is_sql_in_text(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_USER_AGENTS;

    #[test]
    fn default_agents_are_found_anywhere_in_any_case() {
        let p = Patterns::new(DEFAULT_USER_AGENTS);
        assert_eq!(p.find(b"friendly-scanner"), Some(&b"friendly-scanner"[..]));
        assert_eq!(p.find(b"SIPVicious 0.3.4"), Some(&b"sipvicious"[..]));
        assert_eq!(
            p.find(b"pplsip VaxSIPUserAgent/3.1"),
            Some(&b"vaxsipuseragent"[..])
        );
        assert_eq!(p.find(b"Test Agent"), Some(&b"test agent"[..]));
        assert_eq!(p.find(b"smap 0.6"), Some(&b"smap"[..]));
        assert_eq!(p.find(b"Yealink SIP-T46S 66.86.0.15"), None);
        assert_eq!(p.find(b"Grandstream GXP2170"), None);
        // Short patterns only as words.
        assert_eq!(p.find(b"SIPVoice/1.0"), None);
        assert_eq!(p.find(b"Gulpstream"), None);
        assert_eq!(p.find(b""), None);
        // A pattern at the very end, and one-byte patterns.
        assert_eq!(p.find(b"by sipcli"), Some(&b"sipcli"[..]));
        let one = Patterns::new(&["x", "ab"]);
        assert_eq!(one.find(b"yy x"), Some(&b"x"[..]));
        assert_eq!(one.find(b"yyb"), None);
        assert_eq!(one.find(b"y ab"), Some(&b"ab"[..]));
    }

    #[test]
    fn sipvicious_tags_are_recognised() {
        // createTag("100") with a random number: hex of "100\x01" + "123456789".
        let tag: String = b"100\x01123456789"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(is_sipvicious_tag(tag.as_bytes()));
        let tag: String = b"1001:secret\x014242"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(is_sipvicious_tag(tag.as_bytes()));
        // Ordinary tags: sipp's, Kamailio's, a phone's.
        for tag in [
            &b"1"[..],
            b"29858SIPpTag001",
            b"as5e3c1f7e",
            b"1928301774",
            b"0123456789abcdef",
        ] {
            assert!(!is_sipvicious_tag(tag), "{}", String::from_utf8_lossy(tag));
        }
    }

    #[test]
    fn sql_is_judged_per_grammar() {
        assert!(!is_sql_in_text(b"\"O'Reilly\""));
        assert!(!is_sql_in_text(b"Anne-Marie d'Arc"));
        assert!(is_sql_in_text(b"' OR 1=1--"));
        assert!(is_sql_in_text(
            b"1001' union select password from subscriber"
        ));
        assert!(is_sql_in_text(b"x%27"));
        assert!(!is_sql_in_username(b"1001"));
        assert!(!is_sql_in_username(b"alice.smith@example.com"));
        assert!(is_sql_in_username(b"1001'"));
        assert!(is_sql_in_username(b"a=b"));
        assert!(is_sql_in_username(b"x--"));
        assert!(is_sql_in_username(b"a%24b"));
    }
}
