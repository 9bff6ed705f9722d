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
//! built before the clock starts and sent with `sendmmsg` (every request that is due, up
//! to [`BATCH`] per system call), and one thread does everything in rounds: it sends
//! what is due, reads and answers what waits at the upstream socket (`recvmmsg`,
//! `sendmmsg`), and reads what waits at each phone socket. While datagrams come it does
//! not sleep between rounds; only after [`QUIET`] without one does it wait on its
//! sockets (`ppoll`) until a datagram or the next request is due. The reason is the
//! proxy's core: on loopback the sender of a datagram also delivers it, and a socket
//! with a sleeping reader makes that sender wake the reader on another core (an
//! inter-processor interrupt, dear in a virtual machine). A generator that slept on its
//! sockets put its own wake-ups on the proxy's core, where a network card would not:
//! 6 to 10 points of that core in profiles at 60,000–70,000 requests/s. So from a few
//! thousand requests per second up `gen_cpu` reads near 100% whatever the load; whether the
//! generator kept up shows in `send_s` and in the drops at its own sockets. Requests go
//! out as they fall due rather than in bursts, as the traffic of many phones would.
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
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use nix::sys::time::TimeSpec;
use sipwall_bench::load::{answer, invite, request};

/// Datagrams per `sendmmsg` or `recvmmsg` call.
const BATCH: usize = 64;

/// After this long without a datagram, the generator waits on its sockets instead of
/// reading them in a loop.
const QUIET: Duration = Duration::from_micros(100);

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

/// Room for one batch of datagrams read with one `recvmmsg`, kept between reads so that
/// a read allocates nothing.
struct Batch {
    buffers: Box<[[u8; DATAGRAM]; BATCH]>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Length and source of each datagram of the last read.
    read: Vec<(usize, Option<SockaddrStorage>)>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buffers: Box::new([[0u8; DATAGRAM]; BATCH]),
            headers: MultiHeaders::preallocate(BATCH, None),
            read: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what waits at `socket`, up to a batch, without blocking; returns how many
    /// datagrams were read.
    fn read(&mut self, socket: &UdpSocket) -> usize {
        self.read.clear();
        let mut slices = self
            .buffers
            .each_mut()
            .map(|buffer| [IoSliceMut::new(buffer)]);
        if let Ok(results) = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            self.read
                .extend(results.map(|result| (result.bytes, result.address)));
        }
        self.read.len()
    }

    /// The datagrams of the last read, with their sources.
    fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SockaddrStorage>)> {
        self.buffers
            .iter()
            .zip(&self.read)
            .map(|(buffer, &(len, source))| (&buffer[..len], source))
    }
}

/// The upstream: answers each request with a 200 OK, a batch at a time.
struct Upstream {
    socket: UdpSocket,
    /// Lines a PBX adds to its answers (`--answers pbx`), or nothing.
    extra: Vec<u8>,
    batch: Batch,
    sources: Vec<Option<SockaddrStorage>>,
    answers: Vec<Vec<u8>>,
    send: MultiHeaders<SockaddrStorage>,
}

