//! Runs one parser workload many times, for instruction counting under valgrind
//! (`valgrind --tool=callgrind`), which is repeatable where timings on a shared machine
//! are not. Usage: `count <split|policy|sanity> <message> <iterations>`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use sipwall_bench::MESSAGES;
use sipwall_sip::{Contact, Framing, Limits, Message, Sanity};

fn policy(msg: &Message<'_>) -> usize {
    let mut n = 0;
    if let Some(Ok(uri)) = msg.request_uri() {
        n += uri.user.map_or(0, <[u8]>::len) + uri.host_raw.len();
    }
    let via = msg.top_via().unwrap().unwrap();
    n += via.branch().map_or(0, <[u8]>::len) + via.host_raw.len();
    n += usize::from(via.rport() != sipwall_sip::Rport::Absent);
    let from = msg.from().unwrap().unwrap();
    n += from.tag().map_or(0, <[u8]>::len) + from.uri.user.map_or(0, <[u8]>::len);
    let to = msg.to().unwrap().unwrap();
    n += to.tag().map_or(0, <[u8]>::len) + to.uri.user.map_or(0, <[u8]>::len);
    n += msg.call_id().unwrap().len();
    let cseq = msg.cseq().unwrap().unwrap();
    n += cseq.number as usize + cseq.method.as_bytes().len();
    if msg.is_request() {
        n += usize::from(msg.max_forwards().unwrap().unwrap());
        n += msg.user_agent().map_or(0, <[u8]>::len);
        for contact in msg.contacts() {
            if let Contact::Address(addr) = contact.unwrap() {
                n += addr.uri.host_raw.len() + addr.uri.user.map_or(0, <[u8]>::len);
            }
        }
        if let Some(credentials) = msg.authorization() {
            n += credentials.unwrap().digest.unwrap().username.unwrap().len();
        }
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("policy", String::as_str);
    let name = args.get(2).map_or("invite", String::as_str);
    let iterations: usize = args.get(3).map_or(100_000, |n| n.parse().unwrap());
    let bytes = MESSAGES.iter().find(|(n, _)| *n == name).unwrap().1;
    let limits = Limits::default();
    let sanity = Sanity::new();
    let mut total = 0usize;
    for _ in 0..iterations {
        let msg = Message::parse(black_box(bytes), Framing::Datagram, &limits).unwrap();
        total += match mode {
            "split" => msg.header_count(),
            "sanity" => usize::from(sanity.check(&msg).is_ok()),
            _ => policy(&msg),
        };
    }
    println!("{total}");
}
