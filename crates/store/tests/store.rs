//! The store's behaviour on a real file: round trips, atomic batches, reopening,
//! damaged and foreign files, and the time a large batch write takes.

use std::time::Instant;

use sipwall_policy::BanKind;
use sipwall_store::{BanStore, SCHEMA_VERSION, StoreError, StoredBan};

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn stored(source: &str, since: u64, until: u64) -> StoredBan {
    StoredBan {
        source: source.to_owned(),
        rule: "scanner".to_owned(),
        reason: "User-Agent friendly-scanner".to_owned(),
        since,
        until,
        offences: 1,
        kind: BanKind::Drop,
    }
}

#[test]
fn bans_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BanStore::open(dir.path().join("bans.db")).unwrap();
    let mut honeypot = stored("2001:db8::/64", NOW, NOW + HOUR);
    honeypot.kind = BanKind::Honeypot;
    honeypot.offences = 4;
    let drop = stored("192.0.2.7", NOW, NOW + 2 * HOUR);
    store.record(&[drop.clone(), honeypot.clone()]).unwrap();
    assert_eq!(store.count().unwrap(), 2);
    assert_eq!(
        store.active(NOW).unwrap(),
        vec![drop.clone(), honeypot.clone()]
    );
    assert_eq!(store.get("192.0.2.7").unwrap(), Some(drop));
    assert_eq!(store.get("198.51.100.1").unwrap(), None);
}

#[test]
fn a_later_ban_replaces_the_record_of_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BanStore::open(dir.path().join("bans.db")).unwrap();
    store
        .record(&[stored("192.0.2.7", NOW, NOW + HOUR)])
        .unwrap();
    let mut again = stored("192.0.2.7", NOW + 2 * HOUR, NOW + 6 * HOUR);
    again.offences = 2;
    store.record(&[again.clone()]).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    assert_eq!(store.get("192.0.2.7").unwrap(), Some(again));
}

#[test]
fn a_failed_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BanStore::open(dir.path().join("bans.db")).unwrap();
    store
        .record(&[stored("192.0.2.1", NOW, NOW + HOUR)])
        .unwrap();
    // The third ban ends before it starts: the schema refuses it, after two good ones
    // (one of them replacing an existing record) were written in the transaction.
    let batch = [
        stored("192.0.2.1", NOW, NOW + 9 * HOUR),
        stored("192.0.2.2", NOW, NOW + HOUR),
        stored("192.0.2.3", NOW, NOW - 1),
        stored("192.0.2.4", NOW, NOW + HOUR),
    ];
    let error = store.record(&batch).unwrap_err();
    assert!(matches!(error, StoreError::Sqlite { .. }), "{error}");
    assert_eq!(store.count().unwrap(), 1);
    assert_eq!(store.get("192.0.2.1").unwrap().unwrap().until, NOW + HOUR);
    // The store is still usable after the rollback.
    store.record(&batch[..2]).unwrap();
    assert_eq!(store.count().unwrap(), 2);
}

#[test]
fn lift_ends_a_ban_and_expire_forgets_it_after_the_remembering_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BanStore::open(dir.path().join("bans.db"))
        .unwrap()
        .with_remember(24 * HOUR);
    store
        .record(&[
            stored("192.0.2.1", NOW, NOW + 10 * HOUR),
            stored("192.0.2.2", NOW, NOW + 10 * HOUR),
            stored("192.0.2.3", NOW - 3 * HOUR, NOW - 2 * HOUR),
        ])
        .unwrap();
    // 192.0.2.3 is over already: lifting it changes nothing; an unknown source neither.
    let changed = store
        .lift(&["192.0.2.1", "192.0.2.3", "203.0.113.9"], NOW + HOUR)
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(store.get("192.0.2.1").unwrap().unwrap().until, NOW + HOUR);
    assert_eq!(
        store.get("192.0.2.3").unwrap().unwrap().until,
        NOW - 2 * HOUR
    );
    let active: Vec<_> = store
        .active(NOW + 2 * HOUR)
        .unwrap()
        .into_iter()
        .map(|ban| ban.source)
        .collect();
    assert_eq!(active, ["192.0.2.2"]);
    // A lift before the ban started cannot make it end before its start.
    store.lift(&["192.0.2.2"], NOW - HOUR).unwrap();
    assert_eq!(store.get("192.0.2.2").unwrap().unwrap().until, NOW);

    // Lifted and expired bans are remembered for a day after their end.
    assert_eq!(store.expire(NOW + 12 * HOUR).unwrap(), 0);
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(store.expire(NOW + 22 * HOUR).unwrap(), 1); // 192.0.2.3 ended at NOW - 2 h
    assert_eq!(store.expire(NOW + 25 * HOUR).unwrap(), 2);
    assert_eq!(store.count().unwrap(), 0);
}

