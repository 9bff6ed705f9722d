//! Proof that the parse path does not allocate: a counting global allocator (dhat in
//! testing mode) watches parsing, every policy accessor, sanity, and a warmed-up editor.
//!
//! The heap statistics are process-wide, so this file is its own harness (`harness =
//! false`): libtest's threads allocate now and then while a test runs, which a counter
//! of the whole process would blame on the parser. `main` runs the one check on the
//! only thread there is and reports it the way libtest does.
#![allow(clippy::unwrap_used)]

use sipwall_sip::{Contact, Editor, Framing, HeaderName, Limits, Message, Sanity};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1---a7b1f1a1e9e7c6d1;rport\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;received=203.0.113.5;rport=40123;branch=z9hG4bKnashds8\r\n\
Record-Route: <sip:198.51.100.7;lr;ftag=as4f2c9e1>\r\n\
Max-Forwards: 69\r\n\
Contact: <sip:alice@192.0.2.10:5062;transport=udp>;+sip.instance=\"<urn:uuid:0001>\"\r\n\
To: \"Bob\" <sip:bob@example.com>\r\n\
From: \"Alice O'Reilly\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: Yealink SIP-T46U 108.86.0.20\r\n\
Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"84a4cc6f3082121f32b42a2187831a9e\", uri=\"sip:bob@example.com\", response=\"7587245234b3434cc3412213e5f113a5\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\"\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 140\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// Reads every field a security policy and the router read.
fn read_everything(msg: &Message<'_>) -> usize {
    let mut seen = 0;
    seen += msg.method().map_or(0, |m| m.as_bytes().len());
    let uri = msg.request_uri().unwrap().unwrap();
    seen += uri.user.map_or(0, <[u8]>::len) + uri.host_raw.len();
    for via in msg.vias() {
        let via = via.unwrap();
        seen += via.branch().map_or(0, <[u8]>::len);
        seen += usize::from(via.received().is_some());
        seen += usize::from(via.rport() != sipwall_sip::Rport::Absent);
    }
    let from = msg.from().unwrap().unwrap();
    seen += from.tag().map_or(0, <[u8]>::len) + from.display_name.map_or(0, <[u8]>::len);
    let to = msg.to().unwrap().unwrap();
    seen += to.uri.user.map_or(0, <[u8]>::len);
    seen += msg.call_id().unwrap().len();
    seen += msg.cseq().unwrap().unwrap().number as usize;
    seen += usize::from(msg.max_forwards().unwrap().unwrap());
    seen += msg.user_agent().unwrap().len();
    for contact in msg.contacts() {
        if let Contact::Address(addr) = contact.unwrap() {
            seen += addr.uri.host_raw.len();
        }
    }
    for route in msg.record_routes() {
        seen += route.unwrap().uri.params.as_bytes().len();
    }
    let credentials = msg.proxy_authorization().unwrap().unwrap();
    seen += credentials.digest.unwrap().username.unwrap().len();
    seen += msg.option_tags(HeaderName::Supported).count();
    seen += msg.content_type().unwrap().unwrap().subtype.len();
    seen += msg.body().len();
    seen
}

fn main() {
    let name = "parsing_reading_checking_and_editing_do_not_allocate";
    println!("\nrunning 1 test");
    parsing_reading_checking_and_editing_do_not_allocate();
    println!("test {name} ... ok\n");
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n");
}

fn parsing_reading_checking_and_editing_do_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let limits = Limits::default();
    let sanity = Sanity::new();
    let mut editor = Editor::new();
    let mut out = Vec::with_capacity(2048);
    let corpus: Vec<Vec<u8>> = ["wsinv.dat", "esc01.dat", "longreq.dat", "mpart01.dat"]
        .iter()
        .map(|name| {
            let path = format!("{}/tests/data/rfc4475/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(path).unwrap()
        })
        .collect();

    // One warm-up round lets the editor's buffers reach their working size.
    let edit = |editor: &mut Editor, out: &mut Vec<u8>| {
        let msg = Message::parse(INVITE, Framing::Datagram, &limits).unwrap();
        editor.clear();
        editor
            .push_via(&msg, b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKedge1")
            .unwrap();
        let via = msg.top_via().unwrap().unwrap();
        editor
            .set_param(&msg, via.params, b"received", Some(b"203.0.113.9"))
            .unwrap();
        editor
            .replace_request_uri(&msg, b"sip:bob@10.0.0.5:5080")
            .unwrap();
        editor.finish(&msg, out).unwrap();
    };
    edit(&mut editor, &mut out);

    let before = dhat::HeapStats::get();
    let mut total = 0;
    for _ in 0..100 {
        let msg = Message::parse(INVITE, Framing::Datagram, &limits).unwrap();
        total += read_everything(&msg);
        sanity.check(&msg).unwrap();
        for bytes in &corpus {
            let msg = Message::parse(bytes, Framing::Datagram, &limits).unwrap();
            sanity.check(&msg).unwrap();
            total += msg.vias().count() + msg.headers().count();
        }
        edit(&mut editor, &mut out);
    }
    let after = dhat::HeapStats::get();
    assert!(total > 0);
    assert_eq!(
        after.total_blocks - before.total_blocks,
        0,
        "the parse path allocated {} blocks",
        after.total_blocks - before.total_blocks
    );

    // The counter does count: an allocation on purpose is seen.
    let sentinel = std::hint::black_box(vec![1u8; 64]);
    assert_eq!(dhat::HeapStats::get().total_blocks - after.total_blocks, 1);
    drop(sentinel);
}
