//! A load generator and upstream responder for the edge proxy, for rates beyond what
//! sipp can drive on these machines.
//!
//! Phones: `--sources` UDP sockets (bound to `--from`, 127.0.0.1 by default) send
//! pre-built requests to `--target` at `--rate` messages per second for `--seconds`,
//! each with a sequence number in its Via branch: OPTIONS, or with `--requests invite`
//! INVITEs with SDP (calls set up by phones; nothing follows them). Upstream: one socket
//! on `--upstream` answers every request it receives with 200 OK, with the request's
//! Record-Route (with `--answers pbx`, also with a PBX's Contact, Server, Allow and
//! Supported, what topology hiding rewrites). Each response that comes back to a phone
//! socket is matched to its request by the sequence number, which gives loss and
//! latency per message.
//!
//! The generator is built to cost as little CPU per message as possible, so that the
//! proxy, not the generator, is what a measurement finds the limit of: requests are
//! built before the clock starts, sent with `sendmmsg` in batches (every request that
//! is due when the sender wakes up, up to [`BATCH`] per system call), responses are read
//! with `recvmmsg` by one thread that polls every phone socket, and the responder reads
//! and answers with `recvmmsg` and `sendmmsg`. Three threads in all, whatever the number
//! of sources.
//!
//! Prints one line: `rate R sent S received N loss P% p50 X us p99 Y us mean Z us
//! send_s T gen_cpu C%`, where `send_s` is how long sending took (longer than
//! `--seconds` means the generator fell behind) and `gen_cpu` the generator's own CPU
//! time (all threads) over that time, in percent of one core. With `--watch PID,PID`,
//! the line adds `proxy_cpu C%`: the CPU time of those processes over the same time.
//! Last comes `cores_busy A%/B%/…`: how busy each core of the machine was over that
//! time, whatever ran on it (more than the generator and proxy use means that other
//! work shared the cores, or that the kernel did work no process is charged for).
//! Then `drops upstream U phones P`: datagrams the responder's socket and the phone
//! sockets dropped for a full receive buffer (the generator could not keep up), and
//! with `--watch-ports PORT,PORT`, `proxy X`: the same for the proxy's sockets over the
//! sending time and the second after it.
//! Every loop is bounded by the duration; the program stops by itself.
#![allow(clippy::unwrap_used)]

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use sipwall_bench::load::{answer, invite, request};

/// Datagrams per `sendmmsg` or `recvmmsg` call.
const BATCH: usize = 64;

/// Largest datagram read; the messages of this workload are a few hundred bytes.
const DATAGRAM: usize = 4096;

struct Args {
    target: SocketAddr,
    upstream: SocketAddr,
    rate: u64,
    seconds: u64,
    sources: usize,
    /// The address the phone sockets send from.
    from: std::net::IpAddr,
    /// Processes whose CPU time is reported over the sending time (the proxy's).
    watch: Vec<u32>,
    /// Local UDP ports (the proxy's) whose receive-buffer drops are reported.
    watch_ports: Vec<u16>,
    /// Answer like a PBX: with its Contact, Server and Allow headers (what topology
    /// hiding rewrites), not only the headers a response must copy.
    pbx_answers: bool,
    /// Send INVITEs rather than OPTIONS.
    invites: bool,
}

fn args() -> Args {
    let mut args = Args {
        target: "127.0.0.1:5180".parse().unwrap(),
        upstream: "127.0.0.1:5190".parse().unwrap(),
        rate: 10_000,
        seconds: 3,
        sources: 4,
        from: "127.0.0.1".parse().unwrap(),
        watch: Vec::new(),
        watch_ports: Vec::new(),
        pbx_answers: false,
        invites: false,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--target" => args.target = value.parse().unwrap(),
            "--upstream" => args.upstream = value.parse().unwrap(),
            "--rate" => args.rate = value.parse().unwrap(),
            "--seconds" => args.seconds = value.parse().unwrap(),
            "--sources" => args.sources = value.parse().unwrap(),
            "--from" => args.from = value.parse().unwrap(),
            "--answers" => args.pbx_answers = value == "pbx",
            "--requests" => {
                args.invites = match value {
                    "invite" => true,
                    "options" => false,
                    other => panic!("--requests takes options or invite, not {other}"),
                }
            }
            "--watch-ports" => {
                args.watch_ports = value
                    .split(',')
                    .filter(|port| !port.is_empty())
                    .map(|port| port.parse().unwrap())
                    .collect()
            }
            "--watch" => {
                args.watch = value
                    .split(',')
                    .filter(|pid| !pid.is_empty())
                    .map(|pid| pid.parse().unwrap())
                    .collect()
            }
            other => panic!("unknown option {other}"),
        }
    }
    assert!(args.rate > 0 && args.seconds > 0 && args.sources > 0);
    args
}

