//! Runs one parser workload many times, for instruction counting under valgrind, which is
//! repeatable where timings on a shared machine are not. `bench/instructions` drives it.
//!
//! Usage: `instructions <workload> <message> <iterations>`, with workload one of
//! `sipwall/split`, `sipwall/policy_fields`, `sipwall/sanity`, `rsip/parse`,
//! `rsip/policy_fields`, `sipx/parse`, `sipx/policy_fields` (the criterion names), or
//! `edge/from_public`: the whole routing decision of the edge for a request from a phone
//! (parse, sanity, Via, Contact masking, Record-Route, flow token, rewrite), or
//! `pipeline/passes`: the security pipeline alone (`Engine::check_request`) on a message
//! parsed and checked once, as the criterion benchmark `pipeline/register_passes` runs
//! it with the REGISTER (sources rotating over 65,536 addresses, 1 ms per request).
//!
//! Two workloads follow a message of `bench/load/maxrate` through `Edge::handle`,
//! configured as that script runs sipwall (the generator a trusted peer, topology
//! hiding on as by default): `edge/load_request`, the load generator's OPTIONS from the
//! public side, and `edge/load_response`, the responder's 200 OK to it from the inner
//! side (its message argument is ignored). Both cycle through 64 sequence numbers,
//! built before the loop so that a run of 0 iterations does the same setup.
//! `edge/pbx_request/hide|plain` and `edge/pbx_response/hide|plain` do the same with the
//! responder answering like a PBX (`--answers pbx`: its Contact and Server), topology
//! hiding on or off: the cost of hiding per message; `edge/pbx_invite_request/…` and
//! `edge/pbx_invite_response/…` the same with the generator's INVITEs (`--requests
//! invite`), whose answers carry the edge's Record-Route set.
//!
//! `topology/<message>/hide|plain` runs a message of the criterion benchmark `topology`
//! (`invite_down`, `ok_down`, `ok_up`, `bye_up`) through the edge it was built with.
#![allow(clippy::unwrap_used)]

#[path = "../benches/hiding/mod.rs"]
mod hiding;
#[path = "../benches/policy/mod.rs"]
mod policy;

use std::hint::black_box;

use policy::{Blackhole, rsip_policy, sipwall_policy, sipx_policy};
use sipwall_bench::MESSAGES;
use sipwall_sip::{Framing, Limits, Message, Sanity};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(workload), Some(name), Some(iterations)) = (args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("usage: instructions <workload> <message> <iterations>");
        std::process::exit(2);
    };
    let iterations: usize = iterations.parse().unwrap();
    let bytes = MESSAGES.iter().find(|(n, _)| n == name).unwrap().1;
    let limits = Limits::default();
    let sipx_limits = sipx_sip::Limits::datagram();
    let sanity = Sanity::new();
    let mut edge = sipwall_edge::Edge::new(
        sipwall_edge::EdgeConfig {
            public: vec![(
                sipwall_edge::Transport::Udp,
                "127.0.0.1:5060".parse().unwrap(),
            )],
            inner: "127.0.0.1:5070".parse().unwrap(),
            upstream: "127.0.0.1:5080".parse().unwrap(),
            key: [7; sipwall_edge::KEY_LEN],
            previous_key: None,
            limits: Limits::default(),
            topology: Default::default(),
        },
        {
            // The phone is a trusted peer: this workload is plain forwarding (the
            // pipeline's cost has its own criterion benchmark).
            let policy: sipwall_policy::PolicyConfig =
                toml::from_str("trusted_peers = [\"198.51.100.7/32\"]").unwrap();
            std::sync::Arc::new(std::sync::Mutex::new(sipwall_policy::Engine::new(
                &policy,
                &[],
                [0; 16],
            )))
        },
    );
    let phone = sipwall_edge::Flow {
        transport: sipwall_edge::Transport::Udp,
        remote: "198.51.100.7:40000".parse().unwrap(),
        connection: 0,
    };
    let mut pipeline = sipwall_policy::Engine::new(&Default::default(), &[], [7; 16]);
    // `edge/pbx_*/hide|plain`: the same with the responder answering like a PBX
    // (`--answers pbx`), topology hiding on or off.
    let pbx = workload.starts_with("edge/pbx_");
    let hide = !pbx || workload.ends_with("/hide");
    let invites = workload.contains("_invite_");
    let (mut load_edge, load_phone, load_requests, load_responses) =
        load_workload(hide, pbx, invites);
    // `topology/<message>/hide|plain`.
    let mut topology_edge = hiding::edge(workload.ends_with("/hide"));
    let topology_messages = hiding::messages(&mut topology_edge);
    let topology_message = topology_messages
        .all()
        .into_iter()
        .find(|(message, ..)| workload.split('/').nth(1) == Some(message));
    let parsed = Message::parse(bytes, Framing::Datagram, &limits).unwrap();
    let parsed_checked = sanity.check(&parsed).unwrap();
    let mut n: u64 = 0;
    for _ in 0..iterations {
        let bytes = black_box(bytes);
        match workload.as_str() {
            "sipwall/split" => {
                let msg = Message::parse(bytes, Framing::Datagram, &limits).unwrap();
                black_box(msg.header_count());
            }
            "sipwall/policy_fields" => sipwall_policy(bytes, &limits, &mut Blackhole).unwrap(),
            "sipwall/sanity" => {
                let msg = Message::parse(bytes, Framing::Datagram, &limits).unwrap();
                black_box(sanity.check(&msg).unwrap());
            }
            "rsip/parse" => {
                black_box(rsip::SipMessage::try_from(bytes).unwrap());
            }
            "rsip/policy_fields" => rsip_policy(bytes, &mut Blackhole).unwrap(),
            "sipx/parse" => {
                let buf = bytes::Bytes::from_static(bytes);
                black_box(sipx_sip::parse_datagram(buf, &sipx_limits).unwrap());
            }
            "sipx/policy_fields" => sipx_policy(bytes, &sipx_limits, &mut Blackhole).unwrap(),
            "edge/from_public" => {
                let inbound = sipwall_edge::Inbound {
                    bytes,
                    side: sipwall_edge::Side::Public,
                    flow: phone,
                    now: 0,
                };
                match edge.handle(&inbound) {
                    sipwall_edge::Action::Forward { bytes, .. } => {
                        black_box(bytes.len());
                    }
                    other => panic!("not forwarded: {other:?}"),
                }
            }
            edge_load
                if edge_load.starts_with("edge/load_") || edge_load.starts_with("edge/pbx_") =>
            {
                n += 1;
                let index = n as usize % load_requests.len();
                let inbound = if edge_load.contains("_request") {
                    sipwall_edge::Inbound {
                        bytes: black_box(&load_requests[index]),
                        side: sipwall_edge::Side::Public,
                        flow: load_phone,
                        now: n,
                    }
                } else {
                    sipwall_edge::Inbound {
                        bytes: black_box(&load_responses[index]),
                        side: sipwall_edge::Side::Inner,
                        flow: LOAD_UPSTREAM_FLOW,
                        now: n,
                    }
                };
                match load_edge.handle(&inbound) {
                    sipwall_edge::Action::Forward { bytes, .. } => {
                        black_box(bytes.len());
                    }
                    other => panic!("not forwarded: {other:?}"),
                }
            }
            topology if topology.starts_with("topology/") => {
                let (_, text, side, flow) = topology_message.unwrap();
                let inbound = sipwall_edge::Inbound {
                    bytes: black_box(text.as_bytes()),
                    side,
                    flow,
                    now: 0,
                };
                match topology_edge.handle(&inbound) {
                    sipwall_edge::Action::Forward { bytes, .. } => {
                        black_box(bytes.len());
                    }
                    other => panic!("not forwarded: {other:?}"),
                }
            }
            "pipeline/passes" => {
                n += 1;
                let source = std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                    0xC633_0000 | (n as u32 & 0xFFFF),
                ));
                let verdict =
                    pipeline.check_request(black_box(&parsed), &parsed_checked, source, n);
                assert_eq!(verdict, sipwall_policy::Verdict::Pass);
            }
            other => {
                eprintln!("unknown workload {other}");
                std::process::exit(2);
            }
        }
    }
}

