//! Responses the edge writes itself: sanity refusals (400, 416, 420, 483, 505), loops
//! (482), answers to OPTIONS pings addressed to the edge, and 430 when a flow is gone.
//!
//! A response copies the request's Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2)
//! and adds a To tag when the request had none, derived from the request so that a
//! retransmission gets the same tag.

use sipwall_sip::{HeaderName, Message};

/// Writes a response with `code` and `reason` to `request` into `out` (cleared first).
/// `extra` header lines (each ending in CRLF) are added before Content-Length.
pub fn write_response(
    request: &Message<'_>,
    code: u16,
    reason: &str,
    to_tag: &[u8],
    extra: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(b"SIP/2.0 ");
    push_number(out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in request.headers() {
        let copy = matches!(
            header.name,
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq
        );
        if copy {
            out.extend_from_slice(header.name.canonical().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value);
            out.extend_from_slice(b"\r\n");
        } else if header.name == HeaderName::To {
            out.extend_from_slice(b"To: ");
            out.extend_from_slice(header.value);
            let has_tag = matches!(request.to(), Some(Ok(to)) if to.tag().is_some());
            if !has_tag {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(to_tag);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(extra);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// The reason phrase of the status codes the edge sends.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        401 => "Unauthorized",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        430 => "Flow Failed",
        480 => "Temporarily Unavailable",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Error",
    }
}

/// Appends `n` in decimal.
pub fn push_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
