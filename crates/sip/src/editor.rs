//! Producing a new message from a parsed one plus a list of edits, without re-parsing.
//!
//! Edits address the original message by the slices its accessors return (every slice
//! of a [`Message`] knows its position, see [`Message::range_of`]), so a caller reads a
//! Via or a URI with the accessors and changes it in place. [`Editor::finish`] copies
//! the unchanged stretches and the new text into an output buffer in one pass, and sets
//! Content-Length to the length of the body it wrote. The editor and the output buffer
//! keep their capacity between messages, so steady-state editing does not allocate.
//!
//! New text is checked for CR, LF and NUL: an edit can never smuggle a header line or
//! end the headers early.

use std::ops::Range;

use thiserror::Error;

use crate::chars::is_token;
use crate::message::{Message, split_list};
use crate::name::HeaderName;
use crate::params::Params;

/// Why an edit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EditError {
    /// The slice given is not part of the message being edited.
    #[error("slice is not part of the message")]
    NotInMessage,
    /// Two edits change overlapping bytes.
    #[error("edits overlap")]
    Overlap,
    /// New text holds CR, LF or NUL.
    #[error("new text holds CR, LF or NUL")]
    BadText,
    /// A header name is not a token.
    #[error("invalid header name")]
    BadHeaderName,
    /// The header or Via to change does not exist.
    #[error("no such header")]
    NoSuchHeader,
    /// The start line has no Request-URI (the message is a response).
    #[error("not a request")]
    NotARequest,
}

/// Where [`Editor::insert_header`] puts a new header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Before every other header field.
    First,
    /// After every other header field.
    Last,
    /// Before the header field at this index.
    Before(usize),
    /// After the header field at this index.
    After(usize),
}

/// One change: replace `range` of the original by `text` of the editor's buffer.
#[derive(Debug, Clone)]
struct Edit {
    range: Range<usize>,
    text: Range<usize>,
    /// Order of creation, so that insertions at the same point keep their order.
    seq: usize,
}

/// Collects edits for one message at a time; reuse it across messages.
#[derive(Debug, Default)]
pub struct Editor {
    edits: Vec<Edit>,
    /// The new text of every edit, back to back.
    text: Vec<u8>,
    /// A replacement body, as a range of `text`.
    body: Option<Range<usize>>,
}

fn check_text(text: &[u8]) -> Result<(), EditError> {
    if memchr::memchr3(b'\r', b'\n', 0, text).is_some() {
        Err(EditError::BadText)
    } else {
        Ok(())
    }
}

