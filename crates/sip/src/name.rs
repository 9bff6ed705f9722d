//! Header names known to sipwall, recognised case-insensitively in long and compact form,
//! and request methods.

/// A header field name that the parser recognises while it splits the message.
///
/// Knowing the kind at split time lets accessors find a header by comparing one byte,
/// and maps compact forms (`v`, `f`, `t`, …, RFC 3261 §7.3.3 and the IANA registry) to
/// the same kind as their long form. Any other name is [`HeaderName::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
#[allow(missing_docs)] // the variant names are the header names
pub enum HeaderName {
    Via = 0,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Contact,
    Expires,
    ContentLength,
    ContentType,
    ContentEncoding,
    UserAgent,
    Server,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    Route,
    RecordRoute,
    Path,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Allow,
    Date,
    Event,
    AllowEvents,
    Subject,
    ReferTo,
    ReferredBy,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    Identity,
    IdentityInfo,
    SessionExpires,
    Warning,
    Other,
}

/// Number of [`HeaderName`] variants, [`HeaderName::Other`] included.
pub(crate) const HEADER_NAME_COUNT: usize = HeaderName::Other as usize + 1;

impl HeaderName {
    /// Every recognised name, [`HeaderName::Other`] excluded, in declaration order.
    pub const ALL: [HeaderName; HEADER_NAME_COUNT - 1] = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::MaxForwards,
        HeaderName::Contact,
        HeaderName::Expires,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::ContentEncoding,
        HeaderName::UserAgent,
        HeaderName::Server,
        HeaderName::Authorization,
        HeaderName::ProxyAuthorization,
        HeaderName::WwwAuthenticate,
        HeaderName::ProxyAuthenticate,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::Path,
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Supported,
        HeaderName::Unsupported,
        HeaderName::Allow,
        HeaderName::Date,
        HeaderName::Event,
        HeaderName::AllowEvents,
        HeaderName::Subject,
        HeaderName::ReferTo,
        HeaderName::ReferredBy,
        HeaderName::AcceptContact,
        HeaderName::RejectContact,
        HeaderName::RequestDisposition,
        HeaderName::Identity,
        HeaderName::IdentityInfo,
        HeaderName::SessionExpires,
        HeaderName::Warning,
    ];

    /// Recognises a header name as it appears on the wire (any case, long or compact).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if let [letter] = name {
            return Self::compact(letter.to_ascii_lowercase());
        }
        // Candidates by length and first letter, then one case-insensitive compare.
        let first = name.first().map_or(0, u8::to_ascii_lowercase);
        let candidate = match (name.len(), first) {
            (2, b't') => To,
            (3, b'v') => Via,
            (4, b'f') => From,
            (4, b'c') => CSeq,
            (4, b'p') => Path,
            (4, b'd') => Date,
            (5, b'r') => Route,
            (5, b'a') => Allow,
            (5, b'e') => Event,
            (6, b's') => Server,
            (7, b'c') => CallId,
            (7, b'e') => Expires,
            (7, b'r') => Require,
            (7, b's') => Subject,
            (7, b'w') => Warning,
            (8, b'r') => ReferTo,
            (8, b'i') => Identity,
            (9, b's') => Supported,
            (10, b'u') => UserAgent,
            (11, b'u') => Unsupported,
            (11, b'r') => ReferredBy,
            (12, b'm') => MaxForwards,
            (12, b'c') => ContentType,
            (12, b'r') => RecordRoute,
            (12, b'a') => AllowEvents,
            (13, b'a') => Authorization,
            (13, b'i') => IdentityInfo,
            (13, b'p') => ProxyRequire,
            (14, b'c') => ContentLength,
            (14, b'a') => AcceptContact,
            (14, b'r') => RejectContact,
            (15, b's') => SessionExpires,
            (16, b'w') => WwwAuthenticate,
            (16, b'c') => ContentEncoding,
            (18, b'p') => ProxyAuthenticate,
            (19, b'p') => ProxyAuthorization,
            (19, b'r') => RequestDisposition,
            _ => return Other,
        };
        if letters_eq(name, candidate.canonical().as_bytes()) {
            return candidate;
        }
        // Two names share length 7 and first letter 'c'.
        if candidate == CallId && letters_eq(name, b"Contact") {
            return Contact;
        }
        Other
    }

    /// The name whose compact form is `letter` (lower case), or [`HeaderName::Other`].
    const fn compact(letter: u8) -> HeaderName {
        use HeaderName::*;
        match letter {
            b'v' => Via,
            b'f' => From,
            b't' => To,
            b'i' => CallId,
            b'm' => Contact,
            b'l' => ContentLength,
            b'c' => ContentType,
            b'e' => ContentEncoding,
            b'k' => Supported,
            b's' => Subject,
            b'o' => Event,
            b'u' => AllowEvents,
            b'r' => ReferTo,
            b'b' => ReferredBy,
            b'a' => AcceptContact,
            b'j' => RejectContact,
            b'd' => RequestDisposition,
            b'y' => Identity,
            b'n' => IdentityInfo,
            b'x' => SessionExpires,
            _ => Other,
        }
    }

    /// The canonical long form, as sipwall writes it.
    pub const fn canonical(self) -> &'static str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            MaxForwards => "Max-Forwards",
            Contact => "Contact",
            Expires => "Expires",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            ContentEncoding => "Content-Encoding",
            UserAgent => "User-Agent",
            Server => "Server",
            Authorization => "Authorization",
            ProxyAuthorization => "Proxy-Authorization",
            WwwAuthenticate => "WWW-Authenticate",
            ProxyAuthenticate => "Proxy-Authenticate",
            Route => "Route",
            RecordRoute => "Record-Route",
            Path => "Path",
            Require => "Require",
            ProxyRequire => "Proxy-Require",
            Supported => "Supported",
            Unsupported => "Unsupported",
            Allow => "Allow",
            Date => "Date",
            Event => "Event",
            AllowEvents => "Allow-Events",
            Subject => "Subject",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            AcceptContact => "Accept-Contact",
            RejectContact => "Reject-Contact",
            RequestDisposition => "Request-Disposition",
            Identity => "Identity",
            IdentityInfo => "Identity-Info",
            SessionExpires => "Session-Expires",
            Warning => "Warning",
            Other => "",
        }
    }

    /// True for headers whose value may be a comma-separated list of entries that
    /// routing must see one by one.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Path
        )
    }
}

