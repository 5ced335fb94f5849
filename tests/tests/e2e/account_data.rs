//! Global and per-room account data, and sync filters.

use caduceus_tests::{encode_path_segment, Account, TestServer};
use serde_json::{json, Value};

const GLOBAL: &str = "/_matrix/client/v3/user/{userId}/account_data/{type}";
const ROOM: &str = "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}";
const FILTER_UPLOAD: &str = "/_matrix/client/v3/user/{userId}/filter";
const FILTER: &str = "/_matrix/client/v3/user/{userId}/filter/{filterId}";

/// A room ID with valid syntax. Room account data does not require the room to exist.
const ROOM_ID: &str = "!wardrounds:localhost";

fn global_path(account: &Account, event_type: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/account_data/{}",
        account.user_path(),
        encode_path_segment(event_type)
    )
}

fn room_path(account: &Account, room_id: &str, event_type: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/{}",
        account.user_path(),
        encode_path_segment(room_id),
        encode_path_segment(event_type)
    )
}

/// Panics unless every member of `expected` appears in `actual` with the same value, at any
/// depth. The server may add defaults, so extra members in `actual` are allowed.
fn assert_json_includes(actual: &Value, expected: &Value) {
    if let Some(location) = first_difference(actual, expected, "") {
        panic!(
            "the values at {location} differ\nexpected to include: {expected}\nactual: {actual}"
        );
    }
}

/// Returns the path of the first member of `expected` that `actual` lacks or has another value for.
fn first_difference(actual: &Value, expected: &Value, location: &str) -> Option<String> {
    match (actual, expected) {
        (Value::Object(actual_map), Value::Object(expected_map)) => {
            expected_map.iter().find_map(|(key, expected_value)| {
                let actual_value = actual_map.get(key).unwrap_or(&Value::Null);
                first_difference(actual_value, expected_value, &format!("{location}.{key}"))
            })
        }
        _ if actual == expected => None,
        _ => Some(if location.is_empty() { "(root)".to_owned() } else { location.to_owned() }),
    }
}

#[tokio::test]
async fn global_account_data_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = global_path(&alice, "org.caduceus.test.settings");

    let first = json!({ "theme": "dark", "shift": { "ward": 3, "night": true } });
    server.put(&path, alice.token(), &first).await.assert_status(200).assert_spec(GLOBAL);
    let read = server.get(&path, alice.token()).await;
    read.assert_status(200).assert_spec(GLOBAL);
    assert_eq!(read.body, first);

    let second = json!({ "theme": "light" });
    server.put(&path, alice.token(), &second).await.assert_status(200);
    let read = server.get(&path, alice.token()).await;
    read.assert_status(200);
    assert_eq!(read.body, second, "a second PUT replaces the content");
}

#[tokio::test]
async fn missing_account_data_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let global = server.get(&global_path(&alice, "org.caduceus.test.unset"), alice.token()).await;
    global.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(GLOBAL);

    let room =
        server.get(&room_path(&alice, ROOM_ID, "org.caduceus.test.unset"), alice.token()).await;
    room.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(ROOM);
}

#[tokio::test]
async fn room_account_data_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let event_type = "org.caduceus.test.handover";
    let path = room_path(&alice, ROOM_ID, event_type);
    let content = json!({ "note": "Bed 4 needs a review", "priority": 2 });

    server.put(&path, alice.token(), &content).await.assert_status(200).assert_spec(ROOM);

    let read = server.get(&path, alice.token()).await;
    read.assert_status(200).assert_spec(ROOM);
    assert_eq!(read.body, content);

    // Room and global account data are separate, and so are rooms.
    let global = server.get(&global_path(&alice, event_type), alice.token()).await;
    global.assert_matrix_error(404, "M_NOT_FOUND");
    let other_room = room_path(&alice, "!otherroom:localhost", event_type);
    server.get(&other_room, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn invalid_room_id_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = room_path(&alice, "not-a-room-id", "org.caduceus.test.handover");

    let put = server.put(&path, alice.token(), &json!({ "note": "x" })).await;
    put.assert_matrix_error(400, "M_INVALID_PARAM").assert_spec(ROOM);

    let get = server.get(&path, alice.token()).await;
    get.assert_matrix_error(400, "M_INVALID_PARAM").assert_spec(ROOM);
}