/// Binds a UDP socket with large buffers, so that bursts are not lost while a thread of
/// the generator is not running.
fn bind(address: SocketAddr) -> UdpSocket {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = UdpSocket::bind(address).unwrap();
    // Capped by net.core.rmem_max and wmem_max.
    let _ = setsockopt(&socket, sockopt::RcvBuf, &(4 << 20));
    let _ = setsockopt(&socket, sockopt::SndBuf, &(4 << 20));
    socket
}

/// The upstream: answers each request with a 200 OK, a batch at a time.
fn respond(socket: UdpSocket, extra: Vec<u8>, stop: Arc<AtomicBool>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; DATAGRAM]; BATCH];
    let mut sources: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    let mut lengths: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
    let mut answers: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1024)).collect();
    let mut receive = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    while !stop.load(Ordering::Relaxed) {
        sources.clear();
        lengths.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|buffer| [IoSliceMut::new(buffer)])
                .collect();
            // Blocks for the first datagram (up to the read timeout), then takes what waits.
            let Ok(results) = recvmmsg(
                fd,
                &mut receive,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) else {
                continue;
            };
            lengths.extend(results.map(|r| (r.bytes, r.address)));
        }
        let mut count = 0;
        for (index, &(len, from)) in lengths.iter().enumerate() {
            let Some(from) = from else {
                continue;
            };
            if answer(&buffers[index][..len], &extra, &mut answers[count]) {
                sources.push(Some(from));
                count += 1;
            }
        }
        let out: Vec<[IoSlice<'_>; 1]> =
            answers[..count].iter().map(|a| [IoSlice::new(a)]).collect();
        let mut sent = 0;
        // Bounded: each round sends at least one datagram or gives up on the batch.
        while sent < count {
            let no_control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            match sendmmsg(
                fd,
                &mut send,
                &out[sent..],
                &sources[sent..],
                no_control,
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let n = results.count();
                    if n == 0 {
                        break;
                    }
                    sent += n;
                }
                Err(_) => sent += 1,
            }
        }
    }
}

/// The sequence number in the phone's branch of a response.
fn sequence(response: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(response, b"branch=z9hG4bKld")? + 16;
    let digits = response.get(at..at + 12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Reads the responses on every phone socket and records the latency of each.
fn receive(
    sockets: Vec<UdpSocket>,
    start: Instant,
    stop: Arc<AtomicBool>,
    sent_at: Arc<Vec<AtomicU64>>,
    latency_ns: Arc<Vec<AtomicU64>>,
) {
    let mut buffers = vec![[0u8; DATAGRAM]; BATCH];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut lengths: Vec<usize> = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd<'_>> = sockets
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        if poll(&mut fds, PollTimeout::from(100u8)).unwrap_or(0) <= 0 {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        drop(fds);
        for (socket, _) in sockets.iter().zip(ready).filter(|(_, ready)| *ready) {
            lengths.clear();
            {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                    .iter_mut()
                    .map(|buffer| [IoSliceMut::new(buffer)])
                    .collect();
                let Ok(results) = recvmmsg(
                    socket.as_raw_fd(),
                    &mut headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) else {
                    continue;
                };
                lengths.extend(results.map(|r| r.bytes));
            }
            let now = start.elapsed().as_nanos() as u64;
            for (buffer, &len) in buffers.iter().zip(&lengths) {
                if let Some(seq) = sequence(&buffer[..len]).filter(|&s| s < sent_at.len() as u64) {
                    let sent = sent_at[seq as usize].load(Ordering::Relaxed);
                    latency_ns[seq as usize]
                        .store(now.saturating_sub(sent).max(1), Ordering::Relaxed);
                }
            }
        }
    }
}

/// CPU time (user + system) of the whole process so far.
fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()))
}

