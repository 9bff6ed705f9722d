//! The sipwall command line.
//!
//! - `sipwall run --config FILE` runs the edge proxy until SIGINT or SIGTERM; SIGHUP
//!   reloads the configuration without dropping traffic.
//! - `sipwall check --config FILE` validates a configuration and names the file, line
//!   and key of the first error.
//! - `sipwall bans list|add|del --config FILE` shows and changes the bans of a running
//!   sipwall through its local admin endpoint.
//! - `sipwall firewall plan|apply|confirm|status|audit --config FILE` compiles the
//!   `[firewall]` section to the nftables table `inet sipwall`, loads it atomically with a
//!   rollback unless confirmed, reports its counters, and audits the sysctl hardening.
//! - `sipwall inspect` reads one SIP message and says what sipwall's parser and sanity
//!   checks make of it: the verdict an edge proxy would reach, the rule behind a
//!   rejection, and the status it would answer with.

/// Prints a line on standard output. A reader that went away (`sipwall … | head`) ends
/// the program quietly with status 141, as SIGPIPE would end a C program, rather than
/// with the panic of `println!`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            eprintln!("sipwall: writing to standard output: {error}");
            std::process::exit(1);
        }
    }};
}

mod admin;
mod config;
mod firewall;
mod keeper;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sipwall_sip::{Framing, Limits, Message, Sanity, StartLine};

#[derive(Parser)]
#[command(name = "sipwall", version, about = "SIP edge firewall")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge proxy.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit (non-zero on error).
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show or change the bans of a running sipwall (through its admin endpoint).
    Bans {
        /// The configuration file of the running sipwall (for the endpoint and token).
        #[arg(long, short, global = true, default_value = "sipwall.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: BansAction,
    },
    /// The host firewall (nftables table inet sipwall): plan, apply, confirm, status, audit.
    Firewall {
        /// The configuration file (its `[firewall]` section).
        #[arg(long, short, global = true, default_value = "sipwall.toml")]
        config: PathBuf,
        /// The nft binary.
        #[arg(long, global = true, default_value = "nft", hide = true)]
        nft: PathBuf,
        #[command(subcommand)]
        action: firewall::FirewallAction,
    },
    /// Parse one SIP message and print the verdict of the parser and sanity checks.
    ///
    /// Exit status: 0 if the message would be forwarded, 1 if it would be refused,
    /// 2 on a usage or input error.
    Inspect {
        /// File holding the message; standard input if absent.
        file: Option<PathBuf>,
        /// Treat the input as one message from a TCP/TLS stream (Content-Length
        /// required) rather than a UDP datagram.
        #[arg(long)]
        stream: bool,
    },
}

