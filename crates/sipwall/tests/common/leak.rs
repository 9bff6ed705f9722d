//! The leak detector of the end-to-end tests: nothing of the inside may reach the public
//! side. It captures the real packets of the host (an `AF_PACKET` socket: what the kernel
//! carried, not what sipwall believes it sent), keeps every byte sipwall's public
//! listeners send, and fails the test if any of these appears in it:
//!
//! - the upstream's address and the edge's inner address, in every textual form (IPv4
//!   dotted and zero-padded, hex, decimal, reverse DNS; IPv6 compressed and expanded;
//!   IPv4-mapped IPv6 both ways) and as bytes next to their port;
//! - their ports, written as `:PORT`, `=PORT` or `port=PORT` (a bare digit run is not
//!   looked for: the random numbers in sipp's messages would make tests flaky);
//! - host names and marker strings of the inside that the test names;
//! - the Call-IDs of requests the upstream sent that did not come from the public side.
//!
//! Matching ignores case and also looks inside percent-, hex- and base64-encoded text.
//! SDP bodies are not searched: media addresses are out of topology hiding's reach (it
//! needs a media relay), and the README says so.
//! [`LeakDetector::check`] explains a failure: which string, in which captured message.
//! A capture that saw nothing fails too, unless the test said the edge sends nothing
//! toward the public side: a detector that sees nothing must not pass silently.
//!
//! `common::start_sipwall` starts one for every edge; `Sipwall` checks it when the test
//! ends. Tests run as root (the capture needs `CAP_NET_RAW`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memchr::memmem;
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, recvfrom, setsockopt, socket,
    sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

/// `sll_hatype` of a loopback device (`ARPHRD_LOOPBACK`).
const ARPHRD_LOOPBACK: u16 = 772;
/// `sll_pkttype` of a packet the host sends (`PACKET_OUTGOING`).
const PACKET_OUTGOING: u8 = 4;
/// The receive buffer asked for: a burst of a flood test must not overflow it while the
/// reader thread shares two cores with sipwall and its peers.
const RECEIVE_BUFFER: usize = 32 << 20;
/// How long `check` waits for the capture to catch up with its own probe.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `start` waits for the capture socket to open.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Marks the probe datagrams the detector sends itself to know that it has read
/// everything captured before them.
const PROBE: &[u8] = b"sipwall-leak-detector-probe ";

/// Where a test's edge sits: the public listeners, and the inside that must stay hidden.
#[derive(Clone, Debug)]
pub struct Topology {
    /// The public listeners (UDP and TCP).
    pub public: Vec<SocketAddr>,
    /// The edge's inner address (toward the upstream).
    pub inner: SocketAddr,
    /// The upstreams (more than one when a test reloads another).
    pub upstreams: Vec<SocketAddr>,
}

impl Topology {
    /// The topology of a sipwall configuration: `[listen]`, `[inner]` and `[upstream]`.
    pub fn from_config(text: &str) -> Topology {
        let table: toml::Table = text.parse().expect("the test's configuration is TOML");
        let address = |section: &str| -> SocketAddr {
            table
                .get(section)
                .and_then(|s| s.get("address"))
                .and_then(|a| a.as_str())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no valid [{section}] address in\n{text}"))
        };
        let mut public: Vec<SocketAddr> = Vec::new();
        for transport in ["udp", "tcp"] {
            let listed = table
                .get("listen")
                .and_then(|l| l.get(transport))
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten();
            for entry in listed {
                let parsed = entry.as_str().and_then(|a| a.parse().ok());
                let address =
                    parsed.unwrap_or_else(|| panic!("a listen address is not valid: {entry}"));
                if !public.contains(&address) {
                    public.push(address);
                }
            }
        }
        Topology {
            public,
            inner: address("inner"),
            upstreams: vec![address("upstream")],
        }
    }

    fn is_public(&self, address: SocketAddr) -> bool {
        self.public.iter().any(|listener| same(*listener, address))
    }

    fn is_upstream(&self, address: SocketAddr) -> bool {
        self.upstreams.iter().any(|up| same(*up, address))
    }

    fn is_inner(&self, address: SocketAddr) -> bool {
        same(self.inner, address)
    }

    /// True if a packet between these addresses concerns the detector.
    fn concerns(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        [src, dst]
            .iter()
            .any(|a| self.is_public(*a) || self.is_upstream(*a) || self.is_inner(*a))
    }
}

/// `listener` matches `address` (a listener on an unspecified address matches any).
fn same(listener: SocketAddr, address: SocketAddr) -> bool {
    listener.port() == address.port()
        && (listener.ip().is_unspecified() || listener.ip() == address.ip())
}

/// What a passing check saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages sent toward the public side (UDP datagrams, and SIP messages framed out of
    /// TCP streams).
    pub toward_public: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Messages sent to the public listeners.
    pub to_public: usize,
    /// Messages sent by the upstream.
    pub from_upstream: usize,
}

