//! End-to-end: phones register through sipwall with Debian's Kamailio as the registrar
//! (digest authentication, users in db_text), then call each other both ways through
//! Kamailio and sipwall.
//!
//! Peers: `kamailio` (configuration in `tests/peers/kamailio.cfg`), and sipp phones
//! (`tests/peers/sipp/`): `phone.xml` registers (401, then 200) and answers one call
//! with `uas_answer.xml`; `uac_call_auth.xml` places a call (407, then 200, ACK, BYE,
//! following the Record-Route set). One phone is behind NAT (its Via and Contact name a
//! port nothing listens on), the other registers and answers over TCP. The test checks that every sipp run succeeds and that
//! Kamailio's location table holds only the edge's address, never a phone's; the leak
//! detector of `common` checks that nothing of Kamailio (address, port, host name, marker
//! header, product name) reached the phones.
//!
//! Missing tools fail the test; `scripts/test` installs `kamailio` and `sip-tester`.

mod common;

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::kamailio::{Kamailio, copy_dir, kamcmd, peers, require};
use common::{Guard, INNER_IP, Sipwall, config, free_port, start_sipwall};

struct World {
    work: PathBuf,
    ctl: String,
    edge: u16,
    inner: u16,
    registrar: u16,
    // Dropped first: the edge stops and its leak detector is checked while Kamailio is
    // still there.
    _sipwall: Sipwall,
    _kamailio: Kamailio,
}

