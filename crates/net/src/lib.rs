//! The I/O runtime of the edge proxy: sockets and tasks around the sans-IO [`Edge`].
//!
//! - **UDP**: each public listen address and the inner address get one socket per
//!   worker, bound with `SO_REUSEPORT`, so the kernel spreads datagrams over the workers
//!   and no lock sits on the datagram path. Each worker is a thread of its own (from the
//!   runtime's blocking pool) that owns its [`Edge`], reads its sockets with `recvmmsg`
//!   and sends from them with `sendmmsg`, and waits in `poll` only when they are empty.
//!   The sockets are not registered with the runtime's epoll: a registered socket always
//!   has a waiter, and the kernel then runs the waiter's callback for every datagram the
//!   socket sends (when its buffer is freed, to report room), a lock taken with
//!   interrupts off per datagram; `poll` puts a waiter there only while it waits.
//! - **TCP**: an accept loop per public listen address; each connection is a task that
//!   frames messages out of the stream ([`StreamFramer`]), owns an [`Edge`], and is
//!   reachable by its connection id so that requests from the upstream can be sent down
//!   it. Connections are capped per source address and in total, close after an idle
//!   timeout, and a message for a connection that is gone is answered 430.
//! - **Control**: [`Server::reload`] swaps the edge configuration (keys, upstream)
//!   without dropping traffic: every task rebuilds its `Edge` before its next message.
//!   [`Server::shutdown`] stops every task.
//!
//! What this module does not do: parse or route (that is `sipwall-edge`), decide what
//! is hostile (the policy), or read configuration files (the binary).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MultiHeaders, SockaddrStorage};
use sipwall_edge::{
    Action, Edge, EdgeConfig, Flow, Inbound, SharedPolicy, Side, Target, Transport,
};
use sipwall_policy::{Event, Millis, Taken, Verdict};
use sipwall_sip::{Frame, StreamFramer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Everything the runtime needs.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Routing configuration; its `public` listeners are bound here.
    pub edge: EdgeConfig,
    /// UDP sockets per address (one per core by default).
    pub workers: usize,
    /// A TCP connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Most TCP connections from one source IP address.
    pub max_connections_per_source: usize,
    /// Most TCP connections in all.
    pub max_connections: usize,
}

/// State shared by every task.
struct Shared {
    /// One inner socket, for tasks that must send to the upstream but own none.
    inner: Arc<UdpSocket>,
    /// One public UDP socket per listen address, for sends to UDP peers.
    public_udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Open TCP connections by id: where to queue a message for that peer.
    connections: Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>,
    /// Open TCP connections per source address.
    per_source: Mutex<HashMap<IpAddr, usize>>,
    next_connection: AtomicU64,
    config: watch::Receiver<Arc<NetConfig>>,
    /// The security pipeline, shared by every worker.
    policy: SharedPolicy,
    /// The origin of the pipeline's clock.
    clock: Instant,
    /// Tarpitted answers waiting for their time (capped: each holds a task).
    tarpits: AtomicUsize,
}

/// Most tarpitted answers waiting at once; beyond, the message is dropped instead.
const MAX_TARPITS: usize = 1024;
/// How often the pipeline's periodic work runs.
const POLICY_TICK: Duration = Duration::from_millis(250);

impl Shared {
    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }
}

/// A running edge proxy.
pub struct Server {
    config: watch::Sender<Arc<NetConfig>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The addresses actually bound (useful when a port was 0).
    pub bound: Vec<(Transport, SocketAddr)>,
    /// The origin of the pipeline's clock: what the admin endpoint must use for `now`.
    pub clock: Instant,
    /// The inner address actually bound.
    pub inner: SocketAddr,
}

/// A UDP socket bound with `SO_REUSEPORT`, so that several workers share the address.
fn reuseport_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Bursts of datagrams must not be lost while a worker is busy.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