/// Transport of a captured message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// A UDP datagram of interest.
struct Datagram {
    index: u64,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// One direction of a TCP connection, put back together from its segments.
#[derive(Default)]
struct Stream {
    /// The sequence number of the next byte expected.
    next: Option<u32>,
    data: Vec<u8>,
    /// (offset in `data`, capture index) of each segment's first new byte.
    starts: Vec<(usize, u64)>,
    /// Bytes the capture never saw (a gap before a later segment).
    lost: u64,
}

impl Stream {
    /// Takes a segment (`index`: its place in the capture).
    fn push(&mut self, seq: u32, syn: bool, payload: &[u8], index: u64) {
        // A SYN takes one sequence number before the data, and starts a connection
        // afresh (a 4-tuple may be used again).
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        let next = if syn {
            *self.next.insert(seq)
        } else {
            *self.next.get_or_insert(seq)
        };
        if payload.is_empty() {
            return;
        }
        let ahead = seq.wrapping_sub(next) as i32;
        let fresh = if ahead >= 0 {
            self.lost += u64::from(ahead.unsigned_abs());
            payload
        } else {
            // A retransmission: only what lies beyond what was seen is new.
            let seen = ahead.unsigned_abs() as usize;
            payload.get(seen..).unwrap_or_default()
        };
        if !fresh.is_empty() {
            self.starts.push((self.data.len(), index));
            self.data.extend_from_slice(fresh);
            self.next = Some(seq.wrapping_add(payload.len() as u32));
        }
    }

    /// The capture index of the segment that carried byte `offset`.
    fn index_at(&self, offset: usize) -> u64 {
        let at = self.starts.partition_point(|(start, _)| *start <= offset);
        at.checked_sub(1)
            .and_then(|i| self.starts.get(i))
            .map_or(0, |(_, index)| *index)
    }
}

/// Fragments of one IP datagram.
#[derive(Default)]
struct Fragments {
    pieces: Vec<(usize, Vec<u8>)>,
    /// Length of the whole payload, once the last fragment came.
    total: Option<usize>,
}

impl Fragments {
    /// The reassembled transport bytes, once every piece is there.
    fn assemble(&self) -> Option<Vec<u8>> {
        let total = self.total?;
        let mut pieces: Vec<&(usize, Vec<u8>)> = self.pieces.iter().collect();
        pieces.sort_by_key(|(offset, _)| *offset);
        let mut out = Vec::with_capacity(total);
        for (offset, bytes) in pieces {
            if *offset > out.len() {
                return None;
            }
            let skip = out.len() - offset;
            out.extend_from_slice(bytes.get(skip..).unwrap_or_default());
        }
        (out.len() >= total).then(|| {
            out.truncate(total);
            out
        })
    }
}

/// (source, destination, protocol, identification) of a fragmented datagram.
type FragmentKey = (IpAddr, IpAddr, u8, u32);

/// What the reader thread gathered, and what the test added since.
struct State {
    topology: Topology,
    /// Host names and marker strings of the inside, with what they are.
    markers: Vec<(String, String)>,
    expect_public_traffic: bool,
    datagrams: Vec<Datagram>,
    streams: HashMap<(SocketAddr, SocketAddr), Stream>,
    fragments: HashMap<FragmentKey, Fragments>,
    /// Packets kept, in capture order (the index of the next one).
    packets: u64,
    /// Where this detector's probes go (other detectors' probes are not its own).
    probe: Option<SocketAddr>,
    /// The highest probe number read back.
    probed: u64,
    /// Why the reader stopped, if it failed.
    failure: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    read: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running capture; see the module documentation.
pub struct LeakDetector {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// A socket in the capture's network namespace that sends the probes to itself.
    probe: UdpSocket,
    probes: AtomicU64,
}

impl LeakDetector {
    /// Starts capturing in this thread's network namespace.
    pub fn start(topology: Topology) -> LeakDetector {
        LeakDetector::start_in(None, topology)
    }

    /// Starts capturing inside the network namespace `netns` (a test's edge that runs
    /// there).
    pub fn start_in_netns(netns: &super::netns::Netns, topology: Topology) -> LeakDetector {
        LeakDetector::start_in(
            Some(PathBuf::from(format!("/run/netns/{}", netns.name))),
            topology,
        )
    }

    fn start_in(netns: Option<PathBuf>, topology: Topology) -> LeakDetector {
        for (ip, what) in inside_addresses(&topology) {
            assert!(
                !topology.public.iter().any(|p| p.ip() == ip),
                "the {what} {ip} is also a public listener's address: a leak could not be \
                 told from the edge's own address; put the inside on other addresses"
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                topology,
                markers: Vec::new(),
                expect_public_traffic: true,
                datagrams: Vec::new(),
                streams: HashMap::new(),
                fragments: HashMap::new(),
                packets: 0,
                probe: None,
                probed: 0,
                failure: None,
            }),
            read: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (opened, ready) = mpsc::channel();
        let reader = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("leak-capture".into())
                .spawn(move || {
                    let capture = open(netns);
                    let fd = match capture {
                        Ok((fd, probe)) => {
                            shared.lock().probe = probe.local_addr().ok();
                            let _ = opened.send(Ok(probe));
                            fd
                        }
                        Err(e) => {
                            let _ = opened.send(Err(e));
                            return;
                        }
                    };
                    read(&fd, &shared, &stop);
                })
                .expect("start the capture thread")
        };
        let probe = match ready.recv_timeout(START_TIMEOUT) {
            Ok(Ok(probe)) => probe,
            Ok(Err(e)) => panic!("the leak detector cannot capture (it needs root): {e}"),
            Err(_) => panic!("the leak detector's capture did not open within 10 s"),
        };
        LeakDetector {
            shared,
            stop,
            reader: Some(reader),
            probe,
            probes: AtomicU64::new(0),
        }
    }

