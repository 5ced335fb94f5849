use ruma::{room_id, OwnedUserId};
use serde_json::{json, Value};

use super::*;
use crate::service::test_support::{assert_error, server};

fn algorithm() -> Raw<BackupAlgorithm> {
    raw(json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {
            "public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",
            "signatures": {},
        },
    }))
}

fn raw<T>(value: Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(&value).unwrap())
}

fn key_data(
    first_message_index: u64,
    forwarded_count: u64,
    is_verified: bool,
    marker: &str,
) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {
            "ephemeral": "YWJj",
            "ciphertext": marker,
            "mac": "YWJj",
        },
    })
}

fn session_keys(room: &str, session: &str, data: Value) -> RoomKeys {
    let room_id = OwnedRoomId::try_from(room).unwrap();
    RoomKeys::from([(room_id, BTreeMap::from([(session.to_owned(), raw(data))]))])
}

fn stored_marker(backup: &KeyBackup, user_id: &OwnedUserId, version: &str) -> String {
    let room_id = room_id!("!room:localhost");
    let keys = backup.get_keys(user_id, version, KeyScope::Session(room_id, "session")).unwrap();
    let data: Value = keys[room_id]["session"].deserialize_as().unwrap();
    data["session_data"]["ciphertext"].as_str().unwrap().to_owned()
}

#[test]
fn replacement_rule_orders_verified_then_index_then_forwards() {
    let data = |index: u64, forwarded: u64, verified: bool| -> KeyBackupData {
        serde_json::from_value(key_data(index, forwarded, verified, "YWJj")).unwrap()
    };
    let cases = [
        ("verified beats unverified", data(5, 5, true), data(0, 0, false), true),
        ("unverified loses to verified", data(0, 0, false), data(5, 5, true), false),
        ("lower index wins", data(1, 9, false), data(2, 0, false), true),
        ("higher index loses", data(3, 0, false), data(2, 9, false), false),
        ("fewer forwards win", data(2, 1, true), data(2, 2, true), true),
        ("more forwards lose", data(2, 3, true), data(2, 2, true), false),
        ("a full tie keeps the stored key", data(2, 2, true), data(2, 2, true), false),
    ];
    for (case, uploaded, stored, expected) in cases {
        assert_eq!(is_better(&uploaded, &stored), expected, "{case}");
    }
}

#[tokio::test]
async fn better_key_replaces_stored_one() {
    let server = server();
    let backup = &server.services.key_backup;
    let alice = server.user("alice", &[]).await;
    let version = backup.create_version(&alice, &algorithm()).unwrap();
    let put = |data: Value| {
        backup.put_keys(&alice, &version, &session_keys("!room:localhost", "session", data))
    };

    let first = put(key_data(10, 1, false, "Zmlyc3Q")).unwrap();
    assert_eq!(first.count, 1);

    let worse = put(key_data(12, 0, false, "d29yc2U")).unwrap();
    assert_eq!(
        stored_marker(backup, &alice, &version),
        "Zmlyc3Q",
        "a later index does not replace"
    );
    assert_eq!(worse.etag, first.etag, "an upload that changes nothing keeps the etag");

    let better = put(key_data(3, 4, false, "YmV0dGVy")).unwrap();
    assert_eq!(stored_marker(backup, &alice, &version), "YmV0dGVy");
    assert_ne!(better.etag, first.etag);
    assert_eq!(better.count, 1, "replacing a key does not change the count");

    put(key_data(20, 9, true, "dmVyaWZpZWQ")).unwrap();
    assert_eq!(
        stored_marker(backup, &alice, &version),
        "dmVyaWZpZWQ",
        "a verified key always wins"
    );
}

#[tokio::test]
async fn unknown_and_old_versions_are_rejected_and_change_nothing() {
    let server = server();
    let backup = &server.services.key_backup;
    let alice = server.user("alice", &[]).await;
    let keys = session_keys("!room:localhost", "session", key_data(0, 0, false, "YWJj"));

    assert_error(backup.latest_version(&alice), ErrorCode::NotFound);
    assert_error(backup.put_keys(&alice, "1", &keys), ErrorCode::NotFound);

    let old = backup.create_version(&alice, &algorithm()).unwrap();
    backup.put_keys(&alice, &old, &keys).unwrap();
    let current = backup.create_version(&alice, &algorithm()).unwrap();
    assert_ne!(old, current);

    assert_error(backup.put_keys(&alice, "99", &keys), ErrorCode::NotFound);
    assert_error(backup.get_keys(&alice, "99", KeyScope::All), ErrorCode::NotFound);
    assert_error(backup.delete_keys(&alice, "99", KeyScope::All), ErrorCode::NotFound);
    assert_error(backup.version_info(&alice, "99"), ErrorCode::NotFound);
    assert_error(backup.delete_version(&alice, "99"), ErrorCode::NotFound);
    assert_error(backup.put_keys(&alice, "not-a-number", &keys), ErrorCode::NotFound);

    let wrong = backup.put_keys(&alice, &old, &keys);
    assert_error(wrong, ErrorCode::WrongRoomKeysVersion { current_version: current.clone() });
    assert_eq!(
        backup.version_info(&alice, &current).unwrap().count,
        0,
        "nothing went to the current version"
    );
    assert_eq!(backup.version_info(&alice, &old).unwrap().count, 1, "the old version is unchanged");
    assert_eq!(backup.latest_version(&alice).unwrap().version, current);
}