impl Server {
    /// Binds every listener and starts the tasks. Must be called inside a tokio runtime.
    /// `clock` is the origin of the pipeline's clock (bans restored before the start
    /// were timed against it).
    pub async fn start(
        config: NetConfig,
        policy: SharedPolicy,
        clock: Instant,
    ) -> io::Result<Server> {
        let workers = config.workers.max(1);
        let mut config = config;
        // Bind the first socket of each address to learn the port when 0 was given.
        let mut public = Vec::new();
        let mut udp_first = Vec::new();
        let mut tcp_listeners = Vec::new();
        for &(transport, address) in &config.edge.public {
            match transport {
                Transport::Udp => {
                    let socket = reuseport_udp(address)?;
                    let bound = socket.local_addr()?;
                    public.push((Transport::Udp, bound));
                    udp_first.push((bound, socket));
                }
                Transport::Tcp => {
                    let listener = TcpListener::bind(address).await?;
                    let bound = listener.local_addr()?;
                    public.push((Transport::Tcp, bound));
                    tcp_listeners.push(listener);
                }
                Transport::Tls => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "TLS listeners are not supported yet",
                    ));
                }
            }
        }
        let inner_first = reuseport_udp(config.edge.inner)?;
        let inner = inner_first.local_addr()?;
        config.edge.public = public.clone();
        config.edge.inner = inner;

        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let (stop_tx, stop_rx) = watch::channel(false);
        let inner_first = Arc::new(inner_first);
        let mut public_udp = Vec::new();
        for (address, socket) in udp_first {
            public_udp.push((address, Arc::new(socket)));
        }
        // The first worker reads the first sockets (which the TCP tasks also send from);
        // every other worker binds its own to the same addresses.
        let mut workers_sockets = vec![WorkerSockets {
            public: public_udp
                .iter()
                .map(|(_, socket)| socket.clone())
                .collect(),
            inner: inner_first.clone(),
        }];
        for _ in 1..workers {
            let mut public = Vec::new();
            for &(address, _) in &public_udp {
                public.push(Arc::new(reuseport_udp(address)?));
            }
            workers_sockets.push(WorkerSockets {
                public,
                inner: Arc::new(reuseport_udp(inner)?),
            });
        }
        let shared = Arc::new(Shared {
            inner: inner_first,
            public_udp,
            connections: Mutex::new(HashMap::new()),
            per_source: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            config: config_rx,
            policy,
            clock,
            tarpits: AtomicUsize::new(0),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(policy_ticker(shared.clone(), stop_rx.clone()));
        for own in workers_sockets {
            let (shared, stop) = (shared.clone(), stop_rx.clone());
            tasks.spawn_blocking(move || udp_worker(&own, &shared, &stop));
        }
        for listener in tcp_listeners {
            tasks.spawn(tcp_acceptor(listener, shared.clone(), stop_rx.clone()));
        }
        Ok(Server {
            config: config_tx,
            stop: stop_tx,
            tasks,
            bound: public,
            clock,
            inner,
        })
    }

    /// Replaces the routing configuration (keys, upstream, limits). Listen addresses
    /// stay as they were bound: changing them needs a restart.
    pub fn reload(&self, mut edge: EdgeConfig) {
        let current = self.config.borrow().clone();
        edge.public = current.edge.public.clone();
        edge.inner = current.edge.inner;
        let mut next = (*current).clone();
        next.edge = edge;
        self.config.send_replace(Arc::new(next));
    }

    /// Stops every task and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Rebuilds `edge` if the configuration changed since it was built; true if it did.
fn refresh(edge: &mut Edge, config: &mut watch::Receiver<Arc<NetConfig>>, shared: &Shared) -> bool {
    if !config.has_changed().unwrap_or(false) {
        return false;
    }
    let current = config.borrow_and_update().clone();
    *edge = Edge::new(current.edge.clone(), shared.policy.clone());
    true
}

/// The pipeline's periodic work (unanswered challenges, ends of bans). Its events are
/// drained by whoever keeps the bans (the daemon's keeper: disk, kernel, log).
async fn policy_ticker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(POLICY_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let mut policy = shared.policy.lock().unwrap_or_else(|p| p.into_inner());
        policy.tick(shared.now());
    }
}