impl Editor {
    /// An empty editor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all edits, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.edits.clear();
        self.text.clear();
        self.body = None;
    }

    /// True if no edit is pending.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty() && self.body.is_none()
    }

    fn push(&mut self, range: Range<usize>, parts: &[&[u8]]) {
        let start = self.text.len();
        for part in parts {
            self.text.extend_from_slice(part);
        }
        let seq = self.edits.len();
        self.edits.push(Edit {
            range,
            text: start..self.text.len(),
            seq,
        });
    }

    fn range(msg: &Message<'_>, piece: &[u8]) -> Result<Range<usize>, EditError> {
        msg.range_of(piece).ok_or(EditError::NotInMessage)
    }

    /// Replaces `piece`, a slice of `msg`, by `text`.
    pub fn replace(
        &mut self,
        msg: &Message<'_>,
        piece: &[u8],
        text: &[u8],
    ) -> Result<(), EditError> {
        check_text(text)?;
        let range = Self::range(msg, piece)?;
        self.push(range, &[text]);
        Ok(())
    }

    /// Inserts `text` just before `piece`.
    pub fn insert_before(
        &mut self,
        msg: &Message<'_>,
        piece: &[u8],
        text: &[u8],
    ) -> Result<(), EditError> {
        check_text(text)?;
        let at = Self::range(msg, piece)?.start;
        self.push(at..at, &[text]);
        Ok(())
    }

    /// Inserts `text` just after `piece`.
    pub fn insert_after(
        &mut self,
        msg: &Message<'_>,
        piece: &[u8],
        text: &[u8],
    ) -> Result<(), EditError> {
        check_text(text)?;
        let at = Self::range(msg, piece)?.end;
        self.push(at..at, &[text]);
        Ok(())
    }

    /// Replaces the Request-URI.
    pub fn replace_request_uri(&mut self, msg: &Message<'_>, uri: &[u8]) -> Result<(), EditError> {
        let line = msg.request_line().ok_or(EditError::NotARequest)?;
        self.replace(msg, line.uri, uri)
    }

    /// Inserts a header field `name: value`.
    pub fn insert_header(
        &mut self,
        msg: &Message<'_>,
        position: Position,
        name: &[u8],
        value: &[u8],
    ) -> Result<(), EditError> {
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(EditError::BadHeaderName);
        }
        check_text(value)?;
        let at = match position {
            Position::First => msg
                .header_line_range(0)
                .map_or(msg.head_end(), |line| line.start),
            Position::Last => msg.head_end(),
            Position::Before(index) => {
                msg.header_line_range(index)
                    .ok_or(EditError::NoSuchHeader)?
                    .start
            }
            Position::After(index) => {
                msg.header_line_range(index)
                    .ok_or(EditError::NoSuchHeader)?
                    .end
            }
        };
        self.push(at..at, &[name, b": ", value, b"\r\n"]);
        Ok(())
    }

    /// Removes the header field at `index`, folded lines included.
    pub fn remove_header(&mut self, msg: &Message<'_>, index: usize) -> Result<(), EditError> {
        let line = msg
            .header_line_range(index)
            .ok_or(EditError::NoSuchHeader)?;
        self.push(line, &[]);
        Ok(())
    }

    /// Replaces the whole value of the header field at `index`.
    pub fn replace_header_value(
        &mut self,
        msg: &Message<'_>,
        index: usize,
        value: &[u8],
    ) -> Result<(), EditError> {
        let header = msg.header_at(index).ok_or(EditError::NoSuchHeader)?;
        self.replace(msg, header.value, value)
    }

    /// Adds a Via on top of the others (a proxy forwarding a request, RFC 3261 §16.6
    /// step 8). `value` is the entry, such as `SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK…`.
    pub fn push_via(&mut self, msg: &Message<'_>, value: &[u8]) -> Result<(), EditError> {
        let position = match msg.header(HeaderName::Via) {
            Some(via) => Position::Before(via.index),
            None => Position::First,
        };
        self.insert_header(msg, position, b"Via", value)
    }

    /// Removes the topmost Via entry (a proxy forwarding a response, RFC 3261 §16.7
    /// step 3): the whole header field if it has one entry, else the first entry and
    /// its comma.
    pub fn pop_via(&mut self, msg: &Message<'_>) -> Result<(), EditError> {
        let via = msg.header(HeaderName::Via).ok_or(EditError::NoSuchHeader)?;
        let first = split_list(via.value)
            .next()
            .ok_or(EditError::NoSuchHeader)?;
        self.remove_list_entry(msg, via.index, first)
    }

    /// Removes one entry of a list-valued header field (a Route the proxy consumes, a
    /// Via it pops): the whole field if the entry is its only one, else the entry and
    /// the comma that separates it from its neighbour. `entry` is a slice returned by
    /// [`Message::values`] or [`split_list`] for the field at `header_index`.
    pub fn remove_list_entry(
        &mut self,
        msg: &Message<'_>,
        header_index: usize,
        entry: &[u8],
    ) -> Result<(), EditError> {
        let header = msg.header_at(header_index).ok_or(EditError::NoSuchHeader)?;
        let target = Self::range(msg, entry)?;
        // The field's only entry (the common case: a proxy's own Via or Route on a line
        // of its own) goes with its field, without splitting the list.
        let value = Self::range(msg, header.value)?;
        let bytes = msg.as_bytes();
        let blank = |gap: Option<&[u8]>| {
            gap.is_some_and(|gap| {
                gap.iter()
                    .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            })
        };
        if value.start <= target.start
            && target.end <= value.end
            && blank(bytes.get(value.start..target.start))
            && blank(bytes.get(target.end..value.end))
        {
            return self.remove_header(msg, header_index);
        }
        let mut previous: Option<Range<usize>> = None;
        let mut entries = split_list(header.value);
        while let Some(current) = entries.next() {
            let range = Self::range(msg, current)?;
            if range != target {
                previous = Some(range);
                continue;
            }
            let cut = match (entries.next(), previous) {
                // Not the last: up to where the next entry starts.
                (Some(next), _) => range.start..Self::range(msg, next)?.start,
                // The last of several: from where the previous entry ends.
                (None, Some(previous)) => previous.end..range.end,
                // The only one: the whole field.
                (None, None) => return self.remove_header(msg, header_index),
            };
            self.push(cut, &[]);
            return Ok(());
        }
        Err(EditError::NotInMessage)
    }

    /// Sets parameter `name` in `params` (a parameter list read from `msg`): replaces it
    /// if present, else appends it. `value` `None` writes a parameter without value.
    pub fn set_param(
        &mut self,
        msg: &Message<'_>,
        params: Params<'_>,
        name: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), EditError> {
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(EditError::BadText);
        }
        if let Some(value) = value {
            check_text(value)?;
        }
        let (eq, value_text): (&[u8], &[u8]) = match value {
            Some(value) => (b"=", value),
            None => (b"", b""),
        };
        match params.find(name) {
            Some(param) => {
                let range = Self::range(msg, param.raw)?;
                self.push(range, &[name, eq, value_text]);
            }
            None => {
                let at = Self::range(msg, params.as_bytes())?.end;
                self.push(at..at, &[b";", name, eq, value_text]);
            }
        }
        Ok(())
    }

    /// Removes parameter `name` from `params`, with its `;`. Does nothing if absent.
    pub fn remove_param(
        &mut self,
        msg: &Message<'_>,
        params: Params<'_>,
        name: &[u8],
    ) -> Result<(), EditError> {
        let Some(param) = params.find(name) else {
            return Ok(());
        };
        let all = Self::range(msg, params.as_bytes())?;
        let own = Self::range(msg, param.raw)?;
        // Walk back from the parameter to its ';' (white space may sit between them).
        let bytes = msg.as_bytes();
        let separator = bytes[all.start..own.start]
            .iter()
            .rposition(|&b| b == b';')
            .map_or(own.start, |i| all.start + i);
        self.push(separator..own.end, &[]);
        Ok(())
    }

    /// Replaces the body; Content-Length follows.
    pub fn set_body(&mut self, body: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(body);
        self.body = Some(start..self.text.len());
    }

    /// Writes the edited message into `out` (cleared first). Content-Length is set to
    /// the length of the body written, and added if the message had none; edits must
    /// not touch the Content-Length header themselves. The editor is empty afterwards,
    /// ready for the next message, whether this succeeded or not.
    pub fn finish(&mut self, msg: &Message<'_>, out: &mut Vec<u8>) -> Result<(), EditError> {
        let result = self.write(msg, out);
        self.clear();
        result
    }

    fn write(&mut self, msg: &Message<'_>, out: &mut Vec<u8>) -> Result<(), EditError> {
        let bytes = msg.as_bytes();
        let body = msg.body();
        let body_range = Self::range(msg, body)?;
        let body_len = self.body.as_ref().map_or(body.len(), |range| range.len());
        if let Some(text) = self.body.clone() {
            let seq = self.edits.len();
            self.edits.push(Edit {
                range: body_range,
                text,
                seq,
            });
        }
        let mut digits = itoa_buffer();
        let length = format_usize(body_len, &mut digits);
        match msg.header(HeaderName::ContentLength) {
            Some(header) if header.value != length => {
                let range = Self::range(msg, header.value)?;
                self.push(range, &[length]);
            }
            Some(_) => {}
            None => {
                let at = msg.head_end();
                self.push(at..at, &[b"Content-Length: ", length, b"\r\n"]);
            }
        }
        self.edits
            .sort_unstable_by_key(|edit| (edit.range.start, edit.range.end, edit.seq));
        let mut previous_end = 0;
        for edit in &self.edits {
            if edit.range.start < previous_end {
                return Err(EditError::Overlap);
            }
            previous_end = edit.range.end;
        }
        out.clear();
        let mut cursor = 0;
        for edit in &self.edits {
            out.extend_from_slice(&bytes[cursor..edit.range.start]);
            out.extend_from_slice(&self.text[edit.text.clone()]);
            cursor = edit.range.end;
        }
        out.extend_from_slice(&bytes[cursor..]);
        Ok(())
    }
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