impl World {
    fn start(name: &str) -> World {
        require("sipp", "sip-tester");
        let work = std::env::temp_dir().join(format!("sipwall-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&peers().join("dbtext"), &work.join("dbtext"));
        let kamailio = Kamailio::start(&work, &[], Duration::from_secs(120));
        let ctl = kamailio.ctl.clone();
        let registrar = kamailio.port;

        let edge = free_port();
        let inner = free_port();
        let text = config(edge, inner, registrar, "[runtime]\nworkers = 2\n");
        let sipwall = start_sipwall(&work, &text, edge);
        Kamailio::forbid_in(&sipwall.leaks);
        World {
            work,
            ctl,
            edge,
            inner,
            registrar,
            _sipwall: sipwall,
            _kamailio: kamailio,
        }
    }

    /// A sipp command toward the edge, logging under the work directory as `name`.
    fn sipp(&self, name: &str, scenario: &str, port: u16, args: &[&str]) -> Command {
        let edge = format!("{}:{}", common::PUBLIC_IP, self.edge);
        self.sipp_from(common::PUBLIC_IP, &edge, name, scenario, port, args)
    }

    /// A sipp command from `local_ip` toward `target`.
    fn sipp_from(
        &self,
        local_ip: &str,
        target: &str,
        name: &str,
        scenario: &str,
        port: u16,
        args: &[&str],
    ) -> Command {
        let mut command = Command::new("timeout");
        command
            .arg("60")
            .arg("sipp")
            .arg(target)
            .arg("-sf")
            .arg(peers().join("sipp").join(scenario))
            .args(["-i", local_ip, "-p", &port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
            .args(["-trace_err", "-error_file"])
            .arg(self.work.join(format!("{name}.err")))
            .args(["-trace_msg", "-message_file"])
            .arg(self.work.join(format!("{name}.msg")))
            .args(args)
            .current_dir(&self.work)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Starts a phone that registers `user` and answers one call, over sipp transport
    /// `transport` (`u1` UDP, `t1` TCP). Its Via and Contact name `contact_port`, which
    /// differs from its source port for a phone behind NAT.
    fn phone(
        &self,
        user: &str,
        password: &str,
        port: u16,
        contact_port: u16,
        transport: &str,
    ) -> Guard {
        let contact_port = contact_port.to_string();
        let mut command = self.sipp(
            user,
            "phone.xml",
            port,
            &[
                "-s",
                user,
                "-ap",
                password,
                "-key",
                "contact_port",
                &contact_port,
                "-t",
                transport,
            ],
        );
        command
            .arg("-oocsf")
            .arg(peers().join("sipp/uas_answer.xml"));
        let child = command.spawn().expect("start phone");
        let deadline = Instant::now() + Duration::from_secs(15);
        // kamcmd exits 0 even when the AoR is unknown: read the table itself.
        while !kamcmd(&self.ctl, &["ul.dump"])
            .1
            .contains(&format!("AoR: {user}"))
        {
            assert!(
                Instant::now() < deadline,
                "{user} did not register through the edge: see {}",
                self.work.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Guard(child)
    }

    /// Places a call from `caller` to `callee`; returns sipp's exit status.
    fn call(&self, caller: &str, password: &str, callee: &str) -> ExitStatus {
        let name = format!("{caller}-calls-{callee}");
        self.sipp(
            &name,
            "uac_call_auth.xml",
            free_port(),
            &[
                "-s", callee, "-key", "caller", caller, "-au", caller, "-ap", password,
            ],
        )
        .status()
        .expect("run caller")
    }
}

impl World {
    /// Places a call from inside: an application server next to Kamailio (on the
    /// upstream's address) calls `callee` through Kamailio, which sends it to the edge;
    /// the call, its Call-ID and its BYE are the inside's own. Returns sipp's status.
    fn inside_call(&self, caller: &str, password: &str, callee: &str) -> ExitStatus {
        let name = format!("inside-{caller}-calls-{callee}");
        let registrar = format!("{}:{}", common::UPSTREAM_IP, self.registrar);
        self.sipp_from(
            common::UPSTREAM_IP,
            &registrar,
            &name,
            "uac_call_auth.xml",
            free_port(),
            &[
                "-s", callee, "-key", "caller", caller, "-au", caller, "-ap", password,
            ],
        )
        .status()
        .expect("run the inside caller")
    }
}

/// Waits for a phone's sipp to end; true if it answered its call and exited 0.
fn finished(mut phone: Guard) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = phone.0.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn phones_register_through_the_edge_and_call_each_other_both_ways() {
    let world = World::start("kamailio");
    let alice_port = free_port();
    let bob_port = free_port();
    // Bob is behind NAT: his Via and Contact name a port where nothing listens, his
    // messages come from another. He must still receive alice's call.
    let bob_private_port = free_port();
    let bob = world.phone("bob", "bob-secret", bob_port, bob_private_port, "u1");
    // Alice's phone uses TCP: the registrar's INVITE reaches her down her connection.
    let alice = world.phone("alice", "alice-secret", alice_port, alice_port, "t1");

    // Kamailio only knows the edge: every binding points at sipwall's inner address.
    let (_, dump) = kamcmd(&world.ctl, &["ul.dump"]);
    let contacts: Vec<&str> = dump
        .lines()
        .filter(|line| line.trim_start().starts_with("Address:"))
        .collect();
    assert_eq!(contacts.len(), 2, "{dump}");
    for contact in &contacts {
        assert!(
            contact.contains(&format!("{INNER_IP}:{}", world.inner)),
            "{contact}"
        );
        assert!(!contact.contains(&format!(":{alice_port}")), "{contact}");
        assert!(!contact.contains(&format!(":{bob_port}")), "{contact}");
        assert!(
            !contact.contains(&format!(":{bob_private_port}")),
            "{contact}"
        );
    }

    assert!(
        world.call("alice", "alice-secret", "bob").success(),
        "alice could not call bob: see {}",
        world.work.display()
    );
    assert!(
        world.call("bob", "bob-secret", "alice").success(),
        "bob could not call alice: see {}",
        world.work.display()
    );
    assert!(
        finished(bob),
        "bob's phone did not answer and hang up: see {}",
        world.work.display()
    );
    assert!(
        finished(alice),
        "alice's phone did not answer and hang up: see {}",
        world.work.display()
    );
}

#[test]
fn a_call_from_inside_reaches_a_phone_with_nothing_of_the_inside() {
    let world = World::start("kamailio-inside");
    // Bob is behind NAT and registered through the edge.
    let bob = world.phone("bob", "bob-secret", free_port(), free_port(), "u1");
    assert!(
        world.inside_call("carol", "carol-secret", "bob").success(),
        "the inside could not call bob: see {}",
        world.work.display()
    );
    assert!(
        finished(bob),
        "bob's phone did not answer and hang up: see {}",
        world.work.display()
    );
    // The leak detector, checked when the world ends, forbids the inside caller's
    // Call-ID (and its address, in it) as well as Kamailio's.
}