/// The longest recognised name, in bytes (Proxy-Authorization, Request-Disposition).
const LONGEST_NAME: usize = 19;

/// A name as the splitter sees it: up to three little-endian words of its bytes with bit
/// 0x20 set on each (which lower-cases letters and leaves `-` alone), zero beyond its
/// length.
pub(crate) type FoldedName = [u64; 3];

/// `name` folded as [`FoldedName`] (names longer than 24 bytes are never looked up).
const fn fold(name: &[u8]) -> FoldedName {
    let mut words = [0u64; 3];
    let mut i = 0;
    while i < name.len() && i < 24 {
        words[i / 8] |= ((name[i] | 0x20) as u64) << (8 * (i % 8));
        i += 1;
    }
    words
}

/// One recognisable spelling (long or compact form) and the name it stands for.
#[derive(Clone, Copy)]
struct Spelling {
    folded: FoldedName,
    name: HeaderName,
}

/// Every long form, then every compact form.
const SPELLINGS: [Spelling; 58] = {
    let mut spellings = [Spelling {
        folded: [0; 3],
        name: HeaderName::Other,
    }; 58];
    let mut n = 0;
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        let name = HeaderName::ALL[i];
        spellings[n] = Spelling {
            folded: fold(name.canonical().as_bytes()),
            name,
        };
        n += 1;
        i += 1;
    }
    let mut letter = b'a';
    while letter <= b'z' {
        let name = HeaderName::compact(letter);
        if !matches!(name, HeaderName::Other) {
            spellings[n] = Spelling {
                folded: fold(&[letter]),
                name,
            };
            n += 1;
        }
        letter += 1;
    }
    assert!(n == spellings.len());
    spellings
};