/// Writes one event of the pipeline to the log: one line per decision, with the rule,
/// the source, the action and the reason, in a form fail2ban can also read.
pub fn log_event(event: &Event) {
    let rule = event.rule.name();
    let source = event.source;
    let reason = &event.reason;
    match event.taken {
        Taken::Banned { until, offences } => tracing::warn!(
            target: "sipwall::policy",
            rule, %source, action = "ban", ttl_s = until.saturating_sub(event.at) / 1000,
            offences, reason = %reason, "banned {source}"
        ),
        Taken::Honeypotted { until } => tracing::warn!(
            target: "sipwall::policy",
            rule, %source, action = "honeypot", ttl_s = until.saturating_sub(event.at) / 1000,
            reason = %reason, "sent {source} to the honeypot"
        ),
        Taken::Expired => tracing::info!(
            target: "sipwall::policy", rule, %source, action = "expired", "ban of {source} ended"
        ),
        Taken::Unbanned => tracing::info!(
            target: "sipwall::policy", rule, %source, action = "unban", "ban of {source} lifted"
        ),
        other => tracing::info!(
            target: "sipwall::policy",
            rule, %source, action = ?other, reason = %reason, "{rule} matched {source}"
        ),
    }
}

/// Sends `bytes` after `delay` from a task of its own, unless too many already wait.
fn tarpit<F>(shared: &Arc<Shared>, delay: Millis, send: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if shared.tarpits.fetch_add(1, Ordering::Relaxed) >= MAX_TARPITS {
        shared.tarpits.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        send.await;
        shared.tarpits.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Forwards a message the edge rewrote to where it goes.
async fn deliver(shared: &Shared, edge: &mut Edge, target: Target, bytes: &[u8]) {
    match target {
        Target::Upstream => {
            let upstream = shared.config.borrow().edge.upstream;
            send_datagram(&shared.inner, bytes, upstream).await;
        }
        Target::Peer(flow) => {
            if !send_to_peer(shared, flow, bytes).await {
                // The connection is gone: tell the upstream (RFC 5626 §5.3).
                if let Some(reply) = edge.flow_failed(bytes, flow.transport) {
                    let upstream = shared.config.borrow().edge.upstream;
                    let reply = reply.to_vec();
                    send_datagram(&shared.inner, &reply, upstream).await;
                }
            }
        }
    }
}

/// Sends to a public peer; false if its TCP connection is gone.
async fn send_to_peer(shared: &Shared, flow: Flow, bytes: &[u8]) -> bool {
    match flow.transport {
        Transport::Udp => {
            let socket = shared
                .public_udp
                .iter()
                .find(|(a, _)| a.is_ipv4() == flow.remote.is_ipv4())
                .or_else(|| shared.public_udp.first());
            match socket {
                Some((_, socket)) => send_datagram(socket, bytes, flow.remote).await,
                None => false,
            }
        }
        Transport::Tcp | Transport::Tls => queue_on_connection(shared, flow, bytes),
    }
}

/// Queues a message on the TCP connection of `flow`; false if it is gone.
fn queue_on_connection(shared: &Shared, flow: Flow, bytes: &[u8]) -> bool {
    let sender = shared
        .connections
        .lock()
        .ok()
        .and_then(|map| map.get(&flow.connection).cloned());
    match sender {
        Some(sender) => sender.try_send(bytes.to_vec()).is_ok(),
        None => false,
    }
}

/// How many times a task of the runtime tries a datagram whose socket's send buffer is
/// full, a millisecond apart, before it gives the datagram up.
const SEND_ATTEMPTS: usize = 100;

/// Sends one datagram from a UDP socket, for the tasks of the runtime (the sockets are
/// not registered with it, see the module's documentation): while the send buffer is
/// full it tries again every millisecond, [`SEND_ATTEMPTS`] times at most. False if the
/// datagram was not sent.
async fn send_datagram(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> bool {
    for _ in 0..SEND_ATTEMPTS {
        match socket.send_to(bytes, to) {
            Ok(_) => return true,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(_) => return false,
        }
    }
    false
}

/// Datagrams read per system call (`recvmmsg`).
const BATCH: usize = 32;

/// The message headers of `recvmmsg` and `sendmmsg`, built once per worker thread:
/// building them for every batch would cost two allocations each time.
struct Headers {
    /// For IPv4 sockets. Receiving headers are kept per address family because the
    /// kernel shortens each header's address length to that of the address it wrote.
    receive_v4: MultiHeaders<SockaddrStorage>,
    /// For IPv6 sockets.
    receive_v6: MultiHeaders<SockaddrStorage>,
    /// For sending (`sendmmsg` sets every field it uses).
    send: MultiHeaders<SockaddrStorage>,
}

thread_local! {
    static HEADERS: RefCell<Headers> = RefCell::new(Headers {
        receive_v4: MultiHeaders::preallocate(BATCH, None),
        receive_v6: MultiHeaders::preallocate(BATCH, None),
        send: MultiHeaders::preallocate(BATCH, None),
    });
}

/// Reads up to [`BATCH`] datagrams without blocking; fills `meta` with their lengths and
/// sources and returns how many were read.
fn receive_batch(
    fd: std::os::fd::RawFd,
    v6: bool,
    buffers: &mut [Vec<u8>; BATCH],
    meta: &mut [(usize, Option<SocketAddr>); BATCH],
) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, recvmmsg};
    HEADERS.with_borrow_mut(|headers| {
        let headers = if v6 {
            &mut headers.receive_v6
        } else {
            &mut headers.receive_v4
        };
        let mut slices = buffers
            .each_mut()
            .map(|buffer| [io::IoSliceMut::new(buffer.as_mut_slice())]);
        let results = recvmmsg(fd, headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map_err(io::Error::from)?;
        let mut count = 0;
        for (slot, result) in meta.iter_mut().zip(results) {
            let source = result.address.and_then(|address| {
                if let Some(v4) = address.as_sockaddr_in() {
                    Some(SocketAddr::V4((*v4).into()))
                } else {
                    address
                        .as_sockaddr_in6()
                        .map(|v6| SocketAddr::V6((*v6).into()))
                }
            });
            *slot = (result.bytes, source);
            count += 1;
        }
        Ok(count)
    })
}

/// Which socket an outgoing datagram leaves from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The socket the message came in on (answers go back the way the request came).
    Own,
    /// The worker's inner socket: toward the upstream.
    Inner,
    /// The worker's public UDP socket for the address at this index of
    /// `Shared::public_udp`.
    Public(usize),
}

/// How long a worker whose sockets are empty waits in `poll` before it looks at the
/// stop signal again (a datagram ends the wait at once).
const IDLE_WAIT_MS: u8 = 50;

/// Longest wait for room in a socket's send buffer, in milliseconds; what is not sent by
/// then is dropped.
const SEND_WAIT_MS: u8 = 100;

/// Batches read from one socket in a row before the worker turns to its other sockets,
/// so that a flood on one side cannot starve the other.
const BATCHES_IN_A_ROW: usize = 4;

/// Sends the datagrams of `group` (destination, index of its bytes in `pool`) from one
/// socket with as few `sendmmsg` calls as the kernel allows; while the send buffer is
/// full it waits for room, up to [`SEND_WAIT_MS`] each time, and drops the rest if none
/// comes. `addresses` is room for the destinations in the system's form, kept by the
/// caller so that it is not allocated each time.
fn send_all(
    socket: &UdpSocket,
    group: &[(SocketAddr, usize)],
    pool: &[Vec<u8>],
    addresses: &mut Vec<Option<SockaddrStorage>>,
) {
    use nix::sys::socket::{MsgFlags, sendmmsg};
    let fd = socket.as_raw_fd();
    let mut sent = 0;
    // Bounded: every round sends or skips at least one datagram, or gives up.
    while sent < group.len() {
        let rest = &group[sent..];
        let count = rest.len().min(BATCH);
        let attempt = HEADERS.with_borrow_mut(|headers| {
            // Only the datagrams sent are filled in: a whole batch of addresses is
            // some 4 KB to write.
            let mut slices = [[io::IoSlice::new(&[])]; BATCH];
            addresses.clear();
            for (slice, &(address, slot)) in slices.iter_mut().zip(&rest[..count]) {
                let bytes = pool.get(slot).map_or(&[][..], Vec::as_slice);
                *slice = [io::IoSlice::new(bytes)];
                addresses.push(Some(SockaddrStorage::from(address)));
            }
            let no_control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            sendmmsg(
                fd,
                &mut headers.send,
                &slices[..count],
                &addresses[..],
                no_control,
                MsgFlags::empty(),
            )
            .map(|results| results.count())
            .map_err(io::Error::from)
        });
        match attempt {
            Ok(count) if count > 0 => sent += count,
            Ok(_) => break,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let mut room = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
                if !matches!(poll(&mut room, PollTimeout::from(SEND_WAIT_MS)), Ok(ready) if ready > 0)
                {
                    tracing::debug!(dropped = group.len() - sent, "send buffer full");
                    break;
                }
            }
            // A datagram the kernel refuses (an unreachable address): skip it.
            Err(_) => sent += 1,
        }
    }
}