/// The upstream of `bench/load/maxrate`, as the edge sees its answers arrive.
const LOAD_UPSTREAM_FLOW: sipwall_edge::Flow = sipwall_edge::Flow {
    transport: sipwall_edge::Transport::Udp,
    remote: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        5290,
    )),
    connection: 0,
};

/// The edge as `bench/load/maxrate` runs it, a phone socket of the load generator, 64 of
/// its requests (OPTIONS, or INVITEs with `invites`), and the responder's answers to them
/// as they reach the edge's inner side (each request forwarded once by this edge, then
/// answered).
fn load_workload(
    hide: bool,
    pbx: bool,
    invites: bool,
) -> (
    sipwall_edge::Edge,
    sipwall_edge::Flow,
    Vec<Vec<u8>>,
    Vec<Vec<u8>>,
) {
    let localhost = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let policy: sipwall_policy::PolicyConfig =
        toml::from_str("trusted_peers = [\"127.0.0.1/32\"]").unwrap();
    let mut edge = sipwall_edge::Edge::new(
        sipwall_edge::EdgeConfig {
            public: vec![(sipwall_edge::Transport::Udp, localhost(5280))],
            inner: localhost(5270),
            upstream: LOAD_UPSTREAM_FLOW.remote,
            key: [0xab; sipwall_edge::KEY_LEN],
            previous_key: None,
            limits: Limits::default(),
            topology: sipwall_edge::TopologyConfig {
                hide,
                ..Default::default()
            },
        },
        std::sync::Arc::new(std::sync::Mutex::new(sipwall_policy::Engine::new(
            &policy,
            &[],
            [0; 16],
        ))),
    );
    let phone = sipwall_edge::Flow {
        transport: sipwall_edge::Transport::Udp,
        remote: localhost(40000),
        connection: 0,
    };
    let build = if invites {
        sipwall_bench::load::invite
    } else {
        sipwall_bench::load::request
    };
    let requests: Vec<Vec<u8>> = (0..64).map(|seq| build(phone.remote, seq)).collect();
    let extra = if pbx {
        sipwall_bench::load::pbx_lines(LOAD_UPSTREAM_FLOW.remote)
    } else {
        Vec::new()
    };
    let responses = requests
        .iter()
        .map(|request| {
            let inbound = sipwall_edge::Inbound {
                bytes: request,
                side: sipwall_edge::Side::Public,
                flow: phone,
                now: 0,
            };
            let sipwall_edge::Action::Forward { bytes, .. } = edge.handle(&inbound) else {
                panic!("the load request is not forwarded");
            };
            let mut answer = Vec::new();
            assert!(sipwall_bench::load::answer(bytes, &extra, &mut answer));
            answer
        })
        .collect();
    (edge, phone, requests, responses)
}