#[tokio::test]
async fn malformed_key_data_is_rejected_and_changes_nothing() {
    let server = server();
    let backup = &server.services.key_backup;
    let alice = server.user("alice", &[]).await;
    let version = backup.create_version(&alice, &algorithm()).unwrap();

    let mut keys = session_keys("!room:localhost", "good", key_data(0, 0, false, "YWJj"));
    let bad = json!({ "first_message_index": "zero", "forwarded_count": 0, "is_verified": false });
    keys.get_mut(room_id!("!room:localhost")).unwrap().insert("bad".to_owned(), raw(bad));
    assert_error(backup.put_keys(&alice, &version, &keys), ErrorCode::BadJson);

    let info = backup.version_info(&alice, &version).unwrap();
    assert_eq!(info.count, 0);
    assert_eq!(info.etag, "0");
    assert!(backup.get_keys(&alice, &version, KeyScope::All).unwrap().is_empty());
}

#[tokio::test]
async fn keys_are_read_and_deleted_at_three_levels() {
    let server = server();
    let backup = &server.services.key_backup;
    let alice = server.user("alice", &[]).await;
    let version = backup.create_version(&alice, &algorithm()).unwrap();
    for (room, session) in [("!a:localhost", "s1"), ("!a:localhost", "s2"), ("!b:localhost", "s1")]
    {
        backup
            .put_keys(&alice, &version, &session_keys(room, session, key_data(0, 0, false, "YWJj")))
            .unwrap();
    }
    let room_a = room_id!("!a:localhost");
    let room_b = room_id!("!b:localhost");

    assert_eq!(backup.get_keys(&alice, &version, KeyScope::All).unwrap().len(), 2);
    assert_eq!(backup.get_keys(&alice, &version, KeyScope::Room(room_a)).unwrap()[room_a].len(), 2);
    assert!(backup
        .get_keys(&alice, &version, KeyScope::Room(room_id!("!none:localhost")))
        .unwrap()
        .is_empty());
    assert_error(
        backup.get_keys(&alice, &version, KeyScope::Session(room_b, "s2")),
        ErrorCode::NotFound,
    );

    let state = backup.delete_keys(&alice, &version, KeyScope::Session(room_a, "s1")).unwrap();
    assert_eq!(state.count, 2);
    let state = backup.delete_keys(&alice, &version, KeyScope::Room(room_a)).unwrap();
    assert_eq!(state.count, 1);
    let unchanged = backup.delete_keys(&alice, &version, KeyScope::Room(room_a)).unwrap();
    assert_eq!(unchanged, state, "deleting nothing keeps count and etag");
    let state = backup.delete_keys(&alice, &version, KeyScope::All).unwrap();
    assert_eq!(state.count, 0);
    assert!(backup.get_keys(&alice, &version, KeyScope::All).unwrap().is_empty());
}

#[tokio::test]
async fn deleted_version_is_gone_and_its_number_not_reused() {
    let server = server();
    let backup = &server.services.key_backup;
    let alice = server.user("alice", &[]).await;
    let bob = server.user("bob", &[]).await;
    let first = backup.create_version(&alice, &algorithm()).unwrap();
    let second = backup.create_version(&alice, &algorithm()).unwrap();
    let keys = session_keys("!room:localhost", "session", key_data(0, 0, false, "YWJj"));
    backup.put_keys(&alice, &second, &keys).unwrap();

    backup.delete_version(&alice, &second).unwrap();
    backup.delete_version(&alice, &second).unwrap();
    assert_error(backup.version_info(&alice, &second), ErrorCode::NotFound);
    assert_error(backup.get_keys(&alice, &second, KeyScope::All), ErrorCode::NotFound);
    assert_eq!(backup.latest_version(&alice).unwrap().version, first);

    let third = backup.create_version(&alice, &algorithm()).unwrap();
    assert_ne!(third, second);
    assert!(backup.get_keys(&alice, &third, KeyScope::All).unwrap().is_empty());

    assert_error(backup.version_info(&bob, &first), ErrorCode::NotFound);
}

#[tokio::test]
async fn update_keeps_algorithm_and_version() {
    let server = server();
    let backup = &server.services.key_backup;
    let alice = server.user("alice", &[]).await;
    let version = backup.create_version(&alice, &algorithm()).unwrap();

    let other_algorithm = raw(json!({ "algorithm": "org.example.other", "auth_data": {} }));
    assert_error(
        backup.update_version(&alice, &version, &other_algorithm),
        ErrorCode::InvalidParam,
    );
    let mut wrong_version: Value = algorithm().deserialize_as().unwrap();
    wrong_version["version"] = json!("7");
    assert_error(
        backup.update_version(&alice, &version, &raw(wrong_version)),
        ErrorCode::InvalidParam,
    );
    assert_error(backup.update_version(&alice, "7", &algorithm()), ErrorCode::NotFound);

    let mut updated: Value = algorithm().deserialize_as().unwrap();
    updated["auth_data"]["public_key"] = json!("bmV3IGtleQ");
    updated["version"] = json!(version);
    backup.update_version(&alice, &version, &raw(updated)).unwrap();
    let info = backup.version_info(&alice, &version).unwrap();
    assert_eq!(info.algorithm["auth_data"]["public_key"], "bmV3IGtleQ");
    assert!(!info.algorithm.contains_key("version"), "only algorithm and auth_data are kept");

    assert_error(
        backup.create_version(&alice, &raw(json!({ "algorithm": 5 }))),
        ErrorCode::BadJson,
    );
}
