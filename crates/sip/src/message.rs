//! Splitting a message into start line, header fields and body, without copying.
//!
//! [`Message::parse`] makes one pass over the head of the message: it checks the start
//! line, records each header field as offsets into the input, recognises the header
//! names that sipwall cares about, and frames the body by Content-Length. Nothing inside
//! a header value is parsed here; the typed accessors in [`crate::fields`] do that on
//! demand. No allocation happens for messages within [`Limits::INLINE_HEADERS`] header
//! fields.

use std::ops::Range;

use crate::Limits;
use crate::chars::{TOKEN, find_byte, is_lws, is_token, parse_u64, run_end, trim_lws};
use crate::error::ParseError;
use crate::name::{HEADER_NAME_COUNT, HeaderName, Method, recognise_folded};

/// How the message arrived, which decides how its end is found (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One UDP datagram: Content-Length is optional (the body is the rest of the
    /// datagram), and octets after the announced body are ignored.
    Datagram,
    /// A message cut out of a TCP or TLS stream by [`crate::StreamFramer`]:
    /// Content-Length is mandatory.
    Stream,
}

/// The request line of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// The method.
    pub method: Method<'a>,
    /// The Request-URI, unparsed; [`Message::request_uri`] parses it.
    pub uri: &'a [u8],
    /// The protocol version, such as `SIP/2.0` (checked for 2.0 by sanity, not here).
    pub version: &'a [u8],
}