/// CPU time (user + system, all threads) of the processes `pids`, from /proc; a process
/// that is gone counts as zero.
fn cpu_of(pids: &[u32]) -> Duration {
    // Linux reports these fields in USER_HZ, which is 100 on every architecture.
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name may hold spaces: fields are counted after its ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split(' ').collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Datagrams dropped so far because a socket's receive buffer was full, summed over the
/// IPv4 UDP sockets bound to `ports` (from /proc/net/udp).
fn drops_on(ports: &[u16]) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let drops: u64 = fields.get(12)?.parse().ok()?;
            ports.contains(&port).then_some(drops)
        })
        .sum()
}

/// Busy and total time of each core so far, from /proc/stat (in USER_HZ ticks).
fn core_times() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let ticks: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|t| t.parse().ok())
                .collect();
            let total: u64 = ticks.iter().take(8).sum();
            // idle and iowait
            let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

fn main() {
    let args = args();
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = bind(args.upstream);
    let extra = if args.pbx_answers {
        sipwall_bench::load::pbx_lines(args.upstream)
    } else {
        Vec::new()
    };
    let responder = {
        let stop = stop.clone();
        std::thread::spawn(move || respond(upstream, extra, stop))
    };
    let total = args.rate * args.seconds;
    // Send times in ns since start, indexed by sequence number; 0 means not answered.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let latency_ns: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let sockets: Vec<UdpSocket> = (0..args.sources)
        .map(|_| bind(SocketAddr::new(args.from, 0)))
        .collect();
    let receiver = {
        let clones = sockets.iter().map(|s| s.try_clone().unwrap()).collect();
        let (stop, sent_at, latency_ns) = (stop.clone(), sent_at.clone(), latency_ns.clone());
        std::thread::spawn(move || receive(clones, start, stop, sent_at, latency_ns))
    };
    // Pre-build every request so that sending costs only the system calls. Requests
    // go out in runs of BATCH consecutive sequence numbers per source socket.
    let addresses: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let socket_of = |seq: u64| (seq / BATCH as u64) as usize % sockets.len();
    let build = if args.invites { invite } else { request };
    let requests: Vec<Vec<u8>> = (0..total)
        .map(|seq| build(addresses[socket_of(seq)], seq))
        .collect();
    let slices: Vec<[IoSlice<'_>; 1]> = requests.iter().map(|r| [IoSlice::new(r)]).collect();
    let targets: Vec<Option<SockaddrStorage>> = vec![Some(args.target.into()); BATCH];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);

    let begin = Instant::now();
    let cpu_before = cpu_time();
    let watched_before = cpu_of(&args.watch);
    let cores_before = core_times();
    let proxy_drops_before = drops_on(&args.watch_ports);
    let mut seq = 0u64;
    // Bounded: every round sends at least one request or sleeps until one is due.
    while seq < total {
        let elapsed = begin.elapsed().as_nanos() as u64;
        let due = ((elapsed as u128 * args.rate as u128 / 1_000_000_000) as u64 + 1).min(total);
        if due <= seq {
            let next = Duration::from_nanos(seq * 1_000_000_000 / args.rate);
            std::thread::sleep(next.saturating_sub(begin.elapsed()));
            continue;
        }
        while seq < due {
            // Up to the end of this socket's run of BATCH, and no further than what is due.
            let run_end = (seq / BATCH as u64 + 1) * BATCH as u64;
            let end = due.min(run_end);
            let now = start.elapsed().as_nanos() as u64;
            for index in seq..end {
                sent_at[index as usize].store(now, Ordering::Relaxed);
            }
            let count = (end - seq) as usize;
            let no_control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            let sent = sendmmsg(
                sockets[socket_of(seq)].as_raw_fd(),
                &mut headers,
                &slices[seq as usize..end as usize],
                &targets[..count],
                no_control,
                MsgFlags::empty(),
            )
            .map(|results| results.count())
            .unwrap_or(0);
            // A datagram the kernel refused counts as sent and lost.
            seq += sent.max(1) as u64;
        }
    }
    let send_seconds = begin.elapsed().as_secs_f64();
    let gen_cpu = (cpu_time() - cpu_before).as_secs_f64() / send_seconds * 100.0;
    let proxy_cpu = cpu_of(&args.watch)
        .saturating_sub(watched_before)
        .as_secs_f64()
        / send_seconds
        * 100.0;
    // Late answers still count for a second after the last request.
    std::thread::sleep(Duration::from_secs(1));
    // Read while the sockets are still open.
    let upstream_port = [args.upstream.port()];
    let phone_ports: Vec<u16> = addresses.iter().map(SocketAddr::port).collect();
    let drops = format!(
        " drops upstream {} phones {}{}",
        drops_on(&upstream_port),
        drops_on(&phone_ports),
        if args.watch_ports.is_empty() {
            String::new()
        } else {
            format!(
                " proxy {}",
                drops_on(&args.watch_ports).saturating_sub(proxy_drops_before)
            )
        }
    );
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
    responder.join().unwrap();

    let mut latencies: Vec<u64> = latency_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .filter(|&l| l > 0)
        .collect();
    latencies.sort_unstable();
    let received = latencies.len() as u64;
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 / 1000.0
    };
    // How busy each core was while sending, whoever kept it busy.
    let cores: Vec<String> = core_times()
        .iter()
        .zip(&cores_before)
        .map(|(after, before)| {
            let total = after.1.saturating_sub(before.1).max(1);
            format!(
                "{:.0}%",
                after.0.saturating_sub(before.0) as f64 * 100.0 / total as f64
            )
        })
        .collect();
    let watched = if args.watch.is_empty() {
        String::new()
    } else {
        format!(" proxy_cpu {proxy_cpu:.0}%")
    };
    println!(
        "rate {} sent {} received {} loss {:.3}% p50 {:.0} us p99 {:.0} us mean {:.0} us send_s {:.2} gen_cpu {:.0}%{} cores_busy {}{}",
        args.rate,
        total,
        received,
        (total - received) as f64 * 100.0 / total as f64,
        percentile(0.50),
        percentile(0.99),
        mean,
        send_seconds,
        gen_cpu,
        watched,
        cores.join("/"),
        drops
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_the_routing_headers_of_the_request() {
        let source: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut out = Vec::new();
        assert!(answer(&request(source, 7), b"", &mut out));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;"));
        assert!(text.contains("\r\nCall-ID: ld7@load.example.com\r\n"));
        assert!(!text.contains("User-Agent"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        assert_eq!(sequence(&out), Some(7));
        assert!(!answer(&out, b"", &mut Vec::new()));
    }

    #[test]
    fn an_invite_is_answered_with_its_record_route() {
        let source: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut forwarded = String::from_utf8(invite(source, 9)).unwrap();
        forwarded = forwarded.replacen(
            "Max-Forwards",
            "Record-Route: <sip:192.0.2.1;lr>\r\nMax-Forwards",
            1,
        );
        let mut out = Vec::new();
        assert!(answer(forwarded.as_bytes(), b"", &mut out));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("\r\nRecord-Route: <sip:192.0.2.1;lr>\r\n"));
        assert!(text.contains("\r\nCSeq: 1 INVITE\r\n"));
        assert!(!text.contains("application/sdp"));
        assert_eq!(sequence(&out), Some(9));
        let sent = invite(source, 9);
        let message = sipwall_sip::Message::parse(
            &sent,
            sipwall_sip::Framing::Datagram,
            &sipwall_sip::Limits::default(),
        );
        assert!(message.is_ok(), "the INVITE parses: {message:?}");
    }
}