#[test]
fn a_ban_for_ever_is_stored_and_never_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BanStore::open(dir.path().join("bans.db")).unwrap();
    store.record(&[stored("192.0.2.1", NOW, u64::MAX)]).unwrap();
    assert_eq!(store.expire(NOW + 100 * 365 * 24 * HOUR).unwrap(), 0);
    let active = store.active(NOW).unwrap();
    assert_eq!(active[0].until, i64::MAX as u64);
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bans.db");
    let bans: Vec<_> = (0..50)
        .map(|i| stored(&format!("198.51.100.{i}"), NOW, NOW + HOUR + i))
        .collect();
    {
        let mut store = BanStore::open(&path).unwrap();
        store.record(&bans[..25]).unwrap();
        store.record(&bans[25..]).unwrap();
        store.lift(&["198.51.100.0"], NOW + 1).unwrap();
    }
    let store = BanStore::open(&path).unwrap();
    store.check_integrity().unwrap();
    assert_eq!(store.count().unwrap(), 50);
    let mut expected = bans[1..].to_vec();
    expected.sort_by(|a, b| a.source.cmp(&b.source));
    assert_eq!(store.active(NOW + 1).unwrap(), expected);
    assert_eq!(store.get("198.51.100.0").unwrap().unwrap().until, NOW + 1);
}

#[test]
fn a_garbage_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bans.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let error = BanStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("bans.db"), "{error}");
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE customers (name TEXT)")
        .unwrap();
    drop(conn);
    let error = BanStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");
    assert!(error.to_string().contains("other.db"), "{error}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bans.db");
    drop(BanStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE schema_version SET version = ?1",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    let error = BanStore::open(&path).unwrap_err();
    assert!(
        matches!(error, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{error:?}"
    );
}

#[test]
fn a_record_edited_by_hand_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bans.db");
    let mut store = BanStore::open(&path).unwrap();
    store
        .record(&[stored("192.0.2.1", NOW, NOW + HOUR)])
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    // Bypasses the CHECK the way a hand edit with checks off would.
    conn.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE bans SET kind = 'tarpit';",
    )
    .unwrap();
    drop(conn);
    let error = store.active(NOW).unwrap_err();
    assert!(matches!(error, StoreError::BadRecord { .. }), "{error:?}");
}

#[test]
fn ten_thousand_bans_in_batches_of_500() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BanStore::open(dir.path().join("bans.db")).unwrap();
    let bans: Vec<_> = (0..10_000u64)
        .map(|i| {
            let source = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            stored(&source, NOW, NOW + HOUR)
        })
        .collect();
    let start = Instant::now();
    for batch in bans.chunks(500) {
        store.record(batch).unwrap();
    }
    let took = start.elapsed();
    eprintln!(
        "10,000 bans in 20 batches of 500: {took:?} ({:?} per batch)",
        took / 20
    );
    assert_eq!(store.count().unwrap(), 10_000);
    assert_eq!(store.active(NOW).unwrap().len(), 10_000);
}