    /// Also forbids `text` (a host name or marker of the inside; `what` says which, for
    /// the report).
    pub fn forbid(&self, text: &str, what: &str) {
        assert!(!text.is_empty(), "an empty forbidden string");
        self.shared
            .lock()
            .markers
            .push((text.to_owned(), what.to_owned()));
    }

    /// Another upstream (after a reload): its address and port are forbidden too, and
    /// the requests it sends are watched for Call-IDs.
    pub fn add_upstream(&self, address: SocketAddr) {
        let mut state = self.shared.lock();
        assert!(
            !state.topology.public.iter().any(|p| p.ip() == address.ip()),
            "the upstream {address} shares its address with a public listener: a leak could \
             not be told from the edge's own address"
        );
        state.topology.upstreams.push(address);
    }

    /// Says whether the edge is expected to send anything toward the public side
    /// (default: yes, and a check that saw nothing fails).
    pub fn expect_public_traffic(&self, expected: bool) {
        self.shared.lock().expect_public_traffic = expected;
    }

    /// Waits (bounded) until the reader has read everything captured so far, then looks
    /// for leaks: `Err` holds a report that explains them.
    pub fn check(&self) -> Result<Summary, String> {
        self.sync()?;
        let state = self.shared.lock();
        if let Some(failure) = &state.failure {
            return Err(format!("leak detector: the capture failed: {failure}"));
        }
        inspect(&state)
    }

    /// Like [`LeakDetector::check`], but fails the test with the report.
    pub fn assert_clean(&self) -> Summary {
        self.check().unwrap_or_else(|report| panic!("{report}"))
    }

    /// Sends a probe to itself and waits until the reader has read it: everything the
    /// host sent before is then in the capture.
    fn sync(&self) -> Result<(), String> {
        let number = self.probes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut probe = PROBE.to_vec();
        probe.extend_from_slice(number.to_string().as_bytes());
        let here = self
            .probe
            .local_addr()
            .map_err(|e| format!("leak detector: probe address: {e}"))?;
        self.probe
            .send_to(&probe, here)
            .map_err(|e| format!("leak detector: sending the probe: {e}"))?;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut state = self.shared.lock();
        while state.probed < number && state.failure.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "leak detector: the capture did not see its own probe within {} s: it \
                     is not capturing ({} packets kept so far)",
                    SYNC_TIMEOUT.as_secs(),
                    state.packets
                ));
            }
            state = self
                .shared
                .read
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }
}

impl Drop for LeakDetector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The reader wakes up at least every 100 ms (its receive timeout).
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The inside's addresses, with what they are.
fn inside_addresses(topology: &Topology) -> Vec<(IpAddr, &'static str)> {
    let mut out = vec![(topology.inner.ip(), "edge's inner address")];
    out.extend(
        topology
            .upstreams
            .iter()
            .map(|up| (up.ip(), "upstream's address")),
    );
    out
}

/// Opens the capture socket (in `netns` if given) and the probe socket beside it.
fn open(netns: Option<PathBuf>) -> Result<(OwnedFd, UdpSocket), String> {
    if let Some(path) = netns {
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering {}: {e}", path.display()))?;
    }
    // Cooked packets (SOCK_DGRAM): the link header is stripped, whatever the interface.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map_err(|e| format!("AF_PACKET socket: {e}"))?;
    // Force past rmem_max (root); fall back to what the limit allows.
    if setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER)
            .map_err(|e| format!("receive buffer: {e}"))?;
    }
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(100))
        .map_err(|e| format!("receive timeout: {e}"))?;
    let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("probe socket: {e}"))?;
    Ok((fd, probe))
}

/// The reader thread: reads packets until `stop`.
fn read(fd: &OwnedFd, shared: &Shared, stop: &AtomicBool) {
    // Loopback can carry 64 KiB segments; the buffer holds any of them whole.
    let mut buffer = vec![0u8; 1 << 18];
    while !stop.load(Ordering::Relaxed) {
        match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buffer) {
            Ok((len, Some(link))) => {
                // Loopback shows every packet twice, leaving and arriving; the copy made
                // as it leaves is taken while the sender is still in its send call, so
                // it is in the capture before anything the sender does next.
                if link.hatype() == ARPHRD_LOOPBACK && link.pkttype() != PACKET_OUTGOING {
                    continue;
                }
                if let Some(packet) = buffer.get(..len) {
                    let mut state = shared.lock();
                    if take_ip(&mut state, packet) {
                        shared.read.notify_all();
                    }
                }
            }
            Ok((_, None)) => {}
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                shared.lock().failure = Some(format!("reading packets: {e}"));
                shared.read.notify_all();
                return;
            }
        }
    }
}

/// Takes an IP packet; true if it was one of the detector's probes.
fn take_ip(state: &mut State, packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => take_ipv4(state, packet),
        Some(6) => take_ipv6(state, packet),
        _ => false,
    }
}

