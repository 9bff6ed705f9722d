//! Network namespaces for the tests that touch the kernel (run as root): created by the
//! test, removed when dropped, even when an assertion fails.

use std::process::{Command, Output};

/// A network namespace with its loopback up.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `sw-<tag>-<pid>` (removing a leftover of the same name first).
    pub fn new(tag: &str) -> Netns {
        let name = format!("sw-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("the ip command (Debian's iproute2) is needed");
        assert!(status.success(), "ip netns add {name}");
        let netns = Netns { name };
        netns.run(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// Runs a command inside; fails the test if it fails.
    pub fn run(&self, command: &[&str]) -> String {
        let output = self.output(command);
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command inside and returns what it did.
    pub fn output(&self, command: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(command)
            .output()
            .expect("ip netns exec")
    }

    /// A command that will run inside.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `work` on a thread that has entered the namespace: its sockets live there.
    pub fn enter<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(work).join().expect("namespace thread")
    }

    /// Starts `work` on a thread that has entered the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("namespace file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            work()
        })
    }

    /// Connects this namespace to `other` with a veth pair: `here` and `there` are the
    /// IPv4 addresses (a /24) of each end.
    pub fn link(&self, other: &Netns, here: &str, there: &str) {
        // Interface names are per namespace: fixed ones do not collide.
        let (a, b) = ("swveth-a", "swveth-b");
        self.run(&[
            "ip",
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            &other.name,
        ]);
        self.run(&["ip", "addr", "add", &format!("{here}/24"), "dev", a]);
        self.run(&["ip", "link", "set", a, "up"]);
        other.run(&["ip", "addr", "add", &format!("{there}/24"), "dev", b]);
        other.run(&["ip", "link", "set", b, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