impl Upstream {
    fn new(socket: UdpSocket, extra: Vec<u8>) -> Upstream {
        Upstream {
            socket,
            extra,
            batch: Batch::new(),
            sources: Vec::with_capacity(BATCH),
            answers: (0..BATCH).map(|_| Vec::with_capacity(1024)).collect(),
            send: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Reads one batch of what waits, without blocking, and answers it; returns how many
    /// datagrams were read.
    fn answer_waiting(&mut self) -> usize {
        let read = self.batch.read(&self.socket);
        self.sources.clear();
        for (request, from) in self.batch.datagrams() {
            let count = self.sources.len();
            if from.is_some() && answer(request, &self.extra, &mut self.answers[count]) {
                self.sources.push(from);
            }
        }
        let count = self.sources.len();
        let mut out = [[IoSlice::new(&[])]; BATCH];
        for (slice, answer) in out.iter_mut().zip(&self.answers[..count]) {
            *slice = [IoSlice::new(answer)];
        }
        let mut sent = 0;
        // Bounded: each round sends at least one datagram or gives up on the batch.
        while sent < count {
            let no_control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            match sendmmsg(
                self.socket.as_raw_fd(),
                &mut self.send,
                &out[sent..count],
                &self.sources[sent..],
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
        read
    }
}

/// The sequence number in the phone's branch of a response.
fn sequence(response: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(response, b"branch=z9hG4bKld")? + 16;
    let digits = response.get(at..at + 12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The phones' side of the responses: matches each to its request by sequence number.
struct Phones {
    sockets: Vec<UdpSocket>,
    batch: Batch,
    /// Send times in ns since the start, indexed by sequence number.
    sent_at: Vec<u64>,
    /// Latency of each answered request in ns (at least 1); 0 means not answered.
    latency_ns: Vec<u64>,
}

impl Phones {
    /// Reads one batch of what waits on every phone socket, without blocking, and
    /// records the latency of each response; returns how many datagrams were read.
    fn read_waiting(&mut self, start: Instant) -> usize {
        let mut read = 0;
        for socket in &self.sockets {
            read += self.batch.read(socket);
            let now = start.elapsed().as_nanos() as u64;
            for (response, _) in self.batch.datagrams() {
                let Some(seq) = sequence(response) else {
                    continue;
                };
                if let Some(&sent) = self.sent_at.get(seq as usize) {
                    self.latency_ns[seq as usize] = now.saturating_sub(sent).max(1);
                }
            }
        }
        read
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

/// What is measured when the last request has gone.
struct Sending {
    /// How long sending took.
    seconds: f64,
    /// The generator's CPU over that time, in % of one core.
    gen_cpu: f64,
    /// The watched processes' CPU over that time, in % of one core.
    proxy_cpu: f64,
    /// Busy and total time of each core at that moment.
    cores: Vec<(u64, u64)>,
}

fn main() {
    let args = args();
    let extra = if args.pbx_answers {
        sipwall_bench::load::pbx_lines(args.upstream)
    } else {
        Vec::new()
    };
    let mut upstream = Upstream::new(bind(args.upstream), extra);
    let total = args.rate * args.seconds;
    let start = Instant::now();
    let mut phones = Phones {
        sockets: (0..args.sources)
            .map(|_| bind(SocketAddr::new(args.from, 0)))
            .collect(),
        batch: Batch::new(),
        sent_at: vec![0; total as usize],
        latency_ns: vec![0; total as usize],
    };
    // Pre-build every request so that sending costs only the system calls. Requests
    // go out in runs of BATCH consecutive sequence numbers per source socket.
    let addresses: Vec<SocketAddr> = phones
        .sockets
        .iter()
        .map(|s| s.local_addr().unwrap())
        .collect();
    let socket_of = |seq: u64| (seq / BATCH as u64) as usize % addresses.len();
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
    let mut sending_done: Option<Sending> = None;
    let mut seq = 0u64;
    let mut last_read = Instant::now();
    // One thread sends, answers as the upstream and reads the phones' responses, in
    // rounds, without sleeping while datagrams come (see the module's documentation).
    // Bounded: sending ends after `seconds`, and late answers count for one second more.
    loop {
        let mut busy = false;
        let elapsed = begin.elapsed().as_nanos() as u64;
        let due = ((elapsed as u128 * args.rate as u128 / 1_000_000_000) as u64 + 1).min(total);
        while seq < due {
            busy = true;
            // Up to the end of this socket's run of BATCH, and no further than what is due.
            let run_end = (seq / BATCH as u64 + 1) * BATCH as u64;
            let end = due.min(run_end);
            let now = start.elapsed().as_nanos() as u64;
            for index in seq..end {
                phones.sent_at[index as usize] = now;
            }
            let count = (end - seq) as usize;
            let no_control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            let sent = sendmmsg(
                phones.sockets[socket_of(seq)].as_raw_fd(),
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
        if seq == total && sending_done.is_none() {
            let send_seconds = begin.elapsed().as_secs_f64();
            let gen_cpu = (cpu_time() - cpu_before).as_secs_f64() / send_seconds * 100.0;
            let proxy_cpu = cpu_of(&args.watch)
                .saturating_sub(watched_before)
                .as_secs_f64()
                / send_seconds
                * 100.0;
            sending_done = Some(Sending {
                seconds: send_seconds,
                gen_cpu,
                proxy_cpu,
                cores: core_times(),
            });
        }
        if sending_done
            .as_ref()
            .is_some_and(|done| begin.elapsed().as_secs_f64() > done.seconds + 1.0)
        {
            break;
        }
        let read = upstream.answer_waiting() + phones.read_waiting(start);
        if read > 0 {
            last_read = Instant::now();
        } else if !busy && last_read.elapsed() >= QUIET {
            // Quiet: wait for a datagram or until the next request is due.
            let next = Duration::from_nanos(seq * 1_000_000_000 / args.rate);
            let wait = next
                .saturating_sub(begin.elapsed())
                .min(Duration::from_millis(100));
            let mut fds: Vec<PollFd<'_>> = std::iter::once(&upstream.socket)
                .chain(&phones.sockets)
                .map(|socket| PollFd::new(socket.as_fd(), PollFlags::POLLIN))
                .collect();
            let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None);
        }
    }
    let Some(Sending {
        seconds: send_seconds,
        gen_cpu,
        proxy_cpu,
        cores: cores_after,
    }) = sending_done
    else {
        unreachable!("the loop ends only after sending");
    };
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
    let latency_ns = phones.latency_ns;

    let mut latencies: Vec<u64> = latency_ns.iter().copied().filter(|&l| l > 0).collect();
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
    let cores: Vec<String> = cores_after
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
