//! Hard limits checked before, or while, the parser does any work on a message.

/// Bounds on what the parser accepts. Every limit has its own [`crate::ParseError`]
/// variant so that a rejection says which bound was crossed.
///
/// The defaults admit every legitimate SIP message we know of (a REGISTER with many
/// Contacts, an INVITE with a long Record-Route set and a large SDP) and no message
/// that could not travel in one UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, start line, headers and body together. The parser
    /// indexes messages with 16-bit offsets, so a value above 65,535 acts as 65,535.
    pub max_message_size: usize,
    /// Most header fields accepted in one message. Up to [`Limits::INLINE_HEADERS`] the
    /// parser allocates nothing; above that it spills to the heap.
    pub max_headers: usize,
    /// Longest start line, or header field with its folded continuation lines.
    pub max_line_length: usize,
    /// Longest URI accepted in the request line and in header fields.
    pub max_uri_length: usize,
}

impl Limits {
    /// Header fields the parser can index without allocating.
    pub const INLINE_HEADERS: usize = 64;

    /// The largest message size the parser can index.
    pub const MAX_MESSAGE_SIZE: usize = u16::MAX as usize;

    /// `max_message_size`, capped at [`Limits::MAX_MESSAGE_SIZE`].
    pub fn effective_max_message_size(&self) -> usize {
        self.max_message_size.min(Self::MAX_MESSAGE_SIZE)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // The largest UDP payload; Kamailio's and OpenSIPS's default buffer size too.
            max_message_size: 65_535,
            max_headers: Limits::INLINE_HEADERS,
            max_line_length: 8_192,
            max_uri_length: 2_048,
        }
    }
}
