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

/// The load generator's messages (`bench/src/bin/load.rs`), here so that instruction
/// counts run on the very bytes `bench/load/maxrate` sends through the proxy.
pub mod load {
    use std::net::SocketAddr;

    /// The request with sequence number `seq`, sent from `source`.
    pub fn request(source: SocketAddr, seq: u64) -> Vec<u8> {
        format!(
            "OPTIONS sip:bob@example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP {source};branch=z9hG4bKld{seq:012};rport\r\n\
    Max-Forwards: 70\r\n\
    From: \"Load\" <sip:load@example.com>;tag=ld{seq}\r\n\
    To: <sip:bob@example.com>\r\n\
    Call-ID: ld{seq}@load.example.com\r\n\
    CSeq: 1 OPTIONS\r\n\
    User-Agent: sipwall-load\r\n\
    Accept: application/sdp\r\n\
    Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// An INVITE with an SDP offer, sequence number `seq`, from `source` (`--requests
    /// invite`): a call set up by a phone, which the edge record-routes and whose answer
    /// topology hiding works on most (Record-Route set, Contact, Server).
    pub fn invite(source: SocketAddr, seq: u64) -> Vec<u8> {
        let ip = source.ip();
        let sdp = format!(
            "v=0\r\no=- {seq} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
        );
        format!(
            "INVITE sip:1000@example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP {source};branch=z9hG4bKld{seq:012};rport\r\n\
    Max-Forwards: 70\r\n\
    From: \"Load\" <sip:load@example.com>;tag=ld{seq}\r\n\
    To: <sip:1000@example.com>\r\n\
    Call-ID: ld{seq}@load.example.com\r\n\
    CSeq: 1 INVITE\r\n\
    Contact: <sip:load@{source}>\r\n\
    User-Agent: sipwall-load\r\n\
    Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n\
    Content-Type: application/sdp\r\n\
    Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    }

    /// The header lines a PBX adds to its answers (`--answers pbx`): its own Contact,
    /// product name and capabilities, what topology hiding masks and removes.
    pub fn pbx_lines(upstream: SocketAddr) -> Vec<u8> {
        format!(
            "Contact: <sip:pbx@{upstream}>\r\nServer: PBX 20.5.0\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY\r\n\
Supported: replaces, timer\r\n"
        )
        .into_bytes()
    }

    /// Writes a 200 OK for `request` into `out`: the status line, then the request's Via,
    /// Record-Route, From, To, Call-ID and CSeq lines as they are (long or compact names;
    /// a UAS copies Record-Route into its answer to an INVITE), then `extra`
    /// header lines, then an empty body. Returns false for something that is not a request.
    pub fn answer(request: &[u8], extra: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some(first) = memchr::memmem::find(request, b"\r\n") else {
            return false;
        };
        if request.starts_with(b"SIP/2.0 ") {
            return false;
        }
        out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
        let mut at = first + 2;
        while at < request.len() {
            let Some(len) = memchr::memmem::find(&request[at..], b"\r\n") else {
                break;
            };
            if len == 0 {
                break;
            }
            let line = &request[at..at + len + 2];
            let name_end = memchr::memchr(b':', line).unwrap_or(0);
            let name = line[..name_end].trim_ascii_end();
            let copy = [
                &b"via"[..],
                b"v",
                b"record-route",
                b"from",
                b"f",
                b"to",
                b"t",
                b"call-id",
                b"i",
                b"cseq",
            ]
            .iter()
            .any(|known| name.eq_ignore_ascii_case(known));
            if copy {
                out.extend_from_slice(line);
            }
            at += len + 2;
        }
        out.extend_from_slice(extra);
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        true
    }
}