/// No spelling in this slot of [`BY_LENGTH_AND_LETTER`].
const NO_SPELLING: u8 = u8::MAX;

/// Indexes into [`SPELLINGS`] by length and first letter (its low five bits, which are
/// the same in both cases): at most two spellings share a slot (Call-ID and Contact).
static BY_LENGTH_AND_LETTER: [[u8; 2]; (LONGEST_NAME + 1) * 32] = {
    let mut slots = [[NO_SPELLING; 2]; (LONGEST_NAME + 1) * 32];
    let mut i = 0;
    while i < SPELLINGS.len() {
        let folded = SPELLINGS[i].folded;
        let mut len = 0;
        while len < 24 && (folded[len / 8] >> (8 * (len % 8))) & 0xFF != 0 {
            len += 1;
        }
        let slot = len * 32 + (folded[0] & 31) as usize;
        if slots[slot][0] == NO_SPELLING {
            slots[slot][0] = i as u8;
        } else {
            assert!(slots[slot][1] == NO_SPELLING);
            slots[slot][1] = i as u8;
        }
        i += 1;
    }
    slots
};

/// Recognises a folded name of `len` bytes. Exact (case-insensitive) when the name holds
/// no byte below 0x0E: CR folds onto `-` and is the only byte besides the letters
/// themselves that folds onto a byte of a known name; the splitter never passes one.
#[inline]
pub(crate) fn recognise_folded(len: usize, folded: &FoldedName) -> HeaderName {
    let Some(slot) = BY_LENGTH_AND_LETTER.get(len * 32 + (folded[0] & 31) as usize) else {
        return HeaderName::Other;
    };
    for &index in slot {
        let Some(spelling) = SPELLINGS.get(usize::from(index)) else {
            break;
        };
        let differ = (spelling.folded[0] ^ folded[0])
            | (spelling.folded[1] ^ folded[1])
            | (spelling.folded[2] ^ folded[2]);
        if differ == 0 {
            return spelling.name;
        }
    }
    HeaderName::Other
}

/// Compares a header name with a known name made of letters and `-`, ignoring case.
///
/// Setting bit 0x20 lower-cases an ASCII letter and leaves `-` as it is; no token
/// character other than an upper-case letter becomes a letter that way, so the compare is
/// exact. It runs without branches per byte, which is what makes name recognition cheap.
#[inline]
fn letters_eq(wire: &[u8], known: &[u8]) -> bool {
    if wire.len() != known.len() {
        return false;
    }
    // Compare in words: overlapping loads cover any length without a byte loop.
    let len = wire.len();
    let word8 =
        |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let word4 =
        |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    let word2 =
        |s: &[u8], at: usize| u16::from_le_bytes(s[at..at + 2].try_into().unwrap_or([0; 2]));
    const LOWER8: u64 = 0x2020_2020_2020_2020;
    match len {
        16.. => {
            let mut at = 0;
            while at + 8 <= len {
                if word8(wire, at) | LOWER8 != word8(known, at) | LOWER8 {
                    return false;
                }
                at += 8;
            }
            word8(wire, len - 8) | LOWER8 == word8(known, len - 8) | LOWER8
        }
        8..=15 => {
            word8(wire, 0) | LOWER8 == word8(known, 0) | LOWER8
                && word8(wire, len - 8) | LOWER8 == word8(known, len - 8) | LOWER8
        }
        4..=7 => {
            word4(wire, 0) | 0x2020_2020 == word4(known, 0) | 0x2020_2020
                && word4(wire, len - 4) | 0x2020_2020 == word4(known, len - 4) | 0x2020_2020
        }
        2..=3 => {
            word2(wire, 0) | 0x2020 == word2(known, 0) | 0x2020
                && word2(wire, len - 2) | 0x2020 == word2(known, len - 2) | 0x2020
        }
        1 => wire[0] | 0x20 == known[0] | 0x20,
        _ => true,
    }
}

/// A SIP request method. Methods are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variant names are the method names
pub enum Method<'a> {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Message,
    Refer,
    Publish,
    /// Any other token (extension methods are legal SIP).
    Other(&'a [u8]),
}