/// The status line of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// The protocol version, such as `SIP/2.0`.
    pub version: &'a [u8],
    /// The status code, 100 to 699.
    pub code: u16,
    /// The reason phrase, possibly empty.
    pub reason: &'a [u8],
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// A request.
    Request(RequestLine<'a>),
    /// A response.
    Response(StatusLine<'a>),
}

/// One header field as 16-bit offsets into the message (messages are at most 64 KiB):
/// 10 bytes, so that the inline index stays small enough to build and move cheaply.
#[derive(Debug, Clone, Copy)]
struct RawHeader {
    name_start: u16,
    name_end: u16,
    value_start: u16,
    value_end: u16,
    name: HeaderName,
}

/// An unused slot of the inline index, never read (`len` bounds every read). All its
/// bytes are zero (`Via` is discriminant 0) so that the index starts as one memset.
const EMPTY_HEADER: RawHeader = RawHeader {
    name_start: 0,
    name_end: 0,
    value_start: 0,
    value_end: 0,
    name: HeaderName::Via,
};

/// The header index: inline up to [`Limits::INLINE_HEADERS`], on the heap beyond (only
/// when the configured limit allows more).
#[derive(Clone)]
struct HeaderList {
    inline: [RawHeader; Limits::INLINE_HEADERS],
    len: usize,
    spill: Vec<RawHeader>,
}

impl HeaderList {
    fn new() -> Self {
        HeaderList {
            inline: [EMPTY_HEADER; Limits::INLINE_HEADERS],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, header: RawHeader) {
        if self.len < Limits::INLINE_HEADERS {
            self.inline[self.len] = header;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(header);
        }
        self.len += 1;
    }

    #[inline]
    fn as_slice(&self) -> &[RawHeader] {
        if self.len <= Limits::INLINE_HEADERS {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

/// Marks "no header of this name" in [`Message::first_index`].
const NONE: u16 = u16::MAX;

/// A parsed SIP message that borrows the bytes it was parsed from.
#[derive(Clone)]
pub struct Message<'a> {
    /// The message itself: from the start line to the end of the body. Leading CRLFs
    /// and trailing datagram octets are not part of it.
    buf: &'a [u8],
    start_line: StartLine<'a>,
    headers: HeaderList,
    /// Index of the first header of each known name, so accessors find it in O(1).
    first_index: [u16; HEADER_NAME_COUNT],
    /// Where the body starts in `buf`; the body runs to the end of `buf`.
    body_start: usize,
    /// Offset of the empty line that ends the headers.
    head_end: usize,
    /// The Content-Length value, if the header is present.
    content_length: Option<usize>,
    /// The URI length limit, kept for accessors that parse URIs later.
    pub(crate) max_uri_length: usize,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("start_line", &self.start_line)
            .field("headers", &self.headers.len)
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// One header field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Position among the message's header fields, starting at 0.
    pub index: usize,
    /// The recognised name.
    pub name: HeaderName,
    /// The name as written on the wire.
    pub raw_name: &'a [u8],
    /// The value without leading and trailing white space. Folded lines stay inside
    /// it as CR LF followed by white space, which every accessor treats as white space.
    pub value: &'a [u8],
}

/// Returns true if `buf` holds nothing but line ends: a keep-alive (RFC 5626 §3.5.1 uses
/// CRLF CRLF "pings" on every transport).
pub fn is_keepalive(buf: &[u8]) -> bool {
    !buf.is_empty() && buf.iter().all(|&b| b == b'\r' || b == b'\n')
}

impl<'a> Message<'a> {
    /// Splits one message. For [`Framing::Datagram`] `input` is the whole datagram; for
    /// [`Framing::Stream`] it is one message framed by [`crate::StreamFramer`].
    ///
    /// Leading line ends are skipped (RFC 3261 §7.5).
    ///
    /// Inlined (it is a few lines around the splitting itself) so that the message is
    /// built where the caller keeps it: a call would return it through one more copy of
    /// its kilobyte.
    #[inline(always)]
    pub fn parse(input: &'a [u8], framing: Framing, limits: &Limits) -> Result<Self, ParseError> {
        Self::split(input, limits, Some(framing))
    }

    /// Splits the start line and headers only, leaving the body empty: enough to answer
    /// a request whose body cannot be framed (a bad or duplicated Content-Length, a
    /// truncated body) with a 400.
    pub fn parse_head(input: &'a [u8], limits: &Limits) -> Result<Self, ParseError> {
        Self::split(input, limits, None)
    }

    /// Splits the start line and headers and, given a framing, frames the body. Without
    /// one (for [`crate::StreamFramer`], which only needs Content-Length) the body is
    /// left empty. One function builds the message in place: it is a kilobyte large,
    /// and every move of it costs.
    #[inline(always)]
    pub(crate) fn split(
        input: &'a [u8],
        limits: &Limits,
        framing: Option<Framing>,
    ) -> Result<Self, ParseError> {
        let limit = limits.effective_max_message_size();
        if input.len() > limit {
            return Err(ParseError::MessageTooLarge {
                size: input.len(),
                limit,
            });
        }
        let skipped = input
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(ParseError::Empty)?;
        let buf = &input[skipped..];
        let mut parser = Splitter {
            buf,
            pos: 0,
            limits,
            head_end: 0,
        };
        let start_line = parser.start_line()?;
        let mut message = Message {
            buf,
            start_line,
            headers: HeaderList::new(),
            first_index: [NONE; HEADER_NAME_COUNT],
            body_start: 0,
            head_end: 0,
            content_length: None,
            max_uri_length: limits.max_uri_length,
        };
        parser.headers(&mut message)?;
        message.head_end = parser.head_end;
        let body_start = parser.pos;
        message.body_start = body_start;
        let Some(framing) = framing else {
            message.buf = &buf[..body_start];
            return Ok(message);
        };
        let available = buf.len() - body_start;
        let end = match message.content_length {
            Some(declared) if declared > available => {
                return Err(ParseError::BodyTruncated {
                    declared,
                    available,
                });
            }
            Some(declared) => body_start + declared,
            None if framing == Framing::Stream => return Err(ParseError::MissingContentLength),
            None => buf.len(),
        };
        message.buf = &buf[..end];
        Ok(message)
    }

    /// The bytes of the message, from the start line to the end of the body.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The start line.
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start_line
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start_line, StartLine::Request(_))
    }

    /// The request line, for requests.
    pub fn request_line(&self) -> Option<&RequestLine<'a>> {
        match &self.start_line {
            StartLine::Request(line) => Some(line),
            StartLine::Response(_) => None,
        }
    }

    /// The method of a request.
    pub fn method(&self) -> Option<Method<'a>> {
        self.request_line().map(|line| line.method)
    }

    /// The status code of a response.
    pub fn status_code(&self) -> Option<u16> {
        match &self.start_line {
            StartLine::Response(line) => Some(line.code),
            StartLine::Request(_) => None,
        }
    }

    /// The body as framed by Content-Length (or the rest of the datagram without it).
    pub fn body(&self) -> &'a [u8] {
        &self.buf[self.body_start..]
    }

    /// The value of the Content-Length header, if present.
    pub fn content_length(&self) -> Option<usize> {
        self.content_length
    }

    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.headers.len
    }

    fn view(&self, index: usize, raw: &RawHeader) -> Header<'a> {
        Header {
            index,
            name: raw.name,
            raw_name: &self.buf[usize::from(raw.name_start)..usize::from(raw.name_end)],
            value: &self.buf[usize::from(raw.value_start)..usize::from(raw.value_end)],
        }
    }

    /// The header field at `index`, in wire order.
    pub fn header_at(&self, index: usize) -> Option<Header<'a>> {
        self.headers
            .as_slice()
            .get(index)
            .map(|raw| self.view(index, raw))
    }

    /// All header fields in wire order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + '_ {
        self.headers
            .as_slice()
            .iter()
            .enumerate()
            .map(|(index, raw)| self.view(index, raw))
    }

    /// The first header field of a recognised name.
    #[inline]
    pub fn header(&self, name: HeaderName) -> Option<Header<'a>> {
        let index = self.first_index[name as usize];
        if index == NONE {
            return None;
        }
        self.header_at(usize::from(index))
    }

    /// Every header field of a recognised name, in wire order.
    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = Header<'a>> + '_ {
        let first = self.first_index[name as usize];
        let skip = if first == NONE {
            self.headers.len
        } else {
            usize::from(first)
        };
        self.headers
            .as_slice()
            .iter()
            .enumerate()
            .skip(skip)
            .filter(move |(_, raw)| raw.name == name)
            .map(|(index, raw)| self.view(index, raw))
    }

    /// Every header field whose name equals `name` case-insensitively (for headers that
    /// [`HeaderName`] does not know).
    pub fn headers_by_raw_name<'n>(
        &'n self,
        name: &'n [u8],
    ) -> impl Iterator<Item = Header<'a>> + 'n {
        let known = HeaderName::from_bytes(name);
        self.headers().filter(move |header| {
            if known != HeaderName::Other {
                header.name == known
            } else {
                header.name == HeaderName::Other && header.raw_name.eq_ignore_ascii_case(name)
            }
        })
    }

    /// Every comma-separated entry of every header field of `name`, in wire order: for
    /// Via, Contact, Route, Record-Route and Path, where one field may carry several.
    /// Commas inside quoted strings and angle brackets do not split.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = HeaderValue<'a>> + '_ {
        let first = self.first_index[name as usize];
        Values {
            message: self,
            name,
            next_header: if first == NONE {
                self.headers.len
            } else {
                usize::from(first)
            },
            current: None,
        }
    }

    /// Offset of the empty line that closes the headers (where a new header goes).
    pub(crate) fn head_end(&self) -> usize {
        self.head_end
    }

    /// The byte range of `piece` within the message, if `piece` is a slice of it (as every
    /// slice returned by this crate's accessors is). The editor uses this to address
    /// what it changes without the caller computing offsets.
    pub fn range_of(&self, piece: &[u8]) -> Option<Range<usize>> {
        let base = self.buf.as_ptr() as usize;
        let start = (piece.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(piece.len())?;
        (end <= self.buf.len()).then_some(start..end)
    }

    /// Range of the whole line(s) of header `index`, from its name to after the line end
    /// of its last continuation line (which may hold only white space).
    pub(crate) fn header_line_range(&self, index: usize) -> Option<Range<usize>> {
        let raw = self.headers.as_slice().get(index)?;
        let start = usize::from(raw.name_start);
        let mut end = usize::from(raw.value_end);
        loop {
            end += memchr::memchr(b'\n', &self.buf[end..])? + 1;
            if !matches!(self.buf.get(end), Some(b' ' | b'\t')) {
                return Some(start..end);
            }
        }
    }
}

