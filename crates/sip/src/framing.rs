//! Cutting messages out of a TCP or TLS byte stream (RFC 3261 §18.3).
//!
//! A stream carries messages back to back, possibly pipelined, with CRLF keep-alives
//! between them (RFC 5626 §3.5.1), and arrives in pieces of any size. [`StreamFramer`]
//! says, for the bytes buffered so far, whether they begin with a keep-alive, a complete
//! message (and how long it is), or not enough bytes yet. It remembers how far it has
//! searched for the end of the headers, so a peer that trickles a large head one byte at
//! a time costs linear, not quadratic, work.

use crate::error::ParseError;
use crate::limits::Limits;
use crate::message::Message;

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// This many bytes of CR and LF: a keep-alive to consume (and, for a double CRLF
    /// ping, to answer with a single CRLF pong).
    KeepAlive(usize),
    /// A complete message of this many bytes; parse it with
    /// [`crate::Framing::Stream`], then consume it.
    Message(usize),
    /// More bytes are needed.
    Partial,
}

/// Frames messages in a stream; one per connection.
#[derive(Debug, Clone, Default)]
pub struct StreamFramer {
    /// Bytes at the front of the buffer already searched for the end of the headers.
    scanned: usize,
}

impl StreamFramer {
    /// A framer for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at the front of `buf` (the bytes received and not yet consumed). After a
    /// [`Frame::KeepAlive`] or [`Frame::Message`] the caller removes those bytes from the
    /// front of its buffer before calling again; after [`Frame::Partial`] it appends more
    /// bytes. An error means the stream cannot be framed any further: close it.
    pub fn next_frame(&mut self, buf: &[u8], limits: &Limits) -> Result<Frame, ParseError> {
        let leading = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(buf.len());
        if leading > 0 {
            self.scanned = 0;
            return Ok(Frame::KeepAlive(leading));
        }
        let limit = limits.effective_max_message_size();
        let Some(head_len) = self.find_head_end(buf) else {
            if buf.len() >= limit {
                return Err(ParseError::MessageTooLarge {
                    size: buf.len(),
                    limit,
                });
            }
            return Ok(Frame::Partial);
        };
        let head = Message::split(&buf[..head_len], limits, None)?;
        let body_len = head
            .content_length()
            .ok_or(ParseError::MissingContentLength)?;
        let total = head_len
            .checked_add(body_len)
            .filter(|&total| total <= limit)
            .ok_or(ParseError::MessageTooLarge {
                size: head_len.saturating_add(body_len),
                limit,
            })?;
        if buf.len() < total {
            return Ok(Frame::Partial);
        }
        self.scanned = 0;
        Ok(Frame::Message(total))
    }

    /// Length of the head including its closing empty line, if the buffer holds it.
    fn find_head_end(&mut self, buf: &[u8]) -> Option<usize> {
        // Resume a little before where the last search stopped: the terminator may
        // straddle the old end of the buffer.
        let mut from = self.scanned.saturating_sub(3);
        while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
            let newline = from + i;
            match (buf.get(newline + 1), buf.get(newline + 2)) {
                (Some(b'\n'), _) => return Some(newline + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(newline + 3),
                (None, _) | (Some(b'\r'), None) => break,
                _ => from = newline + 1,
            }
        }
        self.scanned = buf.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Framing;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
Content-Length: 4\r\n\r\nbody";

    #[test]
    fn frames_pipelined_messages_and_keepalives() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(OPTIONS);
        let limits = Limits::default();
        let mut framer = StreamFramer::new();
        let mut buf = &stream[..];
        assert_eq!(framer.next_frame(buf, &limits), Ok(Frame::KeepAlive(4)));
        buf = &buf[4..];
        for _ in 0..2 {
            let Ok(Frame::Message(len)) = framer.next_frame(buf, &limits) else {
                panic!("expected a message");
            };
            assert_eq!(len, OPTIONS.len());
            let message = Message::parse(&buf[..len], Framing::Stream, &limits).unwrap();
            assert_eq!(message.body(), b"body");
            buf = &buf[len..];
        }
        assert_eq!(framer.next_frame(buf, &limits), Ok(Frame::Partial));
    }

    #[test]
    fn every_prefix_is_partial_then_complete() {
        let limits = Limits::default();
        let mut framer = StreamFramer::new();
        for cut in 1..OPTIONS.len() {
            assert_eq!(
                framer.next_frame(&OPTIONS[..cut], &limits),
                Ok(Frame::Partial),
                "prefix of {cut} bytes"
            );
        }
        assert_eq!(
            framer.next_frame(OPTIONS, &limits),
            Ok(Frame::Message(OPTIONS.len()))
        );
    }

    #[test]
    fn stream_without_content_length_is_an_error() {
        let limits = Limits::default();
        let head = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert_eq!(
            StreamFramer::new().next_frame(head, &limits),
            Err(ParseError::MissingContentLength)
        );
    }

    #[test]
    fn endless_head_is_cut_at_the_size_limit() {
        let limits = Limits {
            max_message_size: 1024,
            ..Limits::default()
        };
        let mut head = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        let mut framer = StreamFramer::new();
        let mut result = Ok(Frame::Partial);
        while result == Ok(Frame::Partial) {
            head.extend_from_slice(b"X-Pad: 0123456789\r\n");
            result = framer.next_frame(&head, &limits);
        }
        assert!(matches!(result, Err(ParseError::MessageTooLarge { .. })));
        assert!(head.len() < 1100);
    }

    #[test]
    fn announced_body_beyond_the_limit_is_refused_before_it_arrives() {
        let limits = Limits::default();
        let head = b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999\r\n\r\n";
        assert!(matches!(
            StreamFramer::new().next_frame(head, &limits),
            Err(ParseError::MessageTooLarge { .. })
        ));
    }
}
