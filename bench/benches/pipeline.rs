//! Cost of the security pipeline per request: a REGISTER with credentials from an
//! unknown phone that passes every rule of the default policy (ACLs, scanner agents,
//! tool fingerprints, SQL injection, Record-Route, flood sketches, the REGISTER
//! window). Sources rotate over 65,536 addresses and the clock advances 1 ms per
//! request, so no source comes near a limit: the figure is the cost of a pass.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use sipwall_policy::{Engine, PolicyConfig, Verdict};
use sipwall_sip::{Framing, Limits, Message, Sanity};

const REGISTER: &[u8] = include_bytes!("../data/register.sip");

fn pipeline(c: &mut Criterion) {
    let limits = Limits::default();
    let sanity = Sanity::new();
    let msg = Message::parse(REGISTER, Framing::Datagram, &limits).expect("parses");
    let checked = sanity.check(&msg).expect("sane");
    let mut engine = Engine::new(&PolicyConfig::default(), &[], [7; 16]);
    let mut n: u64 = 0;
    let mut next = move || {
        n += 1;
        let source = IpAddr::V4(Ipv4Addr::from(0xC633_0000 | (n as u32 & 0xFFFF)));
        (source, n)
    };
    c.bench_function("pipeline/register_passes", |b| {
        b.iter(|| {
            let (source, now) = next();
            let verdict = engine.check_request(black_box(&msg), &checked, source, now);
            debug_assert_eq!(verdict, Verdict::Pass);
            black_box(verdict)
        })
    });
    let mut engine = Engine::new(&PolicyConfig::default(), &[], [7; 16]);
    let mut n: u64 = 0;
    c.bench_function("pipeline/parse_sanity_register_passes", |b| {
        b.iter(|| {
            n += 1;
            let source = IpAddr::V4(Ipv4Addr::from(0xC633_0000 | (n as u32 & 0xFFFF)));
            let msg =
                Message::parse(black_box(REGISTER), Framing::Datagram, &limits).expect("parses");
            let checked = sanity.check(&msg).expect("sane");
            assert_eq!(engine.admit(source, n), Verdict::Pass);
            black_box(engine.check_request(&msg, &checked, source, n))
        })
    });
    // The same without the flood sketches, to see their share.
    let config: PolicyConfig =
        toml::from_str("[rules.flood]\nenabled = false\n[rules.register_rate]\nenabled = false\n")
            .expect("valid");
    let mut engine = Engine::new(&config, &[], [7; 16]);
    let mut n: u64 = 0;
    c.bench_function("pipeline/register_passes_without_sketches", |b| {
        b.iter(|| {
            n += 1;
            let source = IpAddr::V4(Ipv4Addr::from(0xC633_0000 | (n as u32 & 0xFFFF)));
            black_box(engine.check_request(black_box(&msg), &checked, source, n))
        })
    });
    // A banned source: the cost of refusing a packet before parsing it.
    let mut engine = Engine::new(&PolicyConfig::default(), &[], [7; 16]);
    let banned = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 66));
    engine
        .ban(engine.key(banned), "benchmark", Some(u64::MAX / 2), 0)
        .expect("not protected");
    c.bench_function("pipeline/banned_source_refused", |b| {
        b.iter(|| black_box(engine.admit(black_box(banned), 1)))
    });
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
