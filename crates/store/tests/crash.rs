//! A writer killed with SIGKILL at any moment loses no acknowledged ban and leaves a
//! sound file.
//!
//! The test executable runs itself as the writer: `writer_until_killed` does nothing
//! unless `SIPWALL_STORE_CRASH_DB` names a database, in which case it writes bans in a
//! loop and prints each source to stdout once `record` has returned (the moment a ban
//! would be acknowledged).
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sipwall_policy::BanKind;
use sipwall_store::{BanStore, StoredBan};

const DB_VAR: &str = "SIPWALL_STORE_CRASH_DB";
const NOW: u64 = 1_800_000_000_000;

fn source(i: u64) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

#[test]
fn writer_until_killed() {
    let Some(path) = std::env::var_os(DB_VAR) else {
        return;
    };
    let mut store = BanStore::open(path).unwrap();
    let mut stdout = std::io::stdout().lock();
    let started = Instant::now();
    let mut next = 0u64;
    // Bounded in time, so a parent that fails to kill it does not leave it running.
    while started.elapsed() < Duration::from_secs(60) {
        // Batches of varying size, so the kill lands at varied points of a transaction.
        let size = 1 + next % 37;
        let batch: Vec<_> = (next..next + size)
            .map(|i| StoredBan {
                source: source(i),
                rule: "flood".to_owned(),
                reason: format!("ban {i}"),
                since: NOW + i,
                until: NOW + i + 3_600_000,
                offences: 1,
                kind: BanKind::Drop,
            })
            .collect();
        store.record(&batch).unwrap();
        for ban in &batch {
            writeln!(stdout, "{}", ban.source).unwrap();
        }
        stdout.flush().unwrap();
        next += size;
    }
}

#[test]
fn a_killed_writer_loses_no_acknowledged_ban() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bans.db");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "writer_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_VAR, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acknowledged = Vec::new();
        // libtest prints its own lines ("running 1 test"); bans are the lines that
        // parse as addresses.
        while acknowledged.len() < 2_000 + round * 500 {
            let line = lines.next().expect("the writer stopped early").unwrap();
            if line.parse::<std::net::Ipv4Addr>().is_ok() {
                acknowledged.push(line);
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Whatever the writer printed before it died was acknowledged too.
        for line in lines {
            let line = line.unwrap();
            if line.parse::<std::net::Ipv4Addr>().is_ok() {
                acknowledged.push(line);
            }
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "the writer was not killed: {status}");

        let store = BanStore::open(&path).unwrap();
        store.check_integrity().unwrap();
        for source in &acknowledged {
            assert!(
                store.get(source).unwrap().is_some(),
                "round {round}: acknowledged ban of {source} lost"
            );
        }
        assert!(store.count().unwrap() >= acknowledged.len() as u64);
    }
}
