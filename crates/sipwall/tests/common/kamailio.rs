//! Debian's Kamailio as a registrar (configuration in `tests/peers/kamailio.cfg`,
//! users in db_text), started and stopped by the test that needs it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::leak::LeakDetector;
use super::{UPSTREAM_IP, free_port};

/// Kamailio's host name (an alias of its own): something of the inside.
pub const HOST_NAME: &str = "pbx.inside.example";
/// The header of the inside that Kamailio adds to every request it forwards and every
/// reply it sends or forwards. The edge's topology hiding is to remove it.
pub const MARKER_HEADER: &str = "X-Internal-Node";
/// The value of [`MARKER_HEADER`].
pub const MARKER_VALUE: &str = "pbx-inside-7";
/// The product's name, which its Server and User-Agent headers give away.
pub const PRODUCT: &str = "kamailio";

/// A child that runs in its own process group, stopped with SIGTERM to the whole group
/// when dropped (Kamailio forks workers and renames its processes: SIGKILL to the main
/// process would orphan them, and a kill by name could hit anything).
pub struct GroupGuard(pub Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails the test unless `tool` is installed, naming the Debian package that has it.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("run sh");
    assert!(
        found.status.success(),
        "{tool} is not installed: install Debian's {package} (scripts/test does)"
    );
}

/// `tests/peers`: configurations, users and scenarios of the peers.
pub fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Copies the files of `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
    }
}

/// A running Kamailio on [`UPSTREAM_IP`]:`port` (UDP).
pub struct Kamailio {
    /// Its port.
    pub port: u16,
    /// Its ctl socket, for [`kamcmd`].
    pub ctl: String,
    /// Its log (stderr).
    pub log: PathBuf,
    _process: GroupGuard,
}

impl Kamailio {
    /// Starts Kamailio with the db_text tables of `work/dbtext` (the caller puts them
    /// there: Kamailio rewrites them at exit) and the `-A` defines of `defines`, and
    /// waits until its ctl socket answers. It stops itself after `lifetime` at the
    /// latest.
    pub fn start(work: &Path, defines: &[&str], lifetime: Duration) -> Kamailio {
        require("kamailio", "kamailio");
        require("kamcmd", "kamailio");
        std::fs::create_dir_all(work.join("run")).expect("run dir");
        let ctl = format!("unix:{}", work.join("kamailio.ctl").display());
        let port = free_port();
        let log = work.join("kamailio.log");
        let mut command = Command::new("timeout");
        command
            .arg(lifetime.as_secs().max(1).to_string())
            .arg("kamailio")
            .arg("-f")
            .arg(peers().join("kamailio.cfg"))
            .args(["-DD", "-E", "-Y"])
            .arg(work.join("run"))
            .args(["-A", &format!("LISTEN=udp:{UPSTREAM_IP}:{port}")])
            .args(["-A", &format!("HOST_NAME=\"{HOST_NAME}\"")])
            .args(["-A", &format!("MARKER=\"{MARKER_HEADER}: {MARKER_VALUE}\"")])
            .args([
                "-A",
                &format!("DBURL=\"text://{}\"", work.join("dbtext").display()),
            ])
            .args(["-A", &format!("CTLSOCK=\"{ctl}\"")]);
        for define in defines {
            command.args(["-A", define]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .process_group(0)
            .spawn()
            .expect("start kamailio");
        let process = GroupGuard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !kamcmd(&ctl, &["core.version"]).0.success() {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start: see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Kamailio {
            port,
            ctl,
            log,
            _process: process,
        }
    }

    /// Tells `leaks` what of Kamailio must not reach the public side, besides its address
    /// and port: its host name, its marker header (name and value) and its product name.
    pub fn forbid_in(leaks: &LeakDetector) {
        leaks.forbid(HOST_NAME, "the upstream's host name");
        leaks.forbid(MARKER_HEADER, "the name of the inside's marker header");
        leaks.forbid(MARKER_VALUE, "the inside's marker");
        leaks.forbid(PRODUCT, "the upstream's product name");
    }

    /// Kamailio's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs kamcmd on `ctl`; its status and standard output.
pub fn kamcmd(ctl: &str, args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new("timeout")
        .args(["5", "kamcmd", "-s", ctl])
        .args(args)
        .output()
        .expect("run kamcmd");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