/// Formats `n` in decimal into `buf` without allocating; returns the digits.
fn format_usize(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Framing, Limits};

    const REQUEST: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK2\r\n\
Via: SIP/2.0/TCP 192.0.2.3;branch=z9hG4bK3\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\n\
Subject: folded\r\n  value\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 4\r\n\
\r\n\
body";

    fn parse(bytes: &[u8]) -> Message<'_> {
        Message::parse(bytes, Framing::Datagram, &Limits::default()).unwrap()
    }

    fn apply(bytes: &[u8], edits: impl FnOnce(&mut Editor, &Message<'_>)) -> Vec<u8> {
        let msg = parse(bytes);
        let mut editor = Editor::new();
        edits(&mut editor, &msg);
        let mut out = Vec::new();
        editor.finish(&msg, &mut out).unwrap();
        out
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn no_edit_reproduces_the_message() {
        assert_eq!(apply(REQUEST, |_, _| {}), REQUEST);
    }

    #[test]
    fn push_and_pop_via() {
        let out = apply(REQUEST, |editor, msg| {
            editor
                .push_via(msg, b"SIP/2.0/UDP edge;branch=z9hG4bKe")
                .unwrap();
        });
        let msg = parse(&out);
        let branches: Vec<_> = msg.vias().map(|v| v.unwrap().branch().unwrap()).collect();
        assert_eq!(
            branches,
            [&b"z9hG4bKe"[..], b"z9hG4bK1", b"z9hG4bK2", b"z9hG4bK3"]
        );

        // Pop from a header with two entries leaves the second in place.
        let out = apply(REQUEST, |editor, msg| editor.pop_via(msg).unwrap());
        assert!(text(&out).contains("\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK2\r\n"));
        let msg = parse(&out);
        assert_eq!(msg.vias().count(), 2);

        // Pop from a header with one entry removes the line.
        let single = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa\r\n\
Via: SIP/2.0/UDP b;branch=z9hG4bKb\r\nContent-Length: 0\r\n\r\n";
        let out = apply(single, |editor, msg| editor.pop_via(msg).unwrap());
        assert_eq!(
            text(&out),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKb\r\nContent-Length: 0\r\n\r\n"
        );

        // Folded around its only entry, the field still goes whole.
        let folded = b"SIP/2.0 200 OK\r\nVia:  \r\n SIP/2.0/UDP a;branch=z9hG4bKa \r\n\t\r\n\
Via: SIP/2.0/UDP b;branch=z9hG4bKb\r\nContent-Length: 0\r\n\r\n";
        let out = apply(folded, |editor, msg| editor.pop_via(msg).unwrap());
        assert_eq!(
            text(&out),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKb\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn list_entries_are_removed_with_their_comma() {
        let routes =
            b"OPTIONS sip:a@b SIP/2.0\r\nRoute: <sip:one;lr>, <sip:two;lr>, <sip:three;lr>\r\n\
Route: <sip:four;lr>\r\nContent-Length: 0\r\n\r\n";
        let remove = |pick: usize| {
            let out = apply(routes, |editor, msg| {
                let value = msg.values(HeaderName::Route).nth(pick).unwrap();
                editor
                    .remove_list_entry(msg, value.header_index, value.value)
                    .unwrap();
            });
            let msg = parse(&out);
            let left: Vec<_> = msg
                .routes()
                .map(|r| String::from_utf8_lossy(r.unwrap().uri.host_raw).into_owned())
                .collect();
            (left, text(&out))
        };
        let (left, out) = remove(0);
        assert_eq!(left, ["two", "three", "four"]);
        assert!(out.contains("Route: <sip:two;lr>, <sip:three;lr>\r\n"));
        let (left, _) = remove(1);
        assert_eq!(left, ["one", "three", "four"]);
        let (left, out) = remove(2);
        assert_eq!(left, ["one", "two", "four"]);
        assert!(out.contains("Route: <sip:one;lr>, <sip:two;lr>\r\n"));
        let (left, out) = remove(3);
        assert_eq!(left, ["one", "two", "three"]);
        assert!(!out.contains("four"));
    }

    #[test]
    fn received_and_rport_are_stamped_on_the_top_via() {
        let out = apply(REQUEST, |editor, msg| {
            let via = msg.top_via().unwrap().unwrap();
            editor
                .set_param(msg, via.params, b"received", Some(b"203.0.113.7"))
                .unwrap();
            editor
                .set_param(msg, via.params, b"rport", Some(b"40000"))
                .unwrap();
        });
        let msg = parse(&out);
        let via = msg.top_via().unwrap().unwrap();
        assert_eq!(via.received(), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(via.rport(), crate::Rport::Value(40000));
        assert_eq!(via.branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(msg.vias().count(), 3);
    }

    #[test]
    fn params_in_uris_and_name_addrs() {
        let out = apply(REQUEST, |editor, msg| {
            let to = msg.to().unwrap().unwrap();
            editor
                .set_param(msg, to.params, b"tag", Some(b"xyz"))
                .unwrap();
            editor.set_param(msg, to.uri.params, b"lr", None).unwrap();
            let from = msg.from().unwrap().unwrap();
            editor.remove_param(msg, from.params, b"tag").unwrap();
        });
        let msg = parse(&out);
        let to = msg.to().unwrap().unwrap();
        assert_eq!(to.tag(), Some(&b"xyz"[..]));
        assert!(to.uri.params.contains(b"lr"));
        assert_eq!(msg.from().unwrap().unwrap().tag(), None);
        assert!(text(&out).contains("From: <sip:alice@example.com>\r\n"));
    }

    #[test]
    fn headers_are_inserted_removed_and_replaced() {
        let out = apply(REQUEST, |editor, msg| {
            editor
                .insert_header(msg, Position::First, b"X-First", b"1")
                .unwrap();
            editor
                .insert_header(msg, Position::Last, b"X-Last", b"2")
                .unwrap();
            let subject = msg.header(HeaderName::Subject).unwrap();
            editor.remove_header(msg, subject.index).unwrap();
            let call_id = msg.header(HeaderName::CallId).unwrap();
            editor
                .replace_header_value(msg, call_id.index, b"masked")
                .unwrap();
            editor
                .replace_request_uri(msg, b"sip:bob@10.0.0.5")
                .unwrap();
        });
        let msg = parse(&out);
        let names: Vec<_> = msg.headers().map(|h| h.raw_name).collect();
        assert_eq!(names.first(), Some(&&b"X-First"[..]));
        assert_eq!(names.last(), Some(&&b"X-Last"[..]));
        assert!(msg.header(HeaderName::Subject).is_none());
        assert_eq!(msg.call_id(), Some(&b"masked"[..]));
        assert_eq!(msg.request_line().unwrap().uri, b"sip:bob@10.0.0.5");
        assert_eq!(msg.body(), b"body");
    }

    #[test]
    fn content_length_follows_the_body() {
        let out = apply(REQUEST, |editor, _| editor.set_body(b"longer body"));
        let msg = parse(&out);
        assert_eq!(msg.content_length(), Some(11));
        assert_eq!(msg.body(), b"longer body");

        // Added when missing (a datagram without Content-Length going out over TCP).
        let bare = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nxyz";
        let out = apply(bare, |_, _| {});
        assert_eq!(
            text(&out),
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 3\r\n\r\nxyz"
        );
    }

    #[test]
    fn injected_line_breaks_are_refused() {
        let msg = parse(REQUEST);
        let mut editor = Editor::new();
        assert_eq!(
            editor.insert_header(&msg, Position::Last, b"X", b"a\r\nVia: evil"),
            Err(EditError::BadText)
        );
        assert_eq!(
            editor.insert_header(&msg, Position::Last, b"X: y", b"a"),
            Err(EditError::BadHeaderName)
        );
        assert_eq!(
            editor.replace_request_uri(&msg, b"sip:a\nb"),
            Err(EditError::BadText)
        );
        let via = msg.top_via().unwrap().unwrap();
        assert_eq!(
            editor.set_param(&msg, via.params, b"x", Some(b"\0")),
            Err(EditError::BadText)
        );
        assert!(editor.is_empty());
    }

    #[test]
    fn foreign_slices_and_overlaps_are_refused() {
        let msg = parse(REQUEST);
        let mut editor = Editor::new();
        let other = b"sip:elsewhere".to_vec();
        assert_eq!(
            editor.replace(&msg, &other, b"x"),
            Err(EditError::NotInMessage)
        );
        let uri = msg.request_line().unwrap().uri;
        editor.replace(&msg, uri, b"sip:a@b").unwrap();
        editor.replace(&msg, &uri[4..], b"c@d").unwrap();
        let mut out = Vec::new();
        assert_eq!(editor.finish(&msg, &mut out), Err(EditError::Overlap));

        // Content-Length belongs to the editor.
        let mut editor = Editor::new();
        let length = msg.header(HeaderName::ContentLength).unwrap();
        editor.replace(&msg, length.value, b"99").unwrap();
        editor.set_body(b"x");
        assert_eq!(editor.finish(&msg, &mut out), Err(EditError::Overlap));
    }

    #[test]
    fn editor_is_reusable() {
        let msg = parse(REQUEST);
        let mut editor = Editor::new();
        let mut out = Vec::new();
        editor
            .push_via(&msg, b"SIP/2.0/UDP e;branch=z9hG4bKx")
            .unwrap();
        editor.finish(&msg, &mut out).unwrap();
        assert!(editor.is_empty());
        editor.finish(&msg, &mut out).unwrap();
        assert_eq!(out, REQUEST);
    }
}