/// The UDP sockets of one worker: its own on every public UDP address (in the order of
/// `Shared::public_udp`) and on the inner address. It reads them and sends from them.
struct WorkerSockets {
    public: Vec<Arc<UdpSocket>>,
    inner: Arc<UdpSocket>,
}

/// What a UDP worker keeps from batch to batch.
struct Worker {
    edge: Edge,
    config: watch::Receiver<Arc<NetConfig>>,
    upstream: SocketAddr,
    /// One buffer per datagram of a batch, read with one system call.
    buffers: [Vec<u8>; BATCH],
    meta: [(usize, Option<SocketAddr>); BATCH],
    /// What the batch sends, flushed with sendmmsg after the batch: by message, the
    /// socket it leaves from and its destination; its bytes are in `pool` at the same
    /// index. The edge writes each message into a buffer of its own, which is exchanged
    /// with one of `pool` instead of copied: no copy, and no allocation once every
    /// buffer has grown to the size of the messages.
    outgoing: Vec<(Via, SocketAddr)>,
    pool: Vec<Vec<u8>>,
    group: Vec<(SocketAddr, usize)>,
    addresses: Vec<Option<SockaddrStorage>>,
}

/// One UDP worker, on a thread of its own until `stop` says true: waits in `poll` until
/// one of its sockets has datagrams, then reads each that has, a few batches at most
/// before it turns to the next.
fn udp_worker(own: &WorkerSockets, shared: &Arc<Shared>, stop: &watch::Receiver<bool>) {
    let mut config = shared.config.clone();
    let edge = Edge::new(
        config.borrow_and_update().edge.clone(),
        shared.policy.clone(),
    );
    let upstream = config.borrow().edge.upstream;
    let mut worker = Worker {
        edge,
        config,
        upstream,
        buffers: std::array::from_fn(|_| vec![0u8; 65_535]),
        meta: [(0usize, None); BATCH],
        outgoing: Vec::with_capacity(BATCH),
        pool: (0..BATCH).map(|_| Vec::with_capacity(4096)).collect(),
        group: Vec::with_capacity(BATCH),
        addresses: Vec::with_capacity(BATCH),
    };
    let reading: Vec<(Side, &Arc<UdpSocket>)> = own
        .public
        .iter()
        .map(|socket| (Side::Public, socket))
        .chain(std::iter::once((Side::Inner, &own.inner)))
        .collect();
    let v6: Vec<bool> = reading
        .iter()
        .map(|(_, socket)| socket.local_addr().is_ok_and(|a| a.is_ipv6()))
        .collect();
    let mut waiting: Vec<PollFd<'_>> = reading
        .iter()
        .map(|(_, socket)| PollFd::new(socket.as_fd(), PollFlags::POLLIN))
        .collect();
    // Stops when told, or when the server is gone without saying so (its sender too).
    while !*stop.borrow() && stop.has_changed().is_ok() {
        match poll(&mut waiting, PollTimeout::from(IDLE_WAIT_MS)) {
            Ok(ready) if ready > 0 => {}
            _ => continue,
        }
        for (index, &(side, socket)) in reading.iter().enumerate() {
            let readable = waiting[index]
                .revents()
                .is_some_and(|events| !events.is_empty());
            if !readable {
                continue;
            }
            for _ in 0..BATCHES_IN_A_ROW {
                let count = match receive_batch(
                    socket.as_raw_fd(),
                    v6[index],
                    &mut worker.buffers,
                    &mut worker.meta,
                ) {
                    Ok(count) => count,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(error) => {
                        tracing::debug!(%error, "receiving failed");
                        0
                    }
                };
                if count > 0 {
                    worker.forward(shared, own, side, socket, count);
                }
                // recvmmsg stops short only when the queue is empty.
                if count < BATCH {
                    break;
                }
            }
        }
    }
}

