//! The SIP message layer of sipwall: a zero-copy parser, typed accessors, sanity checks
//! and a message editor. No I/O, no clock, no async: bytes in, decisions and bytes out.
//!
//! The hot path of an edge proxy reads every message, most of them only to find a few
//! fields, and must survive any input. So parsing is split in two tiers:
//!
//! 1. [`Message::parse`] makes one pass over the head, checking the start line and the
//!    [`Limits`], recording each header as offsets and framing the body by
//!    Content-Length. It allocates nothing for messages within the default limits.
//! 2. Accessors ([`Message::top_via`], [`Message::from`], [`Message::cseq`], …) parse
//!    one header value when asked and return slices of the message.
//!
//! [`Sanity`] runs the checks of Kamailio's `sanity` module on a parsed message, and
//! [`Editor`] produces the forwarded message (Via pushed, URIs rewritten, headers
//! removed) into a reused buffer without parsing again. For TCP and TLS,
//! [`StreamFramer`] cuts messages out of the byte stream.
//!
//! ```
//! use sipwall_sip::{Framing, Limits, Message, Sanity};
//!
//! let datagram = b"OPTIONS sip:alice@example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776\r\n\
//!     From: <sip:bob@example.com>;tag=42\r\nTo: <sip:alice@example.com>\r\n\
//!     Call-ID: a84b4c76e66710\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
//!     Content-Length: 0\r\n\r\n";
//! let msg = Message::parse(datagram, Framing::Datagram, &Limits::default()).unwrap();
//! Sanity::new().check(&msg).unwrap();
//! let via = msg.top_via().unwrap().unwrap();
//! assert_eq!(via.branch(), Some(&b"z9hG4bK776"[..]));
//! assert_eq!(msg.from().unwrap().unwrap().tag(), Some(&b"42"[..]));
//! ```

mod chars;
mod editor;
mod error;
mod fields;
mod framing;
mod limits;
mod message;
mod name;
mod params;
mod sanity;
mod uri;

pub use editor::{EditError, Editor, Position};
pub use error::{FieldError, ParseError, UriError};
pub use fields::{
    CSeq, Challenge, Contact, ContentType, Credentials, DigestFields, NameAddr, Rport, Via,
    check_date, parse_ip,
};
pub use framing::{Frame, StreamFramer};
pub use limits::Limits;
pub use message::{
    Framing, Header, HeaderValue, Message, RequestLine, StartLine, StatusLine, is_keepalive,
    split_list,
};
pub use name::{HeaderName, Method};
pub use params::{Param, Params, unquote};
pub use sanity::{Check, Checked, Sanity, SanityError};
pub use uri::{Host, Scheme, Uri, eq_unescaped, unescape};
