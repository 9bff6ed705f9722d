//! Typed errors: one variant per rule, so that a rejection always says which rule failed.

use thiserror::Error;

/// Why a message could not be split into start line, headers and body.
///
/// Each variant names one rule of the framing grammar or one configured limit
/// ([`crate::Limits`]). Offsets count bytes from the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input holds nothing but line ends (a keep-alive) or nothing at all.
    #[error("empty message")]
    Empty,
    /// The message is larger than `Limits::max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Size of the input.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The message has more header fields than `Limits::max_headers`.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// The start line or one header field (with its folded lines) is longer than
    /// `Limits::max_line_length`.
    #[error("line at offset {offset} exceeds the limit of {limit} bytes")]
    LineTooLong {
        /// Where the line starts.
        offset: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The Request-URI is longer than `Limits::max_uri_length`.
    #[error("Request-URI of {length} bytes exceeds the limit of {limit}")]
    UriTooLong {
        /// Length of the Request-URI.
        length: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request method is empty or holds a byte that is not a token character.
    #[error("invalid method in the request line")]
    BadMethod,
    /// The Request-URI is empty, holds white space or control bytes, or does not start
    /// with a scheme (for example `<sip:…>`).
    #[error("invalid Request-URI in the request line")]
    BadRequestUri,
    /// The protocol version is not of the form `SIP/<digits>.<digits>`, or the start line
    /// has extra or trailing white space.
    #[error("invalid SIP version in the start line")]
    BadVersion,
    /// The status code of a response is not three digits between 100 and 699.
    #[error("invalid status code in the status line")]
    BadStatusCode,
    /// The reason phrase of a response holds control bytes.
    #[error("invalid reason phrase in the status line")]
    BadReasonPhrase,
    /// A header line does not start with a token before its colon.
    #[error("invalid header name at offset {offset}")]
    BadHeaderName {
        /// Where the header line starts.
        offset: usize,
    },
    /// A header name is not followed by a colon.
    #[error("missing colon after the header name at offset {offset}")]
    MissingColon {
        /// Where the header line starts.
        offset: usize,
    },
    /// A carriage return is not followed by a line feed (a bare CR could make another
    /// parser see a header this one does not).
    #[error("bare carriage return at offset {offset}")]
    BareCarriageReturn {
        /// Where the CR is.
        offset: usize,
    },
    /// The input ends before the empty line that closes the headers.
    #[error("headers are not terminated by an empty line")]
    UnterminatedHeaders,
    /// The Content-Length value is not a decimal number that fits the message.
    #[error("invalid Content-Length value")]
    BadContentLength,
    /// The message carries more than one Content-Length header field. Two parsers could
    /// pick different ones and frame different bodies, so this is never accepted.
    #[error("more than one Content-Length header field")]
    DuplicateContentLength,
    /// A message on a stream transport has no Content-Length, so its end cannot be found.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length announces more body bytes than the datagram holds.
    #[error("Content-Length {declared} is larger than the {available} bytes of body present")]
    BodyTruncated {
        /// The value of Content-Length.
        declared: usize,
        /// Bytes present after the headers.
        available: usize,
    },
}

/// Why a URI could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UriError {
    /// The URI is empty.
    #[error("empty URI")]
    Empty,
    /// The URI is longer than the configured limit.
    #[error("URI longer than the limit")]
    TooLong,
    /// No valid `scheme:` prefix.
    #[error("invalid or missing URI scheme")]
    BadScheme,
    /// A byte not allowed in the user part.
    #[error("invalid user part")]
    BadUser,
    /// A byte not allowed in the password part.
    #[error("invalid password part")]
    BadPassword,
    /// The host is empty or not a host name, IPv4 address or IPv6 reference.
    #[error("invalid host")]
    BadHost,
    /// The port is empty, not decimal or above 65535.
    #[error("invalid port")]
    BadPort,
    /// A byte not allowed in URI parameters, or an empty parameter.
    #[error("invalid URI parameter")]
    BadParam,
    /// A byte not allowed in the headers part.
    #[error("invalid URI headers part")]
    BadHeaders,
    /// A `%` is not followed by two hexadecimal digits.
    #[error("invalid percent escape")]
    BadEscape,
    /// A `tel:` number holds a byte that is not a phone digit or visual separator.
    #[error("invalid telephone number")]
    BadNumber,
    /// A byte not allowed in a URI of another scheme.
    #[error("invalid character in URI")]
    BadCharacter,
}

/// Why the value of one header field could not be parsed by its typed accessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The value is empty where the grammar needs something.
    #[error("empty value")]
    Empty,
    /// A URI inside the value is invalid.
    #[error("invalid URI: {0}")]
    Uri(#[from] UriError),
    /// A quoted string is not closed.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// A display name holds bytes that are neither token characters nor white space
    /// (it should have been quoted).
    #[error("invalid display name")]
    BadDisplayName,
    /// A `<` has no matching `>`.
    #[error("unclosed angle bracket")]
    UnclosedAngle,
    /// White space directly inside `<` and `>`.
    #[error("white space inside angle brackets")]
    SpaceInAngle,
    /// A URI with `?` or `,` is not enclosed in angle brackets, so where it ends is
    /// ambiguous (RFC 3261 §20).
    #[error("URI with '?' or ',' must be enclosed in angle brackets")]
    UnbracketedUri,
    /// An empty parameter (`;;`), a parameter name that is not a token, or a value that
    /// is neither a token, a host nor a quoted string.
    #[error("invalid parameter")]
    BadParam,
    /// The same parameter appears twice where the grammar allows it once.
    #[error("duplicate parameter")]
    DuplicateParam,
    /// A number is missing or holds non-digits.
    #[error("invalid number")]
    BadNumber,
    /// A number is larger than its field allows.
    #[error("number out of range")]
    OutOfRange,
    /// A token is missing or holds bytes that are not token characters.
    #[error("invalid token")]
    BadToken,
    /// The `SIP/2.0/UDP` part of a Via is malformed.
    #[error("invalid Via protocol")]
    BadProtocol,
    /// The sent-by part of a Via is malformed.
    #[error("invalid Via sent-by")]
    BadSentBy,
    /// Unexpected bytes after a complete value.
    #[error("unexpected bytes after the value")]
    TrailingGarbage,
    /// A Date value is not an RFC 1123 date in GMT.
    #[error("invalid date")]
    BadDate,
}