fn take_ipv4(state: &mut State, packet: &[u8]) -> bool {
    let Some(header) = packet.get(..20) else {
        return false;
    };
    let header_len = usize::from(header[0] & 0x0f) * 4;
    // Segments bigger than 64 KiB carry a total length of 0: take what was captured.
    let total = match usize::from(u16::from_be_bytes([header[2], header[3]])) {
        0 => packet.len(),
        n => n.min(packet.len()),
    };
    let Some(body) = packet.get(header_len..total) else {
        return false;
    };
    let id = u32::from(u16::from_be_bytes([header[4], header[5]]));
    let flags = u16::from_be_bytes([header[6], header[7]]);
    let more = flags & 0x2000 != 0;
    let offset = usize::from(flags & 0x1fff) * 8;
    let protocol = header[9];
    let src = IpAddr::V4(Ipv4Addr::new(
        header[12], header[13], header[14], header[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        header[16], header[17], header[18], header[19],
    ));
    take_transport(
        state,
        src,
        dst,
        protocol,
        body,
        (more || offset > 0).then_some((id, offset, more)),
    )
}

fn take_ipv6(state: &mut State, packet: &[u8]) -> bool {
    let Some(header) = packet.get(..40) else {
        return false;
    };
    let octets = |at: usize| -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&header[at..at + 16]);
        out
    };
    let src = IpAddr::V6(Ipv6Addr::from(octets(8)));
    let dst = IpAddr::V6(Ipv6Addr::from(octets(24)));
    let end = match usize::from(u16::from_be_bytes([header[4], header[5]])) {
        0 => packet.len(),
        n => (40 + n).min(packet.len()),
    };
    let mut next = header[6];
    let mut at = 40;
    let mut fragment = None;
    // Extension headers until the transport's.
    loop {
        match next {
            0 | 43 | 60 => {
                let (Some(&following), Some(&len)) = (packet.get(at), packet.get(at + 1)) else {
                    return false;
                };
                next = following;
                at += (usize::from(len) + 1) * 8;
            }
            44 => {
                let Some(ext) = packet.get(at..at + 8) else {
                    return false;
                };
                next = ext[0];
                let field = u16::from_be_bytes([ext[2], ext[3]]);
                let id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                fragment = Some((id, usize::from(field & 0xfff8), field & 1 != 0));
                at += 8;
            }
            _ => break,
        }
    }
    let Some(body) = packet.get(at..end) else {
        return false;
    };
    take_transport(state, src, dst, next, body, fragment)
}

/// Takes a transport payload (`fragment`: identification, offset and more-fragments of
/// a piece of a fragmented datagram).
fn take_transport(
    state: &mut State,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    body: &[u8],
    fragment: Option<(u32, usize, bool)>,
) -> bool {
    let Some((id, offset, more)) = fragment else {
        return take_segment(state, src, dst, protocol, body);
    };
    let key = (src, dst, protocol, id);
    // Fragments that never complete must not pile up.
    if state.fragments.len() > 4096 {
        state.fragments.clear();
    }
    let pieces = state.fragments.entry(key).or_default();
    pieces.pieces.push((offset, body.to_vec()));
    if !more {
        pieces.total = Some(offset + body.len());
    }
    match pieces.assemble() {
        Some(whole) => {
            state.fragments.remove(&key);
            take_segment(state, src, dst, protocol, &whole)
        }
        None => false,
    }
}

fn take_segment(state: &mut State, src: IpAddr, dst: IpAddr, protocol: u8, body: &[u8]) -> bool {
    let port = |at: usize| {
        body.get(at..at + 2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
    };
    let (Some(sport), Some(dport)) = (port(0), port(2)) else {
        return false;
    };
    let (src, dst) = (SocketAddr::new(src, sport), SocketAddr::new(dst, dport));
    match protocol {
        17 => {
            let Some(payload) = body.get(8..) else {
                return false;
            };
            if Some(dst) == state.probe
                && let Some(number) = probe_number(payload)
            {
                state.probed = state.probed.max(number);
                return true;
            }
            if state.topology.concerns(src, dst) && !payload.is_empty() {
                let index = state.packets;
                state.packets += 1;
                state.datagrams.push(Datagram {
                    index,
                    src,
                    dst,
                    payload: payload.to_vec(),
                });
            }
            false
        }
        6 => {
            let (Some(seq), Some(&offset), Some(&flags)) =
                (body.get(4..8), body.get(12), body.get(13))
            else {
                return false;
            };
            let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
            let syn = flags & 0x02 != 0;
            let Some(payload) = body.get(usize::from(offset >> 4) * 4..) else {
                return false;
            };
            if state.topology.concerns(src, dst) {
                let index = state.packets;
                state.packets += 1;
                state
                    .streams
                    .entry((src, dst))
                    .or_default()
                    .push(seq, syn, payload, index);
            }
            false
        }
        _ => false,
    }
}

/// The number of a probe datagram.
fn probe_number(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.strip_prefix(PROBE)?)
        .ok()?
        .parse()
        .ok()
}

/// A captured message: a datagram, or a SIP message framed out of a TCP stream.
struct Captured<'a> {
    index: u64,
    transport: Transport,
    src: SocketAddr,
    dst: SocketAddr,
    bytes: &'a [u8],
}