impl<'a> Method<'a> {
    /// Recognises a method token. The caller has checked that it is a token.
    pub fn from_bytes(token: &'a [u8]) -> Method<'a> {
        use Method::*;
        match token {
            b"INVITE" => Invite,
            b"ACK" => Ack,
            b"BYE" => Bye,
            b"CANCEL" => Cancel,
            b"REGISTER" => Register,
            b"OPTIONS" => Options,
            b"INFO" => Info,
            b"UPDATE" => Update,
            b"PRACK" => Prack,
            b"SUBSCRIBE" => Subscribe,
            b"NOTIFY" => Notify,
            b"MESSAGE" => Message,
            b"REFER" => Refer,
            b"PUBLISH" => Publish,
            other => Other(other),
        }
    }

    /// The method as it appears on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        use Method::*;
        match *self {
            Invite => b"INVITE",
            Ack => b"ACK",
            Bye => b"BYE",
            Cancel => b"CANCEL",
            Register => b"REGISTER",
            Options => b"OPTIONS",
            Info => b"INFO",
            Update => b"UPDATE",
            Prack => b"PRACK",
            Subscribe => b"SUBSCRIBE",
            Notify => b"NOTIFY",
            Message => b"MESSAGE",
            Refer => b"REFER",
            Publish => b"PUBLISH",
            Other(token) => token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_long_form_is_recognised_in_any_case() {
        for name in HeaderName::ALL {
            let long = name.canonical();
            assert_eq!(HeaderName::from_bytes(long.as_bytes()), name, "{long}");
            assert_eq!(
                HeaderName::from_bytes(long.to_ascii_uppercase().as_bytes()),
                name
            );
            assert_eq!(
                HeaderName::from_bytes(long.to_ascii_lowercase().as_bytes()),
                name
            );
        }
    }

    #[test]
    fn folded_recognition_agrees_with_from_bytes() {
        let mut spellings: Vec<Vec<u8>> = HeaderName::ALL
            .iter()
            .map(|name| name.canonical().as_bytes().to_vec())
            .collect();
        spellings.extend((b'a'..=b'z').map(|letter| vec![letter]));
        spellings.extend(
            [
                &b"Vias"[..],
                b"Contacts",
                b"Call-Id2",
                b"Tx",
                b"X-Foo",
                b"Cal1-ID",
            ]
            .map(<[u8]>::to_vec),
        );
        for spelling in spellings {
            for wire in [
                spelling.clone(),
                spelling.to_ascii_uppercase(),
                spelling.to_ascii_lowercase(),
            ] {
                assert_eq!(
                    recognise_folded(wire.len(), &fold(&wire)),
                    HeaderName::from_bytes(&wire),
                    "{}",
                    String::from_utf8_lossy(&wire)
                );
            }
        }
    }

    #[test]
    fn compact_forms_map_to_long_forms() {
        let pairs: &[(&[u8], HeaderName)] = &[
            (b"v", HeaderName::Via),
            (b"I", HeaderName::CallId),
            (b"f", HeaderName::From),
            (b"t", HeaderName::To),
            (b"m", HeaderName::Contact),
            (b"L", HeaderName::ContentLength),
            (b"c", HeaderName::ContentType),
            (b"k", HeaderName::Supported),
            (b"o", HeaderName::Event),
            (b"x", HeaderName::SessionExpires),
            (b"y", HeaderName::Identity),
            (b"q", HeaderName::Other),
        ];
        for (wire, name) in pairs {
            assert_eq!(HeaderName::from_bytes(wire), *name);
        }
    }

    #[test]
    fn near_misses_are_other() {
        for wire in [
            &b"Vias"[..],
            b"Contacts",
            b"C%6Fntact",
            b"Call-Id2",
            b"",
            b"Tx",
        ] {
            assert_eq!(HeaderName::from_bytes(wire), HeaderName::Other);
        }
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::from_bytes(b"INVITE"), Method::Invite);
        assert_eq!(Method::from_bytes(b"invite"), Method::Other(b"invite"));
        assert_eq!(Method::Register.as_bytes(), b"REGISTER");
    }
}
