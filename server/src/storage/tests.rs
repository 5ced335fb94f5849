use serde_json::json;

use super::codec::prefix;
use super::tables::{UserRecord, ACCOUNT_DATA, META, USERS};
use super::*;

fn open_temp() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    (dir, db)
}

fn user(created_ts: u64) -> UserRecord {
    UserRecord { password_hash: None, created_ts, deactivated: false, admin: false }
}

#[test]
fn new_database_gets_current_schema_version() {
    let (_dir, db) = open_temp();
    assert_eq!(migrations::stored_version(&db).unwrap(), Some(SCHEMA_VERSION));
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        db.put(&META, &"schema_version".to_owned(), &json!(SCHEMA_VERSION + 1)).unwrap();
    }
    let error = Db::open(dir.path()).err().expect("a newer schema must be refused");
    assert!(matches!(error, StorageError::TooNew { .. }), "{error}");
}

#[test]
fn records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        db.put(&USERS, &"@alice:localhost".to_owned(), &user(7)).unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let stored = db.get(&USERS, &"@alice:localhost".to_owned()).unwrap().unwrap();
    assert_eq!(stored.created_ts, 7);
}

#[test]
fn second_open_reports_lock() {
    let (dir, _db) = open_temp();
    let error = Db::open(dir.path()).err().expect("a second open must fail");
    assert!(matches!(error, StorageError::Locked(_)), "{error}");
}

#[test]
fn prefix_scan_stays_within_one_user() {
    let (_dir, db) = open_temp();
    let content = serde_json::value::to_raw_value(&json!({"a": 1})).unwrap();
    for (user, kind) in [("@a:x", "t1"), ("@a:x", "t2"), ("@ab:x", "t1"), ("@b:x", "t1")] {
        db.put(&ACCOUNT_DATA, &(user.to_owned(), String::new(), kind.to_owned()), &content)
            .unwrap();
    }

    let records = db.scan_prefix(&ACCOUNT_DATA, &prefix(&["@a:x"])).unwrap();
    let types: Vec<_> = records.iter().map(|((_, _, kind), _)| kind.as_str()).collect();
    assert_eq!(types, ["t1", "t2"]);
}

#[test]
fn batch_is_atomic_and_deletes_prefix() {
    let (_dir, db) = open_temp();
    let mut batch = db.batch();
    batch.put(&USERS, &"@a:x".to_owned(), &user(1));
    batch.put(&USERS, &"@b:x".to_owned(), &user(2));
    db.commit(batch).unwrap();
    assert_eq!(db.scan_all(&USERS).unwrap().len(), 2);

    let mut batch = db.batch();
    batch.delete_prefix(&USERS, &prefix(&["@a:x"])).unwrap();
    db.commit(batch).unwrap();
    let left: Vec<_> = db.scan_all(&USERS).unwrap().into_iter().map(|(key, _)| key).collect();
    assert_eq!(left, ["@b:x"]);
}

#[test]
fn corrupt_record_is_reported_not_panicked() {
    let (_dir, db) = open_temp();
    let cf = db.rocks.cf_handle(USERS.name()).unwrap();
    db.rocks.put_cf(cf, "@a:x".to_owned().encode_key(), b"not json").unwrap();
    let error = db.get(&USERS, &"@a:x".to_owned()).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { table: "users", .. }), "{error}");
}

#[test]
fn composite_keys_round_trip() {
    let key = ("@a:x".to_owned(), "!r:x".to_owned(), "m.tag".to_owned());
    assert_eq!(<(String, String, String)>::decode_key(&key.encode_key()).unwrap(), key);
    assert_eq!(u64::decode_key(&42u64.encode_key()).unwrap(), 42);
    assert!(<(String, String)>::decode_key(b"only-one\xff").is_err());
}

#[test]
fn position_keys_round_trip_with_ff_bytes() {
    let key = ("@a:x".to_owned(), "DEVICE".to_owned(), 0xFF00_00FF_u64);
    assert_eq!(<(String, String, u64)>::decode_key(&key.encode_key()).unwrap(), key);
    let four = ("@a:x".to_owned(), "1".to_owned(), "!r:x".to_owned(), "session".to_owned());
    assert_eq!(<(String, String, String, String)>::decode_key(&four.encode_key()).unwrap(), four);
    assert!(<(String, String, u64)>::decode_key(b"short").is_err());
}

#[test]
fn scan_between_stops_before_end() {
    let (_dir, db) = open_temp();
    for position in [1u64, 2, 3, 255, 256] {
        db.put(&tables::DEVICE_LIST_CHANGES, &position, &format!("@u{position}:x")).unwrap();
    }
    let found: Vec<u64> = db
        .scan_between(&tables::DEVICE_LIST_CHANGES, &2u64.encode_key(), &256u64.encode_key())
        .unwrap()
        .into_iter()
        .map(|(position, _)| position)
        .collect();
    assert_eq!(found, [2, 3, 255]);
}