/// Every message captured, in capture order.
fn messages(state: &State) -> Vec<Captured<'_>> {
    let mut out: Vec<Captured<'_>> = state
        .datagrams
        .iter()
        .map(|d| Captured {
            index: d.index,
            transport: Transport::Udp,
            src: d.src,
            dst: d.dst,
            bytes: &d.payload,
        })
        .collect();
    for ((src, dst), stream) in &state.streams {
        for (start, end) in frame(&stream.data) {
            out.push(Captured {
                index: stream.index_at(start),
                transport: Transport::Tcp,
                src: *src,
                dst: *dst,
                bytes: stream.data.get(start..end).unwrap_or_default(),
            });
        }
    }
    out.sort_by_key(|m| m.index);
    out
}

/// Splits a SIP stream into messages (header block, then Content-Length bytes); what is
/// left at the end is one more piece, so that no byte escapes the search.
pub fn frame(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        // Keepalives (CRLF) between messages.
        while data.get(at).is_some_and(|b| *b == b'\r' || *b == b'\n') {
            at += 1;
        }
        if at >= data.len() {
            return out;
        }
        let Some(head) = memmem::find(&data[at..], b"\r\n\r\n") else {
            out.push((at, data.len()));
            return out;
        };
        let body = at + head + 4;
        let length = header_values(&data[at..body], &["content-length", "l"])
            .first()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let end = body.saturating_add(length).min(data.len());
        out.push((at, end));
        at = end;
    }
}

/// The values of the headers named `names` (lower case) in a message's header block.
fn header_values(message: &[u8], names: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| names.contains(&name.trim().to_ascii_lowercase().as_str()))
        .map(|(_, value)| value.trim().to_owned())
        .collect()
}

fn is_request(message: &[u8]) -> bool {
    !message.is_empty() && !message.starts_with(b"SIP/")
}

/// Which side of the word a match must not touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    /// Anything may touch it.
    Any,
    /// No digit (an IPv4 address inside a longer number, `127.0.0.2` in `127.0.0.20`).
    Digit,
    /// No hex digit or colon (an IPv6 address inside a longer one).
    Hex,
    /// No letter or digit (`=5080` is not in `tag=5080abc`).
    Word,
}

impl Edge {
    fn refuses(self, byte: Option<&u8>) -> bool {
        let Some(&b) = byte else { return false };
        match self {
            Edge::Any => false,
            Edge::Digit => b.is_ascii_digit(),
            Edge::Hex => b.is_ascii_hexdigit() || b == b':',
            Edge::Word => b.is_ascii_alphanumeric(),
        }
    }
}

/// A forbidden string.
#[derive(Clone, Debug)]
pub struct Needle {
    /// Its bytes (lower case for text; as is for binary forms).
    pub bytes: Vec<u8>,
    /// What it is, for the report.
    pub what: String,
    before: Edge,
    after: Edge,
    /// Matched byte for byte (binary forms), not case-insensitively.
    binary: bool,
}

impl Needle {
    fn text(text: &str, what: String, before: Edge, after: Edge) -> Needle {
        Needle {
            bytes: text.to_ascii_lowercase().into_bytes(),
            what,
            before,
            after,
            binary: false,
        }
    }

    fn binary(bytes: Vec<u8>, what: String) -> Needle {
        Needle {
            bytes,
            what,
            before: Edge::Any,
            after: Edge::Any,
            binary: true,
        }
    }

    /// Shown in the report.
    pub fn shown(&self) -> String {
        if self.binary {
            self.bytes.iter().map(|b| format!("{b:02x}")).collect()
        } else {
            String::from_utf8_lossy(&self.bytes).into_owned()
        }
    }
}

/// Every textual form of an address (and, for an IPv4 address, of its IPv4-mapped IPv6
/// form), with what they are.
pub fn address_needles(ip: IpAddr, what: &str) -> Vec<Needle> {
    let mut out = Vec::new();
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if let Some(v4) = v4 {
        let [a, b, c, d] = v4.octets();
        let value = u32::from(v4);
        let forms = [
            (
                format!("{a}.{b}.{c}.{d}"),
                "dotted",
                Edge::Digit,
                Edge::Digit,
            ),
            (
                format!("{a:03}.{b:03}.{c:03}.{d:03}"),
                "zero-padded",
                Edge::Digit,
                Edge::Digit,
            ),
            (format!("{value:08x}"), "as hex", Edge::Hex, Edge::Hex),
            (
                value.to_string(),
                "as a decimal number",
                Edge::Digit,
                Edge::Digit,
            ),
            (
                format!("{d}.{c}.{b}.{a}.in-addr.arpa"),
                "as reverse DNS",
                Edge::Digit,
                Edge::Any,
            ),
            (
                format!("::ffff:{a}.{b}.{c}.{d}"),
                "IPv4-mapped",
                Edge::Hex,
                Edge::Digit,
            ),
            (
                format!("0:0:0:0:0:ffff:{a}.{b}.{c}.{d}"),
                "IPv4-mapped, expanded",
                Edge::Hex,
                Edge::Digit,
            ),
        ];
        for (text, form, before, after) in forms {
            out.push(Needle::text(
                &text,
                format!("{what} {v4}, {form}"),
                before,
                after,
            ));
        }
        let mapped = v4.to_ipv6_mapped();
        out.extend(ipv6_needles(mapped, &format!("{what} {v4}, IPv4-mapped")));
        out.push(Needle::binary(
            mapped.octets().to_vec(),
            format!("{what} {v4}, IPv4-mapped, as bytes"),
        ));
    }
    if let IpAddr::V6(v6) = ip {
        out.extend(ipv6_needles(v6, &format!("{what} {v6}")));
        out.push(Needle::binary(
            v6.octets().to_vec(),
            format!("{what} {v6}, as bytes"),
        ));
    }
    dedup(out)
}