/// One entry of a list-valued header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderValue<'a> {
    /// Index of the header field that carries it.
    pub header_index: usize,
    /// The entry, trimmed of white space.
    pub value: &'a [u8],
}

/// Splits a header value on commas that are outside quoted strings and angle brackets.
/// Entries are trimmed; empty entries are yielded (as empty slices at their position) so
/// that validation can reject them.
pub fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    SplitList { rest: Some(value) }
}

/// The iterator of [`split_list`].
struct SplitList<'a> {
    /// What follows the last separator, until the last entry has been returned.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for SplitList<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let current = self.rest?;
        // Only a comma splits: without one the rest is the last entry, whatever quotes
        // and brackets it holds. That is the usual field of one entry, found with one
        // search instead of a jump to each quote and bracket.
        if find_byte(current, b',').is_none() {
            self.rest = None;
            return Some(trim_lws(current));
        }
        let mut i = 0;
        // Jump between the only bytes that matter: separators, quotes and brackets.
        while let Some(found) = memchr::memchr3(b',', b'"', b'<', &current[i..]) {
            let at = i + found;
            match current[at] {
                b',' => {
                    self.rest = Some(&current[at + 1..]);
                    return Some(trim_lws(&current[..at]));
                }
                b'"' => match crate::params::quoted_value_len(&current[at..]) {
                    Some(len) => i = at + len,
                    // An open quote swallows the rest of the value.
                    None => break,
                },
                _ => match memchr::memchr(b'>', &current[at..]) {
                    Some(close) => i = at + close + 1,
                    None => break,
                },
            }
        }
        self.rest = None;
        Some(trim_lws(current))
    }
}

/// The iterator of [`Message::values`]: the entries of one header field, then of the next
/// field of the same name. Written out rather than built from iterator adapters, which
/// cost more per entry than the list split itself for the usual one-entry field.
struct Values<'m, 'a> {
    message: &'m Message<'a>,
    name: HeaderName,
    /// The index of the next header field to look at.
    next_header: usize,
    /// The field being split: its index and the entries not yet returned.
    current: Option<(usize, SplitList<'a>)>,
}

impl<'a> Iterator for Values<'_, 'a> {
    type Item = HeaderValue<'a>;

    fn next(&mut self) -> Option<HeaderValue<'a>> {
        loop {
            if let Some((header_index, entries)) = &mut self.current {
                if let Some(value) = entries.next() {
                    return Some(HeaderValue {
                        header_index: *header_index,
                        value,
                    });
                }
                self.current = None;
            }
            let headers = self.message.headers.as_slice();
            let (index, raw) = headers
                .iter()
                .enumerate()
                .skip(self.next_header)
                .find(|(_, raw)| raw.name == self.name)?;
            self.next_header = index + 1;
            let value = &self.message.buf[usize::from(raw.value_start)..usize::from(raw.value_end)];
            self.current = Some((index, SplitList { rest: Some(value) }));
        }
    }
}