#[tokio::test]
async fn other_users_account_data_forbidden() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_global = global_path(&bob, "org.caduceus.test.settings");
    let bob_room = room_path(&bob, ROOM_ID, "org.caduceus.test.settings");
    let content = json!({ "theme": "written by alice" });

    let put = server.put(&bob_global, alice.token(), &content).await;
    put.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(GLOBAL);
    let put = server.put(&bob_room, alice.token(), &content).await;
    put.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(ROOM);

    server.put(&bob_global, bob.token(), &json!({ "theme": "bob's" })).await.assert_status(200);
    let get = server.get(&bob_global, alice.token()).await;
    get.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(GLOBAL);

    let read = server.get(&bob_global, bob.token()).await;
    assert_eq!(read.body, json!({ "theme": "bob's" }));
    server.get(&bob_room, bob.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn server_managed_types_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let content = json!({ "event_id": "$someevent" });

    // The spec: servers MUST reject setting m.fully_read and m.push_rules with 405, in global
    // and in room account data, and must still allow reading them.
    for event_type in ["m.fully_read", "m.push_rules"] {
        let global = server.put(&global_path(&alice, event_type), alice.token(), &content).await;
        global.assert_matrix_error(405, "M_BAD_JSON").assert_spec(GLOBAL);
        let room =
            server.put(&room_path(&alice, ROOM_ID, event_type), alice.token(), &content).await;
        room.assert_matrix_error(405, "M_BAD_JSON").assert_spec(ROOM);
    }

    let push_rules = server.get(&global_path(&alice, "m.push_rules"), alice.token()).await;
    push_rules.assert_status(200).assert_spec(GLOBAL);
    assert!(
        push_rules.body["global"]["override"].is_array(),
        "m.push_rules account data is not the ruleset: {}",
        push_rules.text
    );
}

#[tokio::test]
async fn filter_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let upload_path = format!("/_matrix/client/v3/user/{}/filter", alice.user_path());
    // Fields set to their default value (such as "event_format": "client") are left out,
    // because the server may store the filter without them.
    let filter = json!({
        "event_fields": ["type", "content", "sender"],
        "presence": { "types": [] },
        "room": {
            "timeline": { "limit": 10, "types": ["m.room.message"] },
            "state": { "lazy_load_members": true }
        }
    });

    let upload = server.post(&upload_path, alice.token(), &filter).await;
    upload.assert_status(200).assert_spec(FILTER_UPLOAD);
    let filter_id = upload.str_field("filter_id").to_owned();
    assert!(!filter_id.starts_with('{'), "filter IDs must not start with '{{': {filter_id}");

    let read_path = format!("{upload_path}/{}", encode_path_segment(&filter_id));
    let read = server.get(&read_path, alice.token()).await;
    read.assert_status(200).assert_spec(FILTER);
    assert_json_includes(&read.body, &filter);
}

#[tokio::test]
async fn unknown_filter_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let upload_path = format!("/_matrix/client/v3/user/{}/filter", alice.user_path());

    let unknown = server.get(&format!("{upload_path}/999999"), alice.token()).await;
    unknown.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(FILTER);

    let upload = server.post(&upload_path, alice.token(), &json!({ "room": {} })).await;
    upload.assert_status(200);
    let filter_path =
        format!("{upload_path}/{}", encode_path_segment(upload.str_field("filter_id")));
    let by_bob = server.get(&filter_path, bob.token()).await;
    // The spec documents only 200 and 404 here; a server may also refuse with 403.
    assert!(matches!(by_bob.status, 403 | 404), "bob read alice's filter: {}", by_bob.text);
    by_bob.assert_error_shape();
}

#[tokio::test]
async fn filter_for_other_user_forbidden() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let path = format!("/_matrix/client/v3/user/{}/filter", bob.user_path());
    let response = server.post(&path, alice.token(), &json!({ "room": {} })).await;

    response.assert_matrix_error(403, "M_FORBIDDEN");
}
