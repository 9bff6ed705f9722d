//! Scanner detection: user-agent patterns, fingerprints of known tools, SQL injection
//! judged per header grammar.
//!
//! Matching is case-insensitive substring search with a filter on pairs of bytes: the
//! text is read two bytes at a time, and a pair that cannot be part of any pattern's
//! beginning costs two table lookups. When every pattern is long, only every few
//! positions are read: a pattern of `n` bytes holds `n - 1` pairs, so with the pairs at
//! its first `s` offsets in the tables (`s < n`), reading every `s`-th pair meets one of
//! them wherever the pattern lies. The default scanner list (four bytes at least) is
//! read every third position.

/// Patterns per group: with three offsets each, their pairs fill a 64-bit set.
const GROUP: usize = 21;

/// A compiled list of case-insensitive patterns.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// Lowercased patterns, empty ones left out.
    patterns: Vec<Vec<u8>>,
    /// The patterns in groups, each with its own filter.
    groups: Vec<Group>,
}

/// The filter of up to [`GROUP`] consecutive patterns. Bit `b` of a set stands for the
/// pair at offset `offsets[b]` of pattern `first + members[b]`.
#[derive(Debug, Clone)]
struct Group {
    /// Index of the group's first pattern.
    first: usize,
    /// Positions read: every `stride`-th.
    stride: usize,
    /// For each byte, the pairs whose first byte it is (either case).
    firsts: [u64; 256],
    /// For each byte, the pairs whose second byte it is (either case); a pattern of one
    /// byte (stride 1) is in every entry.
    seconds: [u64; 256],
    /// The patterns of one byte.
    singles: u64,
    /// Per bit: the pattern, relative to `first`.
    members: [u8; 64],
    /// Per bit: the offset of the pair in the pattern.
    offsets: [u8; 64],
}

impl Group {
    fn new(first: usize, patterns: &[Vec<u8>]) -> Group {
        let shortest = patterns.iter().map(Vec::len).min().unwrap_or(1);
        let stride = (shortest - 1).clamp(1, 64 / patterns.len().max(1));
        let mut group = Group {
            first,
            stride,
            firsts: [0; 256],
            seconds: [0; 256],
            singles: 0,
            members: [0; 64],
            offsets: [0; 64],
        };
        let mut bit = 0;
        for (member, pattern) in patterns.iter().enumerate() {
            for offset in 0..stride {
                let mask = 1u64 << bit;
                group.members[bit] = member as u8;
                group.offsets[bit] = offset as u8;
                bit += 1;
                let first = pattern[offset];
                group.firsts[usize::from(first)] |= mask;
                group.firsts[usize::from(first.to_ascii_uppercase())] |= mask;
                match pattern.get(offset + 1) {
                    Some(&second) => {
                        group.seconds[usize::from(second)] |= mask;
                        group.seconds[usize::from(second.to_ascii_uppercase())] |= mask;
                    }
                    None => {
                        group.seconds.iter_mut().for_each(|s| *s |= mask);
                        group.singles |= mask;
                    }
                }
            }
        }
        group
    }

    /// The earliest match of the group's patterns in `text`: its start and the
    /// pattern's index (the first of the list for matches at the same start).
    #[inline(always)]
    fn find(&self, patterns: &[Vec<u8>], text: &[u8]) -> Option<(usize, usize)> {
        // Positions with a next byte: below `last`.
        let last = text.len().saturating_sub(1);
        let mut at = 0;
        while at < last {
            let pairs =
                self.firsts[usize::from(text[at])] & self.seconds[usize::from(text[at + 1])];
            if pairs != 0
                && let Some(found) = self.confirm(patterns, text, at, pairs)
            {
                return Some(found);
            }
            at += self.stride;
        }
        // The last byte has no pair: only a pattern of one byte can start there.
        if self.singles != 0
            && let Some(&last) = text.last()
        {
            let pairs = self.firsts[usize::from(last)] & self.singles;
            if pairs != 0 {
                return self.confirm(patterns, text, text.len() - 1, pairs);
            }
        }
        None
    }

    /// Checks the candidates the pair at `at` stands for. A match found here starts at
    /// most `stride - 1` bytes before `at`; one starting earlier would have been met at
    /// an earlier position read, so the earliest of those confirmed here is the first.
    #[cold]
    #[inline(never)]
    fn confirm(
        &self,
        patterns: &[Vec<u8>],
        text: &[u8],
        at: usize,
        mut pairs: u64,
    ) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        while pairs != 0 {
            let bit = pairs.trailing_zeros() as usize;
            pairs &= pairs - 1;
            let Some(start) = at.checked_sub(usize::from(self.offsets[bit])) else {
                continue;
            };
            let index = self.first + usize::from(self.members[bit]);
            let pattern = &patterns[index];
            if text
                .get(start..start + pattern.len())
                .is_some_and(|piece| piece.eq_ignore_ascii_case(pattern))
                && whole_word_if_short(text, start, pattern.len())
                && best.is_none_or(|found| (start, index) < found)
            {
                best = Some((start, index));
            }
        }
        best
    }
}

impl Patterns {
    /// Compiles `patterns` (empty ones are ignored).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Patterns {
        let patterns: Vec<Vec<u8>> = patterns
            .iter()
            .map(|p| p.as_ref().as_bytes().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        let groups = patterns
            .chunks(GROUP)
            .enumerate()
            .map(|(n, chunk)| Group::new(n * GROUP, chunk))
            .collect();
        Patterns { patterns, groups }
    }