impl Worker {
    /// Decides and sends the first `count` datagrams of the batch read from `socket`.
    fn forward(
        &mut self,
        shared: &Arc<Shared>,
        own: &WorkerSockets,
        side: Side,
        socket: &Arc<UdpSocket>,
        count: usize,
    ) {
        if refresh(&mut self.edge, &mut self.config, shared) {
            self.upstream = self.config.borrow().edge.upstream;
        }
        let upstream = self.upstream;
        let now = shared.now();
        for (index, &(len, source)) in self.meta.iter().enumerate().take(count) {
            let Some(source) = source else {
                continue;
            };
            let bytes = &self.buffers[index][..len];
            if sipwall_sip::is_keepalive(bytes) {
                continue;
            }
            let inbound = Inbound {
                bytes,
                side,
                flow: Flow {
                    transport: Transport::Udp,
                    remote: source,
                    connection: 0,
                },
                now,
            };
            // Every arm that sends leaves the message in the edge's output buffer.
            let (via, to) = match self.edge.handle(&inbound) {
                Action::Forward {
                    to: Target::Upstream,
                    ..
                } => {
                    let via = if side == Side::Inner {
                        Via::Own
                    } else {
                        Via::Inner
                    };
                    (via, upstream)
                }
                Action::Forward {
                    to: Target::Peer(flow),
                    ..
                } if flow.transport == Transport::Udp => {
                    let index = shared
                        .public_udp
                        .iter()
                        .position(|(a, _)| a.is_ipv4() == flow.remote.is_ipv4())
                        .unwrap_or(0);
                    (Via::Public(index), flow.remote)
                }
                Action::Forward {
                    to: Target::Peer(flow),
                    bytes,
                } => {
                    // A TCP peer: queued on its connection, or 430 if it is gone.
                    let out = bytes.to_vec();
                    if queue_on_connection(shared, flow, &out) {
                        continue;
                    }
                    if self.edge.flow_failed(&out, flow.transport).is_none() {
                        continue;
                    }
                    (Via::Inner, upstream)
                }
                Action::Reply { .. } => (Via::Own, source),
                Action::Tarpit { bytes, delay } => {
                    let (socket, bytes) = (socket.clone(), bytes.to_vec());
                    tarpit(shared, delay, async move {
                        send_datagram(&socket, &bytes, source).await;
                    });
                    continue;
                }
                Action::Drop(reason) => {
                    tracing::trace!(?reason, %source, "dropped");
                    continue;
                }
            };
            let Some(slot) = self.pool.get_mut(self.outgoing.len()) else {
                continue;
            };
            self.edge.swap_output(slot);
            self.outgoing.push((via, to));
        }
        // Flush by socket, in the order the messages were decided.
        for first in 0..self.outgoing.len() {
            let via = self.outgoing[first].0;
            if self.outgoing[..first]
                .iter()
                .any(|&(earlier, _)| earlier == via)
            {
                // Sent with the group of an earlier message.
                continue;
            }
            let target = match via {
                Via::Own => socket,
                Via::Inner => &own.inner,
                Via::Public(index) => match own.public.get(index) {
                    Some(socket) => socket,
                    None => continue,
                },
            };
            self.group.clear();
            self.group.extend(
                self.outgoing
                    .iter()
                    .enumerate()
                    .skip(first)
                    .filter(|(_, (each, _))| *each == via)
                    .map(|(slot, &(_, to))| (to, slot)),
            );
            send_all(target, &self.group, &self.pool, &mut self.addresses);
        }
        self.outgoing.clear();
    }
}