/// The single pass over the head of a message.
struct Splitter<'a, 'l> {
    buf: &'a [u8],
    pos: usize,
    limits: &'l Limits,
    /// Offset of the empty line that ends the headers, once found.
    head_end: usize,
}

impl<'a> Splitter<'a, '_> {
    fn start_line(&mut self) -> Result<StartLine<'a>, ParseError> {
        let (end, next) = line_end(self.buf, 0)?;
        if end > self.limits.max_line_length {
            return Err(ParseError::LineTooLong {
                offset: 0,
                limit: self.limits.max_line_length,
            });
        }
        let line = &self.buf[..end];
        self.pos = next;
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
            self.status_line(line)
        } else {
            self.request_line(line)
        }
    }

    fn request_line(&self, line: &'a [u8]) -> Result<StartLine<'a>, ParseError> {
        let method_end = line
            .iter()
            .position(|&b| !is_token(b))
            .ok_or(ParseError::BadMethod)?;
        if method_end == 0 || line[method_end] != b' ' {
            return Err(ParseError::BadMethod);
        }
        let method = &line[..method_end];
        let rest = &line[method_end + 1..];
        let uri_end = find_byte(rest, b' ').ok_or(ParseError::BadVersion)?;
        let uri = &rest[..uri_end];
        if uri.len() > self.limits.max_uri_length {
            return Err(ParseError::UriTooLong {
                length: uri.len(),
                limit: self.limits.max_uri_length,
            });
        }
        // A URI starts with its scheme and holds no white space or control bytes; its
        // full grammar is checked by sanity, which knows the scheme.
        // A fold without early exit, which the compiler turns into vector compares.
        let plausible = uri.first().is_some_and(u8::is_ascii_alphabetic)
            && uri
                .iter()
                .fold(true, |ok, &b| ok & (b > b' ') & (b != 0x7f));
        if !plausible {
            return Err(ParseError::BadRequestUri);
        }
        let version = &rest[uri_end + 1..];
        check_version(version)?;
        Ok(StartLine::Request(RequestLine {
            method: Method::from_bytes(method),
            uri,
            version,
        }))
    }

    fn status_line(&self, line: &'a [u8]) -> Result<StartLine<'a>, ParseError> {
        let version_end = memchr::memchr(b' ', line).ok_or(ParseError::BadStatusCode)?;
        let version = &line[..version_end];
        check_version(version)?;
        let rest = &line[version_end + 1..];
        // Exactly three digits, then SP and the reason (which may be empty), or the end
        // of the line (a missing SP before an empty reason is tolerated).
        let digits = rest.get(..3).ok_or(ParseError::BadStatusCode)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStatusCode);
        }
        let code = digits
            .iter()
            .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatusCode);
        }
        let reason = match rest.get(3) {
            None => &rest[3..3],
            Some(b' ') => &rest[4..],
            Some(_) => return Err(ParseError::BadStatusCode),
        };
        if reason
            .iter()
            .any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
        {
            return Err(ParseError::BadReasonPhrase);
        }
        Ok(StartLine::Response(StatusLine {
            version,
            code,
            reason,
        }))
    }

    /// Splits header fields until the empty line; leaves `pos` at the body.
    ///
    /// This loop runs for every header line of every message, so the common line
    /// (`Name: value` CR LF) takes the shortest path: the name is read and recognised a
    /// word at a time with the colon right after it ([`name_before_colon`]), the line end
    /// is searched sixteen bytes per step, and state stays in locals. Anything else
    /// (white space before the colon, the empty line, errors) goes through
    /// [`general_name`], with the same results.
    fn headers(&mut self, message: &mut Message<'a>) -> Result<(), ParseError> {
        let buf = self.buf;
        let max_line_length = self.limits.max_line_length;
        let max_headers = self.limits.max_headers;
        let mut line_start = self.pos;
        loop {
            // The name: a token, optional white space, a colon. Nearly always the colon
            // follows the name directly, which `name_before_colon` takes in a few steps.
            let (name_end, colon, name) = match name_before_colon(buf, line_start) {
                Some((name_end, name)) => (name_end, name_end, name),
                None => match general_name(buf, line_start)? {
                    NameOrEnd::Name(name_end, colon, name) => (name_end, colon, name),
                    NameOrEnd::End(body_start) => {
                        self.head_end = line_start;
                        self.pos = body_start;
                        return Ok(());
                    }
                },
            };
            // The value runs to a line end that is not followed by white space (a folded
            // line continues the value, RFC 3261 §7.3.1).
            let value_start = colon + 1;
            let (mut value_end, mut next) = line_end(buf, value_start)?;
            while let Some(b' ' | b'\t') = buf.get(next) {
                (value_end, next) = line_end(buf, next)?;
            }
            if next - line_start > max_line_length {
                return Err(ParseError::LineTooLong {
                    offset: line_start,
                    limit: max_line_length,
                });
            }
            let index = message.headers.len;
            if index >= max_headers {
                return Err(ParseError::TooManyHeaders { limit: max_headers });
            }
            // Nearly always one space after the colon and nothing at the end: take that
            // without the general trim.
            let single_space = usize::from(buf.get(value_start) == Some(&b' '));
            let value = match buf.get(value_start + single_space..value_end) {
                Some(v @ [first, .., last]) if !is_lws(*first) && !is_lws(*last) => v,
                _ => trim_value(&buf[value_start..value_end]),
            };
            let value_start = value.as_ptr() as usize - buf.as_ptr() as usize;
            if name == HeaderName::ContentLength {
                if message.content_length.is_some() {
                    return Err(ParseError::DuplicateContentLength);
                }
                let length = parse_u64(value).ok_or(ParseError::BadContentLength)?;
                message.content_length =
                    Some(usize::try_from(length).map_err(|_| ParseError::BadContentLength)?);
            }
            let slot = &mut message.first_index[name as usize];
            if *slot == NONE {
                // Indexes above u16::MAX - 1 cannot be recorded; such messages only exist
                // with a configured header limit that high, and lookups fall back to None.
                *slot = u16::try_from(index).unwrap_or(NONE);
            }
            // Offsets fit in u16: `split` refuses inputs larger than 64 KiB.
            message.headers.push(RawHeader {
                name_start: line_start as u16,
                name_end: name_end as u16,
                value_start: value_start as u16,
                value_end: (value_start + value.len()) as u16,
                name,
            });
            line_start = next;
        }
    }
}