/// The compressed and expanded forms of an IPv6 address.
fn ipv6_needles(v6: Ipv6Addr, what: &str) -> Vec<Needle> {
    let segments = v6.segments();
    let join = |width: usize| -> String {
        segments
            .iter()
            .map(|s| format!("{s:0width$x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut forms = vec![
        (v6.to_string(), "compressed"),
        (join(1), "expanded"),
        (join(4), "expanded, zero-padded"),
    ];
    // `::ffff:7f00:2` (std writes mapped addresses as `::ffff:127.0.0.2`).
    if v6.to_ipv4_mapped().is_some() {
        forms.push((format!("::ffff:{:x}:{:x}", segments[6], segments[7]), "hex"));
        forms.push((
            format!("::ffff:{:04x}:{:04x}", segments[6], segments[7]),
            "hex, zero-padded",
        ));
    }
    forms
        .into_iter()
        .map(|(text, form)| Needle::text(&text, format!("{what}, {form}"), Edge::Hex, Edge::Hex))
        .collect()
}

/// The forms of a port that say it is one: `:PORT`, `=PORT`, `port=PORT`.
pub fn port_needles(port: u16, what: &str) -> Vec<Needle> {
    vec![
        Needle::text(
            &format!(":{port}"),
            format!("{what} :{port}"),
            Edge::Any,
            Edge::Digit,
        ),
        Needle::text(
            &format!("={port}"),
            format!("{what} ={port}"),
            Edge::Any,
            Edge::Word,
        ),
        Needle::text(
            &format!("port={port}"),
            format!("{what} port={port}"),
            Edge::Word,
            Edge::Word,
        ),
    ]
}

/// The address of an endpoint next to its port, as bytes (an encoder that packs them).
fn packed_needles(address: SocketAddr, what: &str) -> Vec<Needle> {
    let ip = match address.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let port = address.port().to_be_bytes();
    vec![
        Needle::binary(
            [ip.as_slice(), &port].concat(),
            format!("{what} {address}, packed"),
        ),
        Needle::binary(
            [&port, ip.as_slice()].concat(),
            format!("{what} {address}, packed"),
        ),
    ]
}

fn dedup(needles: Vec<Needle>) -> Vec<Needle> {
    let mut out: Vec<Needle> = Vec::new();
    for needle in needles {
        if !out
            .iter()
            .any(|n| n.bytes == needle.bytes && n.binary == needle.binary)
        {
            out.push(needle);
        }
    }
    out
}

/// Everything that must not reach the public side, for a topology and its markers.
pub fn needles(
    topology: &Topology,
    markers: &[(String, String)],
    call_ids: &[String],
) -> Vec<Needle> {
    let mut out = Vec::new();
    for upstream in &topology.upstreams {
        out.extend(address_needles(upstream.ip(), "the upstream's address"));
        out.extend(port_needles(upstream.port(), "the upstream's port"));
        out.extend(packed_needles(*upstream, "the upstream's address"));
    }
    out.extend(address_needles(
        topology.inner.ip(),
        "the edge's inner address",
    ));
    if topology.inner.port() != 0 {
        out.extend(port_needles(topology.inner.port(), "the edge's inner port"));
        out.extend(packed_needles(topology.inner, "the edge's inner address"));
    }
    for (text, what) in markers {
        out.push(Needle::text(text, what.clone(), Edge::Any, Edge::Any));
    }
    for call_id in call_ids {
        out.push(Needle::text(
            call_id,
            "a Call-ID the upstream made up, not seen on the public side before".into(),
            Edge::Any,
            Edge::Any,
        ));
    }
    dedup(out)
}

/// How the matched text was written in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Form {
    AsSent,
    PercentDecoded,
    /// Decoded from this run of the message.
    Base64(String),
    Hex(String),
}

/// The ways a message is read: as sent, percent-decoded, and each run of base64 or hex
/// characters decoded (at every alignment, since a token may follow a prefix). Pieces are
/// separated by a NUL, which no forbidden string contains.
struct Readings {
    /// Lower case, for the text forms.
    text: Vec<u8>,
    /// As decoded, for the binary forms.
    raw: Vec<u8>,
    /// (start, form) of each piece in both.
    pieces: Vec<(usize, Form)>,
}

impl Readings {
    fn of(message: &[u8]) -> Readings {
        let mut readings = Readings {
            text: Vec::with_capacity(message.len() * 3),
            raw: Vec::with_capacity(message.len() * 3),
            pieces: Vec::new(),
        };
        readings.add(message, Form::AsSent);
        if message.contains(&b'%') {
            readings.add(&percent_decode(message), Form::PercentDecoded);
        }
        for run in runs(message, is_base64, 8) {
            let shown = String::from_utf8_lossy(run).into_owned();
            for skip in 0..4 {
                if let Some(rest) = run.get(skip..) {
                    readings.add(&base64_decode(rest), Form::Base64(shown.clone()));
                }
            }
        }
        for run in runs(message, u8::is_ascii_hexdigit, 8) {
            let shown = String::from_utf8_lossy(run).into_owned();
            for skip in 0..2 {
                if let Some(rest) = run.get(skip..) {
                    readings.add(&hex_decode(rest), Form::Hex(shown.clone()));
                }
            }
        }
        readings
    }

    fn add(&mut self, bytes: &[u8], form: Form) {
        self.pieces.push((self.text.len(), form));
        self.text.extend(bytes.iter().map(u8::to_ascii_lowercase));
        self.raw.extend_from_slice(bytes);
        self.text.push(0);
        self.raw.push(0);
    }

    fn form_at(&self, offset: usize) -> &Form {
        let at = self.pieces.partition_point(|(start, _)| *start <= offset);
        at.checked_sub(1)
            .and_then(|i| self.pieces.get(i))
            .map_or(&Form::AsSent, |(_, form)| form)
    }
}

fn is_base64(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// The maximal runs of bytes that `keep` accepts, at least `min` long.
fn runs(message: &[u8], keep: fn(&u8) -> bool, min: usize) -> impl Iterator<Item = &[u8]> {
    message
        .split(move |b| !keep(b))
        .filter(move |run| run.len() >= min)
}

fn percent_decode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut i = 0;
    while let Some(&b) = message.get(i) {
        let hex = message
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(decoded) if b == b'%' => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Decodes base64, standard or URL-safe alphabet alike, ignoring a trailing partial
/// group.
fn base64_decode(run: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u32);
    for b in run {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            _ => 63,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

fn hex_decode(run: &[u8]) -> Vec<u8> {
    run.chunks_exact(2)
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

/// A forbidden string found in a message.
#[derive(Clone, Debug)]
struct Hit {
    /// Index of the needle.
    needle: usize,
    form: Form,
}

/// The forbidden strings in `message` (a string found only as part of a longer one
/// found at the same place is not listed again).
/// The part of a message the detector searches: all of it, but the body of an SDP
/// message (media addresses are out of scope until a media relay hides them).
fn signalling(message: &[u8]) -> &[u8] {
    let is_sdp = header_values(message, &["content-type", "c"])
        .iter()
        .any(|value| value.to_ascii_lowercase().starts_with("application/sdp"));
    match memmem::find(message, b"\r\n\r\n") {
        Some(end) if is_sdp => &message[..end + 4],
        _ => message,
    }
}

fn find(message: &[u8], needles: &[Needle], finders: &[memmem::Finder<'_>]) -> Vec<Hit> {
    let readings = Readings::of(signalling(message));
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for (i, (needle, finder)) in needles.iter().zip(finders).enumerate() {
        let haystack = if needle.binary {
            &readings.raw
        } else {
            &readings.text
        };
        for start in finder.find_iter(haystack) {
            let end = start + needle.bytes.len();
            let before = start.checked_sub(1).and_then(|at| haystack.get(at));
            if needle.before.refuses(before) || needle.after.refuses(haystack.get(end)) {
                continue;
            }
            spans.push((start, end, i));
        }
    }
    // Longest first, so that `::ffff:127.0.0.2` hides the `127.0.0.2` inside it.
    spans.sort_by_key(|(start, end, _)| (std::cmp::Reverse(end - start), *start));
    let mut kept: Vec<(usize, usize, usize)> = Vec::new();
    for span in spans {
        if !kept.iter().any(|k| k.0 <= span.0 && span.1 <= k.1) {
            kept.push(span);
        }
    }
    kept.sort_by_key(|(start, _, _)| *start);
    let mut hits: Vec<Hit> = Vec::new();
    for (start, _, needle) in kept {
        if !hits.iter().any(|h| h.needle == needle) {
            hits.push(Hit {
                needle,
                form: readings.form_at(start).clone(),
            });
        }
    }
    hits
}

/// The forbidden strings (as [`Needle::shown`] shows them) that `message` holds.
pub fn forbidden_in(message: &[u8], needles: &[Needle]) -> Vec<String> {
    let finders: Vec<memmem::Finder<'_>> = needles
        .iter()
        .map(|n| memmem::Finder::new(&n.bytes))
        .collect();
    find(message, needles, &finders)
        .into_iter()
        .map(|hit| needles[hit.needle].shown())
        .collect()
}

/// The check itself, on what the reader gathered.
fn inspect(state: &State) -> Result<Summary, String> {
    let topology = &state.topology;
    let all = messages(state);
    let toward: Vec<&Captured<'_>> = all
        .iter()
        .filter(|m| {
            topology.is_public(m.src) || (topology.is_inner(m.src) && !topology.is_upstream(m.dst))
        })
        .collect();
    let to_public = all.iter().filter(|m| topology.is_public(m.dst)).count();
    let from_upstream: Vec<&Captured<'_>> =
        all.iter().filter(|m| topology.is_upstream(m.src)).collect();
    let summary = Summary {
        toward_public: toward.len(),
        bytes: toward.iter().map(|m| m.bytes.len()).sum(),
        to_public,
        from_upstream: from_upstream.len(),
    };
    let mut problems = String::new();
    if toward.is_empty() && state.expect_public_traffic {
        let _ = writeln!(
            problems,
            "the capture saw nothing sent toward the public side ({} messages to the \
             public listeners, {} from the upstream): a detector that sees nothing proves \
             nothing (call expect_public_traffic(false) if the edge is to stay silent)",
            summary.to_public, summary.from_upstream
        );
    }
    let lost: u64 = state.streams.values().map(|s| s.lost).sum();
    if lost > 0 {
        let _ = writeln!(
            problems,
            "the capture missed {lost} bytes of TCP streams: what it did not see, it could \
             not check"
        );
    }

    // Call-IDs the upstream made up: first seen in a request from the upstream, before
    // any request to the public listeners carried them.
    let mut first_public: HashMap<String, u64> = HashMap::new();
    for m in all
        .iter()
        .filter(|m| topology.is_public(m.dst) && is_request(m.bytes))
    {
        for id in header_values(m.bytes, &["call-id", "i"]) {
            first_public.entry(id).or_insert(m.index);
        }
    }
    let mut upstream_born: Vec<String> = Vec::new();
    for m in from_upstream.iter().filter(|m| is_request(m.bytes)) {
        for id in header_values(m.bytes, &["call-id", "i"]) {
            let public_first = first_public.get(&id).is_some_and(|at| *at < m.index);
            if !public_first && !id.is_empty() && !upstream_born.contains(&id) {
                upstream_born.push(id);
            }
        }
    }

    let needles = needles(topology, &state.markers, &upstream_born);
    let finders: Vec<memmem::Finder<'_>> = needles
        .iter()
        .map(|n| memmem::Finder::new(&n.bytes))
        .collect();
    // Per needle: how many messages, and the first.
    let mut found: Vec<(usize, usize, &Captured<'_>, Form)> = Vec::new();
    let mut leaky = 0;
    let mut from_inner = Vec::new();
    for m in &toward {
        if topology.is_inner(m.src) {
            from_inner.push(*m);
        }
        let hits = find(m.bytes, &needles, &finders);
        if !hits.is_empty() {
            leaky += 1;
        }
        for hit in hits {
            match found.iter_mut().find(|(needle, ..)| *needle == hit.needle) {
                Some(entry) => entry.1 += 1,
                None => found.push((hit.needle, 1, m, hit.form)),
            }
        }
    }
    if let Some(first) = from_inner.first() {
        let _ = writeln!(
            problems,
            "{} left from the edge's inner address {} toward something other than the \
             upstream; the first, {}:\n{}",
            count(from_inner.len(), "message"),
            topology.inner,
            describe(first),
            show(first, None)
        );
    }
    if !found.is_empty() {
        let _ = writeln!(
            problems,
            "{} in {leaky} of the {} sent toward the public side:",
            count(found.len(), "forbidden string"),
            count(toward.len(), "message"),
        );
    }
    let mut shown: Vec<u64> = Vec::new();
    for (needle, messages, m, form) in &found {
        let needle = &needles[*needle];
        let place = match form {
            Form::AsSent => String::new(),
            Form::PercentDecoded => " (percent-decoded)".into(),
            Form::Base64(run) => format!(" (in the base64 run `{run}`, decoded)"),
            Form::Hex(run) => format!(" (in the hex run `{run}`, decoded)"),
        };
        let _ = write!(
            problems,
            "\n\"{}\" ({}){place}, in {}; the first, {}",
            needle.shown(),
            needle.what,
            count(*messages, "message"),
            describe(m)
        );
        // Each message in full once, and only the first few.
        if shown.contains(&m.index) {
            let _ = writeln!(problems, ", shown above");
        } else if shown.len() < 4 {
            shown.push(m.index);
            let marker = (!needle.binary && *form == Form::AsSent).then_some(&needle.bytes[..]);
            let _ = writeln!(problems, ":\n{}", show(m, marker));
        } else {
            let first = String::from_utf8_lossy(m.bytes);
            let _ = writeln!(problems, ": {}", first.lines().next().unwrap_or_default());
        }
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(format!(
            "leak detector (public listeners {}; upstream {}; inner {}):\n{problems}",
            list(&topology.public),
            list(&topology.upstreams),
            topology.inner
        ))
    }
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

fn list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(m: &Captured<'_>) -> String {
    let transport = match m.transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    format!(
        "{transport} {} -> {} (packet #{} of the capture)",
        m.src, m.dst, m.index
    )
}

/// A message for the report: at most 40 lines of at most 160 characters, the lines that
/// hold `marker` (lower case) flagged with `>`.
fn show(m: &Captured<'_>, marker: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(m.bytes);
    let mut out = String::new();
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().take(40) {
        let flagged = marker.is_some_and(|needle| {
            memmem::find(line.to_ascii_lowercase().as_bytes(), needle).is_some()
        });
        let shown: String = line.chars().take(160).collect();
        let cut = if shown.len() < line.len() { " …" } else { "" };
        let _ = writeln!(out, "  {} {shown}{cut}", if flagged { '>' } else { '|' });
    }
    if lines.len() > 40 {
        let _ = writeln!(out, "  … {} more lines", lines.len() - 40);
    }
    out
}
