//! Criterion micro-benchmarks of the SIP parser: sipwall-sip against rsip 0.4 and
//! sipx-sip 1.0 on the four messages of `bench/data/`.
//!
//! One group per message, throughput in messages. In each group:
//!
//! - `sipwall/split`: [`Message::parse`] alone (the one pass over the head).
//! - `sipwall/policy_fields`: parse, then read what a REQINIT-style security policy reads
//!   (see [`sipwall_policy`]).
//! - `sipwall/sanity`: parse, then every [`Sanity`] check.
//! - `rsip/parse`, `sipx/parse`: the other parsers' message parse.
//! - `rsip/policy_fields`, `sipx/policy_fields`: the same policy reads through each
//!   library's typed API.
//!
//! The workloads and their equivalence check are in `policy/mod.rs`, shared with the
//! instruction counter (`examples/instructions.rs`).
#![allow(clippy::unwrap_used)]

mod policy;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use policy::{
    Blackhole, RSIP_POLICY_FAILS_ON, check_equivalence, rsip_policy, sipwall_policy, sipx_policy,
};
use sipwall_bench::MESSAGES;
use sipwall_sip::{Framing, Limits, Message, Sanity};

fn parser(c: &mut Criterion) {
    check_equivalence();

    let limits = Limits::default();
    let sipx_limits = sipx_sip::Limits::datagram();
    // A proxy configures its sanity checks once; `Sanity::new` does not allocate anyway.
    let sanity = Sanity::new();

    for (name, bytes) in MESSAGES {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));

        group.bench_function("sipwall/split", |b| {
            b.iter(|| {
                let msg = Message::parse(black_box(bytes), Framing::Datagram, &limits).unwrap();
                black_box(msg.header_count())
            })
        });
        group.bench_function("sipwall/policy_fields", |b| {
            b.iter(|| sipwall_policy(black_box(bytes), &limits, &mut Blackhole).unwrap())
        });
        group.bench_function("sipwall/sanity", |b| {
            b.iter(|| {
                let msg = Message::parse(black_box(bytes), Framing::Datagram, &limits).unwrap();
                black_box(sanity.check(&msg)).unwrap();
            })
        });

        group.bench_function("rsip/parse", |b| {
            b.iter(|| black_box(rsip::SipMessage::try_from(black_box(bytes)).unwrap()))
        });
        if !RSIP_POLICY_FAILS_ON.contains(&name) {
            group.bench_function("rsip/policy_fields", |b| {
                b.iter(|| rsip_policy(black_box(bytes), &mut Blackhole).unwrap())
            });
        }

        group.bench_function("sipx/parse", |b| {
            b.iter(|| {
                let buf = bytes::Bytes::from_static(black_box(bytes));
                black_box(sipx_sip::parse_datagram(buf, &sipx_limits).unwrap())
            })
        });
        group.bench_function("sipx/policy_fields", |b| {
            b.iter(|| sipx_policy(black_box(bytes), &sipx_limits, &mut Blackhole).unwrap())
        });

        group.finish();
    }
}

criterion_group!(benches, parser);
criterion_main!(benches);