/// A header value without the white space around it, for values that have more than
/// the one space after the colon that the loop takes by itself.
#[cold]
#[inline(never)]
fn trim_value(value: &[u8]) -> &[u8] {
    trim_lws(value)
}

/// What the general path finds at the start of a header line.
enum NameOrEnd {
    /// A header name: its end, the colon's position, what it is.
    Name(usize, usize, HeaderName),
    /// The empty line that ends the headers, and where the body starts.
    End(usize),
}

/// The start of a header line that [`name_before_colon`] did not take: a name followed
/// by white space before the colon, the empty line, or an error. Kept out of line (it
/// runs once per message for the empty line, rarely otherwise) so that the loop over
/// header lines stays small.
#[cold]
#[inline(never)]
fn general_name(buf: &[u8], line_start: usize) -> Result<NameOrEnd, ParseError> {
    let name_end = run_end(buf, line_start, &TOKEN);
    if name_end == line_start {
        // No name: the empty line that ends the headers, or an error.
        return match buf.get(line_start) {
            Some(b'\n') => Ok(NameOrEnd::End(line_start + 1)),
            Some(b'\r') if buf.get(line_start + 1) == Some(&b'\n') => {
                Ok(NameOrEnd::End(line_start + 2))
            }
            Some(b'\r') => Err(ParseError::BareCarriageReturn { offset: line_start }),
            Some(_) => Err(ParseError::BadHeaderName { offset: line_start }),
            None => Err(ParseError::UnterminatedHeaders),
        };
    }
    let gap = buf[name_end..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(buf.len() - name_end);
    if buf.get(name_end + gap) != Some(&b':') {
        return Err(ParseError::MissingColon { offset: line_start });
    }
    let name = HeaderName::from_bytes(&buf[line_start..name_end]);
    Ok(NameOrEnd::Name(name_end, name_end + gap, name))
}

/// The header name at `start` when a colon follows it directly: its end and what it is.
/// `None` sends the line to the general path (white space before the colon, a name of
/// 24 bytes or more, fewer than 8 bytes left, the empty line, errors).
///
/// The line is read a word at a time: one step finds the first colon or control byte
/// in 8 bytes, and the same words, folded to lower case, recognise the name by length
/// and first letter without a second look at its bytes.
#[inline(always)]
fn name_before_colon(buf: &[u8], start: usize) -> Option<(usize, HeaderName)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
    };
    let w0 = word(start)?;
    let (len, name) = match stop_bytes(w0) {
        0 => {
            let w1 = word(start + 8)?;
            match stop_bytes(w1) {
                0 => {
                    let w2 = word(start + 16)?;
                    let in_word = first_stop(stop_bytes(w2))?;
                    let folded = [fold(w0, 8), fold(w1, 8), fold(w2, in_word)];
                    (16 + in_word, recognise_folded(16 + in_word, &folded))
                }
                stops => {
                    let in_word = first_stop(stops)?;
                    let folded = [fold(w0, 8), fold(w1, in_word), 0];
                    (8 + in_word, recognise_folded(8 + in_word, &folded))
                }
            }
        }
        stops => {
            let len = first_stop(stops)?;
            (len, recognise_folded(len, &[fold(w0, len), 0, 0]))
        }
    };
    if len == 0 || buf.get(start + len) != Some(&b':') {
        return None;
    }
    // A known name is made of letters and '-', so it is a token; any other name is
    // checked here as the general path would.
    if name == HeaderName::Other && !buf[start..start + len].iter().all(|&b| is_token(b)) {
        return None;
    }
    Some((start + len, name))
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `word` that is a colon or below 0x0E (CR, LF, tab…):
/// exact for the lowest such byte, which is the only one used.
#[inline(always)]
fn stop_bytes(word: u64) -> u64 {
    let colons = word ^ (ONES * u64::from(b':'));
    (colons.wrapping_sub(ONES) & !colons | word.wrapping_sub(ONES * 0x0E) & !word) & (ONES * 0x80)
}