    /// The first pattern found in `text` (earliest start, then first in the list), as
    /// written in the list (lowercased).
    pub fn find(&self, text: &[u8]) -> Option<&[u8]> {
        self.find_in(&[Some(text)]).map(|(_, pattern)| pattern)
    }

    /// The first of `texts` in which a pattern is found, with the pattern [`find`]
    /// returns for it: one call for the several places of a message.
    ///
    /// [`find`]: Patterns::find
    pub fn find_in(&self, texts: &[Option<&[u8]>]) -> Option<(usize, &[u8])> {
        let texts = texts
            .iter()
            .enumerate()
            .filter_map(|(n, text)| Some((n, (*text)?)));
        if let [group] = self.groups.as_slice() {
            // The usual case, kept apart so the loop stays tight.
            for (n, text) in texts {
                if let Some((_, index)) = group.find(&self.patterns, text) {
                    return Some((n, &self.patterns[index]));
                }
            }
            return None;
        }
        for (n, text) in texts {
            let mut best: Option<(usize, usize)> = None;
            for group in &self.groups {
                if let Some(found) = group.find(&self.patterns, text)
                    && best.is_none_or(|b| found < b)
                {
                    best = Some(found);
                }
            }
            if let Some((_, index)) = best {
                return Some((n, &self.patterns[index]));
            }
        }
        None
    }

    /// True if the list is empty.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Short alphanumeric patterns (`sipv`, `smap`, `Gulp`) match only as whole words, so
/// that a product called "SIPVoice" or "Gulpstream" is not taken for a scanner.
fn whole_word_if_short(text: &[u8], at: usize, len: usize) -> bool {
    let word = text[at..at + len].iter().all(u8::is_ascii_alphanumeric);
    if len > 4 || !word {
        return true;
    }
    let before = at.checked_sub(1).and_then(|i| text.get(i));
    let after = text.get(at + len);
    !before.is_some_and(u8::is_ascii_alphanumeric) && !after.is_some_and(u8::is_ascii_alphanumeric)
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
    sql_fragments().find(value).is_some()
}

/// The SQL fragments, compiled once.
pub(crate) fn sql_fragments() -> &'static Patterns {
    static KEYWORDS: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    KEYWORDS.get_or_init(|| {
        let list: Vec<&str> = SQL_KEYWORDS
            .iter()
            .filter_map(|k| std::str::from_utf8(k).ok())
            .collect();
        Patterns::new(&list)
    })
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

    /// The definition `find` must keep: at each position in turn, each pattern in turn.
    fn naive<'p>(patterns: &'p [Vec<u8>], text: &[u8]) -> Option<&'p [u8]> {
        (0..text.len()).find_map(|at| {
            patterns.iter().find_map(|p| {
                (text.len() - at >= p.len()
                    && text[at..at + p.len()].eq_ignore_ascii_case(p)
                    && whole_word_if_short(text, at, p.len()))
                .then_some(p.as_slice())
            })
        })
    }

    #[test]
    fn every_pattern_is_found_wherever_it_lies() {
        // Lists read with strides 1 (SQL fragments), 3 (the default agents) and others,
        // one over several groups; texts made of pieces of the patterns, so matches
        // overlap, start at every offset and end at the very end.
        let sql: Vec<&str> = SQL_KEYWORDS
            .iter()
            .map(|k| std::str::from_utf8(k).unwrap())
            .collect();
        let many: Vec<String> = (0..50).map(|i| format!("tool{i:02}x")).collect();
        let lists: Vec<Vec<String>> = vec![
            DEFAULT_USER_AGENTS.iter().map(|s| s.to_string()).collect(),
            sql.iter().map(|s| s.to_string()).collect(),
            vec!["abcdefgh".into(), "defg".into(), "cdefghij".into()],
            vec!["x".into(), "ab".into(), "bab".into()],
            many,
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for list in &lists {
            let compiled = Patterns::new(list);
            let lowered: Vec<Vec<u8>> = list
                .iter()
                .map(|p| p.to_ascii_lowercase().into_bytes())
                .collect();
            for pattern in &lowered {
                for (before, after) in [("", ""), ("a ", ""), ("", " z"), ("xy ", " q")] {
                    let text = format!("{before}{}{after}", String::from_utf8_lossy(pattern));
                    assert!(
                        compiled.find(text.as_bytes()).is_some(),
                        "{text:?} in {list:?}"
                    );
                }
            }
            for _ in 0..20_000 {
                let mut text = Vec::new();
                for _ in 0..random(6) {
                    match random(4) {
                        0 => text.push(b" -/'=%A1o"[random(9)]),
                        _ => {
                            let p = &lowered[random(lowered.len())];
                            let from = random(p.len());
                            let to = from + 1 + random(p.len() - from);
                            text.extend(p[from..to].iter().map(|b| {
                                if random(2) == 0 {
                                    b.to_ascii_uppercase()
                                } else {
                                    *b
                                }
                            }));
                        }
                    }
                }
                assert_eq!(
                    compiled.find(&text),
                    naive(&lowered, &text),
                    "{:?} in {list:?}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
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
