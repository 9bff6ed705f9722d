//! The I/O runtime of the edge proxy: sockets and tasks around the sans-IO [`Edge`].
//!
//! - **UDP**: each public listen address and the inner address get one socket per
//!   worker, bound with `SO_REUSEPORT`, so the kernel spreads datagrams over the workers
//!   and no lock sits on the datagram path. Each worker owns its [`Edge`].
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
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{MultiHeaders, SockaddrStorage};
use sipwall_edge::{
    Action, Edge, EdgeConfig, Flow, Inbound, SharedPolicy, Side, Target, Transport,
};
use sipwall_policy::{Event, Millis, Taken, Verdict};
use sipwall_sip::{Frame, StreamFramer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
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
    UdpSocket::from_std(socket.into())
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
        let mut udp_sockets: Vec<(Side, Arc<UdpSocket>)> = vec![(Side::Inner, inner_first.clone())];
        for (address, socket) in udp_first {
            let socket = Arc::new(socket);
            public_udp.push((address, socket.clone()));
            udp_sockets.push((Side::Public, socket));
            for _ in 1..workers {
                udp_sockets.push((Side::Public, Arc::new(reuseport_udp(address)?)));
            }
        }
        for _ in 1..workers {
            udp_sockets.push((Side::Inner, Arc::new(reuseport_udp(inner)?)));
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
        for (side, socket) in udp_sockets {
            tasks.spawn(udp_worker(side, socket, shared.clone(), stop_rx.clone()));
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
            let _ = shared.inner.send_to(bytes, upstream).await;
        }
        Target::Peer(flow) => {
            if !send_to_peer(shared, flow, bytes).await {
                // The connection is gone: tell the upstream (RFC 5626 §5.3).
                if let Some(reply) = edge.flow_failed(bytes, flow.transport) {
                    let upstream = shared.config.borrow().edge.upstream;
                    let reply = reply.to_vec();
                    let _ = shared.inner.send_to(&reply, upstream).await;
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
                Some((_, socket)) => socket.send_to(bytes, flow.remote).await.is_ok(),
                None => false,
            }
        }
        Transport::Tcp | Transport::Tls => {
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
    }
}

/// Datagrams read per system call (`recvmmsg`).
const BATCH: usize = 32;

/// The message headers of `recvmmsg` and `sendmmsg`, built once per thread: they hold
/// raw pointers, so a task (which may move between threads) cannot keep them across an
/// await, and building them for every batch would cost two allocations each time.
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
    /// The worker's own socket (answers go back the way the request came).
    Own,
    /// An inner socket: toward the upstream.
    Inner,
    /// The public UDP socket at this index of `Shared::public_udp`.
    Public(usize),
}

/// Sends the datagrams of `group` (destination, index of its bytes in `pool`) from one
/// socket with as few `sendmmsg` calls as the kernel allows; what it does not take at
/// once waits for the socket to be writable. `addresses` is room for the destinations
/// in the system's form, kept by the caller so that it is not allocated each time.
async fn send_all(
    socket: &UdpSocket,
    group: &[(SocketAddr, usize)],
    pool: &[Vec<u8>],
    addresses: &mut Vec<Option<SockaddrStorage>>,
) {
    use nix::sys::socket::{MsgFlags, sendmmsg};
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let mut sent = 0;
    while sent < group.len() {
        let rest = &group[sent..];
        let count = rest.len().min(BATCH);
        let attempt = socket.try_io(tokio::io::Interest::WRITABLE, || {
            HEADERS.with_borrow_mut(|headers| {
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
            })
        });
        match attempt {
            Ok(count) if count > 0 => sent += count,
            Ok(_) => break,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    break;
                }
            }
            // A datagram the kernel refuses (an unreachable address): skip it.
            Err(_) => sent += 1,
        }
    }
}

async fn udp_worker(
    side: Side,
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    use std::os::fd::AsRawFd;
    let mut config = shared.config.clone();
    let mut edge = Edge::new(
        config.borrow_and_update().edge.clone(),
        shared.policy.clone(),
    );
    let mut upstream = config.borrow().edge.upstream;
    let v6 = socket.local_addr().is_ok_and(|address| address.is_ipv6());
    // One buffer per datagram of a batch, read with one system call.
    let mut buffers: [Vec<u8>; BATCH] = std::array::from_fn(|_| vec![0u8; 65_535]);
    let mut meta = [(0usize, None); BATCH];
    // What the batch sends, flushed with sendmmsg after the batch: by message, the
    // socket it leaves from and its destination; its bytes are in `pool` at the same
    // index. The edge writes each message into a buffer of its own, which is exchanged
    // with one of `pool` instead of copied: no copy, and no allocation once every
    // buffer has grown to the size of the messages.
    let mut outgoing: Vec<(Via, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut pool: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(4096)).collect();
    let mut group: Vec<(SocketAddr, usize)> = Vec::with_capacity(BATCH);
    let mut addresses: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    let fd = socket.as_raw_fd();
    loop {
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
        let mut count = 0;
        let received = socket.try_io(tokio::io::Interest::READABLE, || {
            count = receive_batch(fd, v6, &mut buffers, &mut meta)?;
            if count < BATCH {
                // recvmmsg stops short only when the queue is empty: saying so clears
                // the readiness now, so the next round waits for the next datagram
                // instead of learning it with one more system call (as many as the
                // batches when the load is light). The datagrams read are kept.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        if count == 0 || received.is_err_and(|error| error.kind() != io::ErrorKind::WouldBlock) {
            continue;
        }
        if refresh(&mut edge, &mut config, &shared) {
            upstream = config.borrow().edge.upstream;
        }
        let now = shared.now();
        for (index, &(len, source)) in meta.iter().enumerate().take(count) {
            let Some(source) = source else {
                continue;
            };
            let bytes = &buffers[index][..len];
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
            let (via, to) = match edge.handle(&inbound) {
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
                    if send_to_peer(&shared, flow, &out).await {
                        continue;
                    }
                    if edge.flow_failed(&out, flow.transport).is_none() {
                        continue;
                    }
                    (Via::Inner, upstream)
                }
                Action::Reply { .. } => (Via::Own, source),
                Action::Tarpit { bytes, delay } => {
                    let (socket, bytes) = (socket.clone(), bytes.to_vec());
                    tarpit(&shared, delay, async move {
                        let _ = socket.send_to(&bytes, source).await;
                    });
                    continue;
                }
                Action::Drop(reason) => {
                    tracing::trace!(?reason, %source, "dropped");
                    continue;
                }
            };
            let Some(slot) = pool.get_mut(outgoing.len()) else {
                continue;
            };
            edge.swap_output(slot);
            outgoing.push((via, to));
        }
        // Flush by socket, in the order the messages were decided.
        for first in 0..outgoing.len() {
            let via = outgoing[first].0;
            if outgoing[..first].iter().any(|&(earlier, _)| earlier == via) {
                // Sent with the group of an earlier message.
                continue;
            }
            let target = match via {
                Via::Own => &socket,
                Via::Inner => &shared.inner,
                Via::Public(index) => match shared.public_udp.get(index) {
                    Some((_, socket)) => socket,
                    None => continue,
                },
            };
            group.clear();
            group.extend(
                outgoing
                    .iter()
                    .enumerate()
                    .skip(first)
                    .filter(|(_, (each, _))| *each == via)
                    .map(|(slot, &(_, to))| (to, slot)),
            );
            send_all(target, &group, &pool, &mut addresses).await;
        }
        outgoing.clear();
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