async fn tcp_acceptor(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((stream, source)) = accepted else {
            continue;
        };
        // A banned source's connection is closed at once: no buffer, no task.
        let banned = {
            let mut policy = shared.policy.lock().unwrap_or_else(|p| p.into_inner());
            policy.admit(source.ip(), shared.now()) == Verdict::Drop
        };
        if banned {
            drop(stream);
            continue;
        }
        let config = shared.config.borrow().clone();
        let admitted = {
            let Ok(mut per_source) = shared.per_source.lock() else {
                continue;
            };
            let total: usize = per_source.values().sum();
            let count = per_source.entry(source.ip()).or_insert(0);
            let ok = *count < config.max_connections_per_source && total < config.max_connections;
            if ok {
                *count += 1;
            }
            ok
        };
        if !admitted {
            tracing::debug!(%source, "connection refused: limit reached");
            drop(stream);
            continue;
        }
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        connections.spawn(tcp_connection(
            stream,
            source,
            id,
            shared.clone(),
            stop.clone(),
        ));
    }
    connections.shutdown().await;
}

async fn tcp_connection(
    stream: TcpStream,
    source: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let (sender, mut queue) = mpsc::channel::<Vec<u8>>(256);
    if let Ok(mut map) = shared.connections.lock() {
        map.insert(id, sender);
    }
    let (mut reader, mut writer) = stream.into_split();
    let (reply_tx, mut reply_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer_task = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                Some(bytes) = queue.recv() => bytes,
                Some(bytes) = reply_rx.recv() => bytes,
                else => break,
            };
            if writer.write_all(&next).await.is_err() {
                break;
            }
        }
    });
    let mut config = shared.config.clone();
    let current = config.borrow_and_update().clone();
    let mut edge = Edge::new(current.edge.clone(), shared.policy.clone());
    let idle = current.tcp_idle_timeout;
    let limit = current.edge.limits.effective_max_message_size();
    let mut framer = StreamFramer::new();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let flow = Flow {
        transport: Transport::Tcp,
        remote: source,
        connection: id,
    };
    'connection: loop {
        let read = tokio::select! {
            read = tokio::time::timeout(idle, reader.read(&mut chunk)) => read,
            _ = stop.changed() => break,
        };
        let len = match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(len)) => len,
        };
        buf.extend_from_slice(&chunk[..len]);
        loop {
            let frame = match framer.next_frame(&buf, &current.edge.limits) {
                Ok(frame) => frame,
                Err(error) => {
                    tracing::debug!(%source, %error, "closing connection that cannot be framed");
                    break 'connection;
                }
            };
            match frame {
                Frame::Partial => {
                    if buf.len() > limit {
                        break 'connection;
                    }
                    break;
                }
                Frame::KeepAlive(n) => {
                    // A double CRLF ping gets a single CRLF pong (RFC 5626 §3.5.1).
                    if n >= 4 {
                        let _ = reply_tx.try_send(b"\r\n".to_vec());
                    }
                    buf.drain(..n);
                }
                Frame::Message(n) => {
                    refresh(&mut edge, &mut config, &shared);
                    let inbound = Inbound {
                        bytes: &buf[..n],
                        side: Side::Public,
                        flow,
                        now: shared.now(),
                    };
                    let outcome = match edge.handle(&inbound) {
                        Action::Forward { to, bytes } => Some((Some(to), bytes.to_vec())),
                        Action::Reply { bytes } => Some((None, bytes.to_vec())),
                        Action::Tarpit { bytes, delay } => {
                            let (reply_tx, bytes) = (reply_tx.clone(), bytes.to_vec());
                            tarpit(&shared, delay, async move {
                                let _ = reply_tx.send(bytes).await;
                            });
                            None
                        }
                        Action::Drop(sipwall_edge::DropReason::Banned) => break 'connection,
                        Action::Drop(reason) => {
                            tracing::trace!(?reason, %source, "dropped");
                            None
                        }
                    };
                    buf.drain(..n);
                    match outcome {
                        Some((None, out)) => {
                            let _ = reply_tx.try_send(out);
                        }
                        Some((Some(target), out)) => {
                            deliver(&shared, &mut edge, target, &out).await;
                        }
                        None => {}
                    }
                }
            }
        }
    }
    if let Ok(mut map) = shared.connections.lock() {
        map.remove(&id);
    }
    if let Ok(mut per_source) = shared.per_source.lock()
        && let Some(count) = per_source.get_mut(&source.ip())
    {
        *count = count.saturating_sub(1);
        if *count == 0 {
            per_source.remove(&source.ip());
        }
    }
    drop(reply_tx);
    writer_task.abort();
}