/// The index in its word of the byte that [`stop_bytes`] found.
#[inline(always)]
fn first_stop(stops: u64) -> Option<usize> {
    (stops != 0).then(|| (stops.trailing_zeros() / 8) as usize)
}

/// The first `len` bytes (at most 8) of `word` as the name recogniser wants them: bit
/// 0x20 set on each (letters lower-cased, `-` unchanged), zero beyond `len`.
#[inline(always)]
fn fold(word: u64, len: usize) -> u64 {
    let folded = word | (ONES * 0x20);
    if len >= 8 {
        folded
    } else {
        folded & ((1u64 << (8 * len)) - 1)
    }
}

/// Finds the end of the line that contains `from`; returns (line end, next line start).
/// The line end excludes CR LF or LF; a CR that is not followed by LF is an error.
#[inline(always)]
fn line_end(buf: &[u8], from: usize) -> Result<(usize, usize), ParseError> {
    let mut at = from;
    loop {
        let i = find_control(buf, at).ok_or(ParseError::UnterminatedHeaders)?;
        match buf.get(i) {
            Some(b'\n') => return Ok((i, i + 1)),
            Some(b'\r') if buf.get(i + 1) == Some(&b'\n') => return Ok((i, i + 2)),
            Some(b'\r') => return Err(ParseError::BareCarriageReturn { offset: i }),
            // Another control byte (a tab inside the value): look further.
            Some(_) => at = i + 1,
            None => return Err(ParseError::UnterminatedHeaders),
        }
    }
}

/// Finds the first byte below 0x0E (CR, LF, and the rarer tab and other controls) at or
/// after `from`.
///
/// Sixteen bytes are tested per step with a fold that has no early exit, which the
/// compiler turns into one vector compare and mask test; only the step that holds the
/// byte looks at single bytes (as two words). This is cheaper than a call to `memchr2`
/// on header lines, which are a few dozen bytes long.
#[inline(always)]
fn find_control(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let mut base = 0;
    for chunk in rest.chunks_exact(16) {
        if chunk.iter().fold(false, |any, &b| any | (b < 0x0E)) {
            return Some(from + base + first_control_in(chunk));
        }
        base += 16;
    }
    rest[base..]
        .iter()
        .position(|&b| b < 0x0E)
        .map(|i| from + base + i)
}

/// The index of the first byte below 0x0E in a chunk of 16 that holds one.
#[inline(always)]
fn first_control_in(chunk: &[u8]) -> usize {
    // Per 8-byte word, the high bit of each byte below 0x0E: exact for the lowest such
    // byte (borrows only reach bytes above it), which is the one wanted.
    let below =
        |word: u64| word.wrapping_sub(0x0E0E_0E0E_0E0E_0E0E) & !word & 0x8080_8080_8080_8080;
    let word = |at: usize| {
        u64::from_le_bytes(
            chunk
                .get(at..at + 8)
                .and_then(|w| w.try_into().ok())
                .unwrap_or([0xFF; 8]),
        )
    };
    let low = below(word(0));
    if low != 0 {
        return (low.trailing_zeros() / 8) as usize;
    }
    8 + (below(word(8)).trailing_zeros() / 8) as usize
}

