//! Shared pieces of the sipwall benchmarks: the SIP messages every benchmark runs on.
//!
//! The messages live as files under `bench/data/` (CRLF line ends, correct
//! Content-Length, documentation addresses only) and are compiled in here, so that the
//! criterion benchmarks, the tests and any load harness use the very same bytes.

/// An INVITE with an SDP offer from a Yealink phone, as it arrives after one proxy: two
/// Vias (the proxy's and the phone's, with `received` and `rport` stamped), Record-Route,
/// Contact, Allow, Supported, User-Agent, Content-Type, Max-Forwards. About 1 KB.
pub const INVITE: &[u8] = include_bytes!("../data/invite.sip");

/// A REGISTER from a Polycom phone with Digest credentials (MD5, `qop=auth`), Expires,
/// and a Contact carrying `+sip.instance`, `reg-id` and a quoted `methods` list.
pub const REGISTER: &[u8] = include_bytes!("../data/register.sip");

/// A 200 OK to an INVITE that crossed three proxies: three Vias, a Record-Route set of
/// three entries, Contact and an SDP answer.
pub const OK_RECORD_ROUTE: &[u8] = include_bytes!("../data/ok_record_route.sip");

/// A small OPTIONS keep-alive sent by a proxy towards a registered phone.
pub const OPTIONS: &[u8] = include_bytes!("../data/options.sip");

/// Every message, by the name its benchmark group carries.
pub const MESSAGES: [(&str, &[u8]); 4] = [
    ("invite", INVITE),
    ("register", REGISTER),
    ("ok_record_route", OK_RECORD_ROUTE),
    ("options", OPTIONS),
];