#[derive(Subcommand)]
enum BansAction {
    /// List the active bans.
    List,
    /// Ban a source: an IPv4 address, an IPv6 address or an IPv6 prefix.
    Add {
        /// The source.
        source: String,
        /// Seconds; the configured TTL if absent.
        #[arg(long)]
        ttl: Option<u64>,
        /// Why (shown in the list and the log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift the ban of a source.
    Del {
        /// The source.
        source: String,
    },
}

/// Runs `sipwall bans`.
fn bans(path: &std::path::Path, action: BansAction) -> anyhow::Result<ExitCode> {
    let loaded = config::Config::load(path)?;
    let Some(token) = loaded.admin.token.clone() else {
        anyhow::bail!(
            "{}: [admin] has no token: the admin endpoint is off",
            path.display()
        );
    };
    let address = loaded.admin.listen;
    let (status, body) = match &action {
        BansAction::List => admin::call(address, &token, "GET", "/v1/bans", None)?,
        BansAction::Add {
            source,
            ttl,
            reason,
        } => {
            let body = serde_json::to_string(&admin::NewBan {
                source: source.clone(),
                ttl_seconds: *ttl,
                reason: reason.clone(),
            })?;
            admin::call(address, &token, "POST", "/v1/bans", Some(&body))?
        }
        BansAction::Del { source } => admin::call(
            address,
            &token,
            "DELETE",
            &format!("/v1/bans/{source}"),
            None,
        )?,
    };
    if !(200..300).contains(&status) {
        eprintln!("sipwall: {status}: {}", body.trim());
        return Ok(ExitCode::from(1));
    }
    match action {
        BansAction::List => {
            let bans: Vec<admin::BanView> =
                serde_json::from_str(&body).context("reading the list of bans")?;
            say!(
                "{:<26} {:<22} {:>8} {:>8} {:>4}  reason",
                "source",
                "rule",
                "ttl_s",
                "hits",
                "nth"
            );
            for ban in &bans {
                say!(
                    "{:<26} {:<22} {:>8} {:>8} {:>4}  {}",
                    ban.source,
                    ban.rule,
                    ban.ttl_seconds,
                    ban.hits,
                    ban.offences,
                    ban.reason
                );
            }
            say!("{} active ban(s)", bans.len());
        }
        BansAction::Add { .. } => {
            let ban: admin::BanView = serde_json::from_str(&body).context("reading the ban")?;
            say!("banned {} for {} s", ban.source, ban.ttl_seconds);
        }
        BansAction::Del { .. } => print!("{body}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sipwall: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => run_proxy(&config),
        Command::Bans { config, action } => bans(&config, action),
        Command::Firewall {
            config,
            nft,
            action,
        } => firewall::run(&config, &nft, action),
        Command::Check { config } => match config::Config::load(&config) {
            Ok(loaded) => {
                for warning in loaded.firewall_warnings() {
                    say!("{}: warning: {warning}", config.display());
                }
                if loaded.uses_example_key() {
                    say!(
                        "{}: warning: keys.current is the example key",
                        config.display()
                    );
                }
                say!("{}: ok", config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("{error}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Inspect { file, stream } => {
            let bytes = match &file {
                Some(path) => {
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
                }
                None => {
                    let mut bytes = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut bytes)
                        .context("reading standard input")?;
                    bytes
                }
            };
            let framing = if stream {
                Framing::Stream
            } else {
                Framing::Datagram
            };
            Ok(inspect(&bytes, framing))
        }
    }
}

/// Runs the proxy until a signal stops it.
fn run_proxy(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: a log file must stay plain for
        // whatever reads it (fail2ban, grep).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let loaded = config::Config::load(path)?;
    if loaded.uses_example_key() {
        tracing::warn!("keys.current is the example key: replace it before facing a network");
    }
    if loaded.admin.token.as_deref() == Some("example-admin-token-change-me") {
        tracing::warn!("admin.token is the example token: replace it");
    }
    let net = loaded.net();
    let policy = {
        // Keys the pipeline's hashes and nonces; random per process, so that nobody can
        // aim collisions at the flood sketches.
        use std::hash::{BuildHasher, Hasher};
        let random = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        let mut seed = [0u8; 16];
        seed[..8].copy_from_slice(&random().to_le_bytes());
        seed[8..].copy_from_slice(&random().to_le_bytes());
        let mut engine = sipwall_policy::Engine::new(&loaded.policy, &loaded.protected(), seed);
        engine.set_own_addresses(&loaded.own_addresses());
        std::sync::Arc::new(std::sync::Mutex::new(engine))
    };
    // One worker needs no work-stealing scheduler: a single-threaded runtime saves the
    // cross-thread wake-ups on every datagram.
    let runtime = if net.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(net.workers)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    // The engine's clock starts here: bans restored from the store are timed against it.
    let clock = std::time::Instant::now();
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let keeper = keeper::Keeper::start(
        keeper::Settings {
            store: loaded.store_path(base),
            kernel: loaded.bans.kernel,
            batch: std::time::Duration::from_millis(loaded.bans.batch_ms),
            ipv6_prefix: loaded.policy.ipv6_prefix,
            nft: "nft".into(),
        },
        policy.clone(),
        clock,
    )?;
    let progress = keeper.progress.clone();
    runtime.block_on(async move {
        let server = sipwall_net::Server::start(net, policy.clone(), clock)
            .await
            .context("binding the listeners")?;
        for (transport, address) in &server.bound {
            tracing::info!(transport = transport.as_via(), %address, "listening");
        }
        tracing::info!(inner = %server.inner, upstream = %loaded.upstream.address, "forwarding");
        let _admin = match &loaded.admin.token {
            Some(token) => {
                let listener = tokio::net::TcpListener::bind(loaded.admin.listen)
                    .await
                    .with_context(|| format!("binding the admin endpoint {}", loaded.admin.listen))?;
                tracing::info!(address = %loaded.admin.listen, "admin endpoint");
                Some(AbortOnDrop(tokio::spawn(admin::serve(
                    listener,
                    policy.clone(),
                    token.clone(),
                    server.clock,
                    progress.clone(),
                ))))
            }
            None => {
                tracing::info!("no [admin] token: the admin endpoint is off");
                None
            }
        };
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = hangup.recv() => match config::Config::load(path) {
                    Ok(reloaded) => {
                        server.reload(reloaded.edge());
                        policy
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .reconfigure(&reloaded.policy, &reloaded.protected(), &reloaded.own_addresses());
                        tracing::info!("configuration reloaded");
                    }
                    Err(error) => tracing::error!(%error, "reload refused, keeping the running configuration"),
                },
            }
        }
        tracing::info!("shutting down");
        server.shutdown().await;
        anyhow::Ok(())
    })?;
    // A last batch: every ban decided before the stop reaches the disk.
    drop(keeper);
    Ok(ExitCode::SUCCESS)
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prints the verdict for one message and returns the exit status.
fn inspect(bytes: &[u8], framing: Framing) -> ExitCode {
    let msg = match Message::parse(bytes, framing, &Limits::default()) {
        Ok(msg) => msg,
        Err(error) => {
            say!("verdict: refuse (parser: {error})");
            say!("answer: 400 Bad Request if the message can be answered, else drop");
            return ExitCode::from(1);
        }
    };
    match msg.start_line() {
        StartLine::Request(line) => say!(
            "request: {} {}",
            String::from_utf8_lossy(line.method.as_bytes()),
            String::from_utf8_lossy(line.uri)
        ),
        StartLine::Response(line) => say!(
            "response: {} {}",
            line.code,
            String::from_utf8_lossy(line.reason)
        ),
    }
    say!(
        "headers: {}, body: {} bytes",
        msg.header_count(),
        msg.body().len()
    );
    if let Some(Ok(via)) = msg.top_via() {
        say!(
            "top via: {} {} branch={}",
            String::from_utf8_lossy(via.transport),
            String::from_utf8_lossy(via.host_raw),
            String::from_utf8_lossy(via.branch().unwrap_or(b"-"))
        );
    }
    if let Some(agent) = msg.user_agent() {
        say!("user-agent: {}", String::from_utf8_lossy(agent));
    }
    match Sanity::new().check(&msg) {
        Ok(_) => {
            say!("verdict: forward");
            ExitCode::SUCCESS
        }
        Err(error) => {
            say!("verdict: refuse (sanity {:?}: {error})", error.check());
            if msg.is_request() {
                say!("answer: {}", error.status_code());
            } else {
                say!("answer: drop (responses are never answered)");
            }
            ExitCode::from(1)
        }
    }
}
