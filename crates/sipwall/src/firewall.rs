//! `sipwall firewall plan|apply|confirm|status|audit`: the host firewall from the
//! command line. The policy, its compiler and the apply/rollback protocol live in
//! `sipwall-fw`; this module reads the configuration, prints, and starts the rollback
//! watcher as a detached copy of this binary.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use sipwall_fw::apply::{self, StateDir, WatchOrder};
use sipwall_fw::nft::{Nft, TableStatus};
use sipwall_fw::{audit, compile, sets};

use crate::config::Config;

#[derive(Subcommand)]
pub enum FirewallAction {
    /// Print the nft script `apply` would load (no kernel access).
    Plan,
    /// Load the firewall in one nft transaction, rolled back unless confirmed in time.
    ///
    /// `--confirm SECONDS` saves the current table inet sipwall (or its absence), loads
    /// the new one and starts a watcher that restores the saved one after SECONDS unless
    /// `sipwall firewall confirm` comes first. Without it, `--no-rollback` is required.
    Apply {
        /// Seconds until the rollback.
        #[arg(
            long,
            value_name = "SECONDS",
            value_parser = clap::value_parser!(u64).range(1..=86_400),
            required_unless_present = "no_rollback",
            conflicts_with = "no_rollback"
        )]
        confirm: Option<u64>,
        /// Load with no rollback (only from a console, or where a lock-out is harmless).
        #[arg(long)]
        no_rollback: bool,
    },
    /// Keep the ruleset loaded by the last `apply`: cancel its rollback.
    Confirm,
    /// Per-rule packet and byte counters, the ban sets' sizes, a pending rollback.
    Status,
    /// Compare the kernel's network sysctl settings with the hardening recommended for
    /// a SIP server. Exit status 1 if any differs.
    Audit {
        /// Where the sysctl tree is (tests point it elsewhere).
        #[arg(long, hide = true, default_value = "/proc/sys")]
        proc_sys: PathBuf,
    },
    /// The rollback watcher started by `apply` (not for direct use).
    #[command(hide = true)]
    Watch {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        token: String,
        #[arg(long)]
        seconds: u64,
    },
}

/// Runs one `sipwall firewall` action.
pub fn run(config_path: &Path, nft: &Path, action: FirewallAction) -> anyhow::Result<ExitCode> {
    let nft = Nft::new(nft);
    match action {
        FirewallAction::Plan => {
            let config = load(config_path)?;
            print!("{}", compile::load_script(&config.firewall));
            Ok(ExitCode::SUCCESS)
        }
        FirewallAction::Apply {
            confirm,
            no_rollback: _,
        } => apply(config_path, &nft, confirm),
        FirewallAction::Confirm => {
            let config = load(config_path)?;
            apply::confirm(&config.firewall.state_dir)?;
            say!("confirmed: the rollback is cancelled, table inet sipwall stays as loaded");
            Ok(ExitCode::SUCCESS)
        }
        FirewallAction::Status => status(config_path, &nft),
        FirewallAction::Audit { proc_sys } => Ok(audit(&proc_sys)),
        FirewallAction::Watch {
            state_dir,
            token,
            seconds,
        } => {
            let order = WatchOrder {
                state_dir,
                token,
                seconds,
            };
            // Nobody reads this process's output: the outcome goes to rollback.log.
            match apply::watch(&order, &nft) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(_) => Ok(ExitCode::from(1)),
            }
        }
    }
}

/// Loads the configuration and prints the firewall's warnings.
fn load(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    for warning in config.firewall_warnings() {
        eprintln!("{}: warning: {warning}", path.display());
    }
    Ok(config)
}

fn apply(config_path: &Path, nft: &Nft, confirm: Option<u64>) -> anyhow::Result<ExitCode> {
    let config = load(config_path)?;
    let spawn = |order: &WatchOrder| -> std::io::Result<()> {
        let exe = std::env::current_exe()?;
        // Its own process group, no terminal: the SSH session that ran `apply` may die
        // (that is the lock-out the watcher exists for) without taking it along.
        Command::new(exe)
            .arg("firewall")
            .arg("watch")
            .arg("--nft")
            .arg(nft.program())
            .arg("--state-dir")
            .arg(&order.state_dir)
            .arg("--token")
            .arg(&order.token)
            .arg("--seconds")
            .arg(order.seconds.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            // Not waited for: it outlives this process and is reaped by init.
            .map(drop)
    };
    let applied = apply::apply(
        &config.firewall,
        nft,
        confirm.map(Duration::from_secs),
        spawn,
    )
    .context("the previous ruleset is unchanged")?;
    say!(
        "loaded table inet {} (and ensured table inet {})",
        compile::TABLE,
        sets::TABLE
    );
    if let Some(seconds) = confirm {
        let previous = if applied.first {
            "removes table inet sipwall (there was none)"
        } else {
            "restores the previous table inet sipwall"
        };
        let superseded = if applied.superseded {
            " (an earlier unconfirmed apply was replaced; the rollback goes back to the state before it)"
        } else {
            ""
        };
        say!(
            "in {seconds} s a rollback {previous}{superseded}, unless you run:\n  \
             sipwall firewall confirm --config {}",
            config_path.display()
        );
    } else {
        say!("no rollback: the table stays until the next apply");
    }
    Ok(ExitCode::SUCCESS)
}

fn status(config_path: &Path, nft: &Nft) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    match nft.table_status(compile::TABLE)? {
        Some(table) => {
            say!("table inet {} (hook input)", compile::TABLE);
            print_rules(&table);
        }
        None => say!(
            "table inet {}: not loaded (sipwall firewall apply)",
            compile::TABLE
        ),
    }
    match nft.table_status(sets::TABLE)? {
        Some(table) => {
            say!(
                "table inet {} (hook prerouting, priority raw: before the table above)",
                sets::TABLE
            );
            for set in &table.sets {
                say!("  set {}: {} element(s)", set.name, set.elements);
            }
            print_rules(&table);
        }
        None => say!("table inet {}: not loaded", sets::TABLE),
    }
    let state = StateDir::new(&config.firewall.state_dir);
    if let Some(pending) = state.pending()? {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        say!(
            "rollback armed: in {} s unless confirmed (sipwall firewall confirm)",
            pending.deadline.saturating_sub(now)
        );
    }
    if let Some(last) = state.last_rollback() {
        say!("last rollback: {last}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rules(table: &TableStatus) {
    say!("  {:>12} {:>14}  rule", "packets", "bytes");
    for rule in &table.rules {
        say!("  {:>12} {:>14}  {}", rule.packets, rule.bytes, rule.name);
    }
}

fn audit(proc_sys: &Path) -> ExitCode {
    let findings = audit::audit(proc_sys);
    let mut off = Vec::new();
    for finding in &findings {
        let current = finding.current.as_deref().unwrap_or("absent");
        let verdict = if finding.ok() { "ok " } else { "OFF" };
        say!(
            "{verdict} {:<45} current {:<7} recommended {:<3} {}",
            finding.setting.key,
            current,
            finding.setting.recommended,
            finding.setting.why
        );
        if !finding.ok() {
            off.push(finding);
        }
    }
    if off.is_empty() {
        say!("all {} settings as recommended", findings.len());
        return ExitCode::SUCCESS;
    }
    say!("\n{} setting(s) differ. Now:", off.len());
    for finding in &off {
        say!("  {}", finding.sysctl_command());
    }
    say!("Across reboots, in /etc/sysctl.d/90-sipwall.conf:");
    for finding in &off {
        say!("  {}", finding.sysctl_d_line());
    }
    ExitCode::from(1)
}