/// Checks `SIP/<digits>.<digits>` (the protocol name in any case).
fn check_version(version: &[u8]) -> Result<(), ParseError> {
    // Nearly every message says exactly this, which the general check below accepts.
    if version == b"SIP/2.0" {
        return Ok(());
    }
    let numbers = match version.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case(b"SIP/") => &version[4..],
        _ => return Err(ParseError::BadVersion),
    };
    let dot = memchr::memchr(b'.', numbers).ok_or(ParseError::BadVersion)?;
    let (major, minor) = (&numbers[..dot], &numbers[dot + 1..]);
    let digits = |s: &[u8]| !s.is_empty() && s.len() <= 3 && s.iter().all(u8::is_ascii_digit);
    if digits(major) && digits(minor) {
        Ok(())
    } else {
        Err(ParseError::BadVersion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Message<'_>, ParseError> {
        Message::parse(bytes, Framing::Datagram, &Limits::default())
    }

    fn with_headers(count: usize) -> Vec<u8> {
        let mut msg = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        for i in 0..count {
            msg.extend_from_slice(format!("X-H{i}: v{i}\r\n").as_bytes());
        }
        msg.extend_from_slice(b"\r\n");
        msg
    }

    #[test]
    fn request_and_response_lines() {
        let msg = parse(b"REGISTER sip:example.com SIP/2.0\r\nl: 0\r\n\r\n").unwrap();
        assert_eq!(msg.method(), Some(Method::Register));
        assert_eq!(msg.request_line().unwrap().uri, b"sip:example.com");
        assert_eq!(msg.content_length(), Some(0));

        let msg = parse(b"SIP/2.0 486 Busy Here\r\n\r\n").unwrap();
        assert_eq!(msg.status_code(), Some(486));
        let StartLine::Response(line) = msg.start_line() else {
            panic!("expected a response");
        };
        assert_eq!(line.reason, b"Busy Here");
        assert_eq!(
            parse(b"SIP/2.0 180\r\n\r\n").unwrap().status_code(),
            Some(180)
        );
    }

    #[test]
    fn start_line_errors_name_the_part() {
        let cases: &[(&[u8], ParseError)] = &[
            (
                b"INVITE  sip:a@b SIP/2.0\r\n\r\n",
                ParseError::BadRequestUri,
            ),
            (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", ParseError::BadVersion),
            (b"INVITE sip:a@b\r\n\r\n", ParseError::BadVersion),
            (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", ParseError::BadVersion),
            (b"INV(ITE sip:a@b SIP/2.0\r\n\r\n", ParseError::BadMethod),
            (b" INVITE sip:a@b SIP/2.0\r\n\r\n", ParseError::BadMethod),
            (
                b"INVITE <sip:a@b> SIP/2.0\r\n\r\n",
                ParseError::BadRequestUri,
            ),
            (
                b"INVITE sip:a\x01b SIP/2.0\r\n\r\n",
                ParseError::BadRequestUri,
            ),
            (b"SIP/2.0 99 Low\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0 700 High\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0 2000 OK\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0 200 O\x00K\r\n\r\n", ParseError::BadReasonPhrase),
            (b"SIP/2 200 OK\r\n\r\n", ParseError::BadVersion),
            (b"\r\n\r\n", ParseError::Empty),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input).err(),
                Some(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn header_errors_name_the_rule() {
        let cases: &[(&[u8], ParseError)] = &[
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nVia\r\n\r\n",
                ParseError::MissingColon { offset: 25 },
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\n: x\r\n\r\n",
                ParseError::BadHeaderName { offset: 25 },
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nX: a\rY: b\r\n\r\n",
                ParseError::BareCarriageReturn { offset: 29 },
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nX: a\r\n",
                ParseError::UnterminatedHeaders,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nl: 1\r\n\r\nx",
                ParseError::DuplicateContentLength,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: -1\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 1 2\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\n\r\nab",
                ParseError::BodyTruncated {
                    declared: 5,
                    available: 2,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input).err(),
                Some(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn every_limit_has_its_own_error() {
        let small = Limits {
            max_message_size: 100,
            max_headers: 3,
            max_line_length: 40,
            max_uri_length: 10,
        };
        let run = |input: &[u8]| Message::parse(input, Framing::Datagram, &small).err();
        assert_eq!(
            run(&[b'x'; 101]),
            Some(ParseError::MessageTooLarge {
                size: 101,
                limit: 100
            })
        );
        assert_eq!(
            run(&with_headers(4)),
            Some(ParseError::TooManyHeaders { limit: 3 })
        );
        assert!(run(&with_headers(3)).is_none());
        assert_eq!(
            run(b"OPTIONS sip:a@b SIP/2.0\r\nX: 0123456789012345678901234567890123456\r\n\r\n"),
            Some(ParseError::LineTooLong {
                offset: 25,
                limit: 40
            })
        );
        // Folded lines count toward the header they continue.
        assert_eq!(
            run(b"OPTIONS sip:a@b SIP/2.0\r\nX: 0123456789\r\n 0123456789\r\n 0123456789\r\n\r\n"),
            Some(ParseError::LineTooLong {
                offset: 25,
                limit: 40
            })
        );
        assert_eq!(
            run(b"OPTIONS sip:abcdefghijk SIP/2.0\r\n\r\n"),
            Some(ParseError::UriTooLong {
                length: 15,
                limit: 10
            })
        );
    }

    #[test]
    fn more_headers_than_fit_inline_when_configured() {
        let limits = Limits {
            max_headers: 200,
            ..Limits::default()
        };
        let bytes = with_headers(150);
        let msg = Message::parse(&bytes, Framing::Datagram, &limits).unwrap();
        assert_eq!(msg.header_count(), 150);
        assert_eq!(msg.header_at(149).unwrap().value, b"v149");
        assert_eq!(msg.headers().count(), 150);
        // The default limit refuses the same message.
        assert_eq!(
            parse(&bytes).err(),
            Some(ParseError::TooManyHeaders { limit: 64 })
        );
    }

    #[test]
    fn folding_bare_lf_and_leading_crlf() {
        let msg =
            parse(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\nSubject: a\n\tb\nVia: SIP/2.0/UDP h\n\nbody")
                .unwrap();
        assert_eq!(msg.header(HeaderName::Subject).unwrap().value, b"a\n\tb");
        assert_eq!(msg.body(), b"body");
        assert!(msg.as_bytes().starts_with(b"OPTIONS"));
    }

    #[test]
    fn names_of_every_length_and_odd_lines_split_as_before() {
        // The word-at-a-time name path covers names up to 23 bytes followed directly by
        // a colon; everything else takes the general path. Both must agree.
        let long_names = [
            "Via",
            "To",
            "Call-ID",
            "Contact",
            "X-Eight8",
            "Max-Forwards",
            "Content-Encoding",
            "Proxy-Authorization",
            "X-Twenty-Three-Bytes-23",
            "X-Twenty-Four-Bytes-Is24",
            "X-Name-Of-Thirty-Two-Bytes-Long",
        ];
        for name in long_names {
            for separator in [":", " :", "\t: "] {
                let text =
                    format!("OPTIONS sip:a@b SIP/2.0\r\n{name}{separator} v\tw \r\nl: 0\r\n\r\n");
                let msg = parse(text.as_bytes()).unwrap();
                let header = msg.header_at(0).unwrap();
                assert_eq!(header.raw_name, name.as_bytes(), "{text:?}");
                assert_eq!(header.value, b"v\tw", "{text:?}");
                assert_eq!(header.name, HeaderName::from_bytes(name.as_bytes()));
            }
        }
        // A CR inside a name is not a '-' (it folds onto one), and ends the name.
        assert_eq!(
            parse(b"OPTIONS sip:a@b SIP/2.0\r\nCall\rID: x\r\n\r\n").err(),
            Some(ParseError::MissingColon { offset: 25 })
        );
        // A name that is not a token, and a colon on the next line.
        assert_eq!(
            parse(b"OPTIONS sip:a@b SIP/2.0\r\nX(y): x\r\n\r\n").err(),
            Some(ParseError::MissingColon { offset: 25 })
        );
        assert_eq!(
            parse(b"OPTIONS sip:a@b SIP/2.0\r\nTo\r\n: x\r\n\r\n").err(),
            Some(ParseError::MissingColon { offset: 25 })
        );
        // Fewer than eight bytes left for the name.
        assert_eq!(
            parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia:").err(),
            Some(ParseError::UnterminatedHeaders)
        );
        let msg = parse(b"OPTIONS sip:a@b SIP/2.0\r\nv:1\n\n").unwrap();
        assert_eq!(msg.header(HeaderName::Via).unwrap().value, b"1");
    }

    #[test]
    fn lookups_by_name() {
        let msg = parse(
            b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP a, SIP/2.0/UDP b\r\nX-A: 1\r\n\
Via: SIP/2.0/UDP c\r\nx-a: 2\r\n\r\n",
        )
        .unwrap();
        let vias: Vec<_> = msg
            .values(HeaderName::Via)
            .map(|v| (v.header_index, v.value))
            .collect();
        assert_eq!(
            vias,
            [
                (0, &b"SIP/2.0/UDP a"[..]),
                (0, b"SIP/2.0/UDP b"),
                (2, b"SIP/2.0/UDP c")
            ]
        );
        let custom: Vec<_> = msg.headers_by_raw_name(b"X-a").map(|h| h.value).collect();
        assert_eq!(custom, [&b"1"[..], b"2"]);
        assert!(msg.header(HeaderName::Contact).is_none());
        assert_eq!(msg.headers_named(HeaderName::Contact).count(), 0);
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let entries: Vec<_> = split_list(br#""a, b" <sip:x;p=1,2>, <sip:y> , ,z"#).collect();
        assert_eq!(
            entries,
            [&br#""a, b" <sip:x;p=1,2>"#[..], b"<sip:y>", b"", b"z"]
        );
        // Without a comma, one entry whatever quotes and brackets it holds.
        for value in [&br#" "open <sip:x> "#[..], b"<sip:x", b"a>b", b""] {
            assert_eq!(split_list(value).collect::<Vec<_>>(), [trim_lws(value)]);
        }
        assert_eq!(
            split_list(br#""open, <sip:x>"#).collect::<Vec<_>>(),
            [&br#""open, <sip:x>"#[..]]
        );
    }

    #[test]
    fn the_head_alone_parses_when_the_body_cannot_be_framed() {
        let input = b"OPTIONS sip:a@b SIP/2.0\r\nl: 10\r\nl: 12\r\n\r\nshort";
        assert_eq!(parse(input).err(), Some(ParseError::DuplicateContentLength));
        let input = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nl: 99\r\n\r\nshort";
        assert!(matches!(
            parse(input),
            Err(ParseError::BodyTruncated { .. })
        ));
        let head = Message::parse_head(input, &Limits::default()).unwrap();
        assert_eq!(head.method(), Some(Method::Options));
        assert_eq!(head.body(), b"");
        assert_eq!(head.header_count(), 2);
    }

    #[test]
    fn keepalives() {
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(is_keepalive(b"\r\n"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(b"\r\nX"));
    }
}
