//! Cost of topology hiding per message: the edge's whole handling of one message
//! (parse, sanity, routing, rewriting) with `[topology] hide` on and off, in the same
//! run, for the messages it changes most:
//!
//! - `invite_down`: a PBX's INVITE with SDP to a registered phone (Via stack of two,
//!   Record-Route, Contact, inside From and To, its own Call-ID: all masked);
//! - `ok_down`: the upstream's 200 OK to a phone's INVITE (Contact and a Record-Route set
//!   of three masked, Server removed);
//! - `ok_up`: the phone's 200 OK to the PBX's INVITE (Via stack, Record-Route, Call-ID,
//!   From and To restored);
//! - `bye_up`: the phone's BYE in that dialog (Request-URI, Route set, Call-ID, To
//!   restored).
//!
//! The phone is a trusted peer, so the pipeline's share is the same in both runs.

mod hiding;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hiding::{edge, forward, messages};
use sipwall_edge::{Action, Inbound};

fn topology(c: &mut Criterion) {
    for hide in [false, true] {
        let mut edge = edge(hide);
        let m = messages(&mut edge);
        let mode = if hide { "hide" } else { "plain" };
        for (name, text, side, flow) in m.all() {
            // Each message must be forwarded, or the figure would time a refusal.
            forward(&mut edge, text, side, flow);
            c.bench_function(&format!("topology/{name}/{mode}"), |b| {
                b.iter(|| {
                    let inbound = Inbound {
                        bytes: black_box(text.as_bytes()),
                        side,
                        flow,
                        now: 0,
                    };
                    match edge.handle(&inbound) {
                        Action::Forward { bytes, .. } => black_box(bytes.len()),
                        _ => 0,
                    }
                })
            });
        }
    }
}

criterion_group!(benches, topology);
criterion_main!(benches);
