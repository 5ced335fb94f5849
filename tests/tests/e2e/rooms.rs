//! Rooms, messages and sync: group chats driven by matrix-sdk clients and raw HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use caduceus_tests::{
    encode_path_segment, Account, TestClient, TestServer, PASSWORD, SEVERAL_PRIMARY_DEVICES,
};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::events::receipt::ReceiptThread;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{json, Value};

async fn sdk_login(server: &TestServer, account: &Account) -> TestClient {
    let client = server.sdk_client().await;
    client
        .matrix_auth()
        .login_username(&account.localpart, PASSWORD)
        .send()
        .await
        .unwrap_or_else(|error| panic!("login of {} failed: {error}", account.localpart));
    client
}

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode_path_segment(room_id))
}

/// Event IDs of the room's timeline as one client sees it, oldest first, via `/messages`.
async fn timeline_ids(client: &TestClient, room_id: &RoomId) -> Vec<String> {
    let room = client.get_room(room_id).expect("the client knows the room");
    let mut options = MessagesOptions::backward();
    options.limit = 200u32.into();
    let messages = room.messages(options).await.expect("/messages succeeds");
    let mut ids: Vec<String> = messages
        .chunk
        .iter()
        .filter_map(|event| event.event_id().map(|id| id.to_string()))
        .collect();
    ids.reverse();
    ids
}

async fn sync_since(server: &TestServer, account: &Account, since: &str) -> Value {
    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=10000");
    let response = server.get(&path, account.token()).await;
    response.assert_status(200).assert_spec("/_matrix/client/v3/sync");
    response.body
}

async fn initial_sync(server: &TestServer, account: &Account) -> Value {
    let response = server.get("/_matrix/client/v3/sync", account.token()).await;
    response.assert_status(200).assert_spec("/_matrix/client/v3/sync");
    response.body
}

/// Long-polls `/sync` until `check` finds what it waits for in a response, for up to 20 polls.
async fn sync_until(
    server: &TestServer,
    account: &Account,
    since: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut since = since.to_owned();
    for _ in 0..20 {
        let body = sync_since(server, account, &since).await;
        if check(&body) {
            return body;
        }
        since = body["next_batch"].as_str().expect("next_batch").to_owned();
    }
    panic!("the expected event never arrived in /sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_between_two_clients() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let alice_client = sdk_login(&server, &alice).await;
    let bob_client = sdk_login(&server, &bob).await;
    let bob_id: OwnedUserId = bob.user_id.parse().unwrap();

    // Alice creates a named group with a topic and avatar and invites Bob.
    let mut request = CreateRoomRequest::new();
    request.name = Some("Ward 3 wound care".to_owned());
    request.topic = Some("Difficult cases".to_owned());
    request.invite = vec![bob_id.clone()];
    request.initial_state = vec![serde_json::from_value(json!({
        "type": "m.room.avatar",
        "state_key": "",
        "content": { "url": "mxc://localhost/wardavatar" },
    }))
    .unwrap()];
    let room = alice_client.create_room(request).await.expect("createRoom succeeds");
    let room_id: OwnedRoomId = room.room_id().to_owned();
    let room_id_text = room_id.to_string();

    // Bob sees the invite with the room's name, then joins.
    bob_client.sync_once(SyncSettings::default()).await.expect("bob syncs");
    let invite = initial_sync(&server, &bob).await;
    let invite_state = &invite["rooms"]["invite"][&room_id_text]["invite_state"]["events"];
    let names: Vec<&Value> =
        invite_state.as_array().unwrap().iter().filter(|e| e["type"] == "m.room.name").collect();
    assert_eq!(names.len(), 1, "invite state carries the room name: {invite_state}");
    assert_eq!(names[0]["content"]["name"], "Ward 3 wound care");
    bob_client.join_room_by_id(&room_id).await.expect("bob joins");

    // Both send; both see the same timeline in the same order.
    let alice_room = alice_client.get_room(&room_id).unwrap();
    for index in 0..3 {
        alice_room
            .send(RoomMessageEventContent::text_plain(format!("alice {index}")))
            .await
            .expect("alice sends");
    }
    bob_client.sync_once(SyncSettings::default()).await.unwrap();
    let bob_room = bob_client.get_room(&room_id).expect("bob has the room after joining");
    let reply =
        bob_room.send(RoomMessageEventContent::text_plain("bob replies")).await.expect("bob sends");
    alice_client.sync_once(SyncSettings::default()).await.unwrap();
    let alice_view = timeline_ids(&alice_client, &room_id).await;
    let bob_view = timeline_ids(&bob_client, &room_id).await;
    assert_eq!(alice_view, bob_view, "both clients see one order");
    assert_eq!(alice_view.last().map(String::as_str), Some(reply.response.event_id.as_str()));

    // The state carries name, topic and avatar.
    let state = server.get(&room_path(&room_id_text, "state"), alice.token()).await;
    state.assert_status(200).assert_spec("/_matrix/client/v3/rooms/{roomId}/state");
    let types: BTreeSet<String> = state
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["m.room.name", "m.room.topic", "m.room.avatar", "m.room.power_levels"] {
        assert!(types.contains(expected), "state lacks {expected}: {types:?}");
    }

    // An edit is linked to its original through /relations.
    let original = alice_view[alice_view.len() - 2].clone();
    let edit = json!({
        "msgtype": "m.text",
        "body": "* alice 2 (edited)",
        "m.new_content": { "msgtype": "m.text", "body": "alice 2 (edited)" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
    });
    let sent = server
        .put(&room_path(&room_id_text, "send/m.room.message/edit1"), alice.token(), &edit)
        .await;
    sent.assert_status(200);
    let relations_path = format!(
        "/_matrix/client/v1/rooms/{}/relations/{}/m.replace",
        encode_path_segment(&room_id_text),
        encode_path_segment(&original)
    );
    let relations = server.get(&relations_path, bob.token()).await;
    relations.assert_status(200);
    assert_eq!(relations.body["chunk"][0]["event_id"], sent.body["event_id"]);

    // Bob redacts his reply: its content is gone for everyone.
    let reply_id: OwnedEventId = reply.response.event_id.clone();
    bob_room.redact(&reply_id, Some("wrong patient"), None).await.expect("bob redacts");
    let event_path =
        room_path(&room_id_text, &format!("event/{}", encode_path_segment(reply_id.as_str())));
    let redacted = server.get(&event_path, alice.token()).await;
    redacted.assert_status(200).assert_spec("/_matrix/client/v3/rooms/{roomId}/event/{eventId}");
    assert_eq!(redacted.body["content"], json!({}), "redacted content is erased");
    assert!(redacted.body["unsigned"]["redacted_because"].is_object());

    // Bob may not redact Alice's message without power.
    let forbidden = server
        .put(
            &room_path(&room_id_text, &format!("redact/{}/r2", encode_path_segment(&original))),
            bob.token(),
            &json!({}),
        )
        .await;
    forbidden.assert_matrix_error(403, "M_FORBIDDEN");

    // Typing and read receipts reach Alice's sync.
    let since = initial_sync(&server, &alice).await["next_batch"].as_str().unwrap().to_owned();
    bob_room.typing_notice(true).await.expect("bob types");
    let typing = sync_until(&server, &alice, &since, |body| {
        body["rooms"]["join"][&room_id_text]["ephemeral"]["events"].as_array().is_some_and(
            |events| {
                events.iter().any(|e| {
                    e["type"] == "m.typing" && e["content"]["user_ids"][0] == bob.user_id.as_str()
                })
            },
        )
    })
    .await;
    let since = typing["next_batch"].as_str().unwrap().to_owned();
    let last: OwnedEventId = alice_view.last().unwrap().parse().unwrap();
    bob_room
        .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, last.clone())
        .await
        .expect("bob sends a read receipt");
    sync_until(&server, &alice, &since, |body| {
        body["rooms"]["join"][&room_id_text]["ephemeral"]["events"].as_array().is_some_and(
            |events| {
                events.iter().any(|e| {
                    e["type"] == "m.receipt"
                        && e["content"][last.as_str()]["m.read"][bob.user_id.as_str()].is_object()
                })
            },
        )
    })
    .await;

    // Raising one's own power level breaks the authorization rules.
    let raise = server
        .put(
            &room_path(&room_id_text, "state/m.room.power_levels"),
            bob.token(),
            &json!({ "users": { bob.user_id.clone(): 100 } }),
        )
        .await;
    raise.assert_matrix_error(403, "M_FORBIDDEN");

    // Leave, then rejoin after a new invite.
    bob_room.leave().await.expect("bob leaves");
    let uninvited = server.post(&room_path(&room_id_text, "join"), bob.token(), &json!({})).await;
    uninvited.assert_matrix_error(403, "M_FORBIDDEN");
    alice_room.invite_user_by_id(&bob_id).await.expect("alice invites bob again");
    server
        .post(&room_path(&room_id_text, "join"), bob.token(), &json!({}))
        .await
        .assert_status(200);

    // A banned user cannot rejoin; a user never invited cannot join a private room.
    alice_room.ban_user(&bob_id, Some("left the hospital")).await.expect("alice bans bob");
    server
        .post(&room_path(&room_id_text, "join"), bob.token(), &json!({}))
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");
    server
        .post(
            &format!("/_matrix/client/v3/join/{}", encode_path_segment(&room_id_text)),
            carol.token(),
            &json!({}),
        )
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");

    let members =
        server.get(&room_path(&room_id_text, "members?membership=ban"), alice.token()).await;
    members.assert_status(200).assert_spec("/_matrix/client/v3/rooms/{roomId}/members");
    assert_eq!(members.body["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(members.body["chunk"][0]["state_key"], bob.user_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_see_one_order() {
    const CLIENTS: usize = 20;
    const MESSAGES_EACH: usize = 3;
    let server = TestServer::start_with_several_devices().await;
    let mut accounts = Vec::new();
    for index in 0..CLIENTS {
        accounts.push(server.register(&format!("member{index}")).await);
    }
    let mut clients = Vec::new();
    for account in &accounts {
        clients.push(sdk_login(&server, account).await);
    }

    let mut request = CreateRoomRequest::new();
    request.name = Some("Hospital-wide".to_owned());
    request.preset =
        Some(matrix_sdk::ruma::api::client::room::create_room::v3::RoomPreset::PublicChat);
    let room = clients[0].create_room(request).await.expect("createRoom succeeds");
    let room_id = room.room_id().to_owned();
    for client in &clients[1..] {
        client.join_room_by_id(&room_id).await.expect("member joins the public room");
    }

    let sends = clients.iter().enumerate().map(|(index, client)| {
        let room_id = room_id.clone();
        async move {
            let room = client.get_room(&room_id).expect("joined room is known");
            for message in 0..MESSAGES_EACH {
                room.send(RoomMessageEventContent::text_plain(format!("{index}:{message}")))
                    .await
                    .expect("send succeeds");
            }
        }
    });
    futures::future::join_all(sends).await;

    let mut views = Vec::new();
    for client in &clients {
        client.sync_once(SyncSettings::default().timeout(Duration::from_secs(0))).await.unwrap();
        views.push(timeline_ids(client, &room_id).await);
    }
    for view in &views[1..] {
        assert_eq!(view, &views[0], "every client sees the same order");
    }

    let response = server
        .get(&room_path(room_id.as_str(), "messages?dir=b&limit=200"), accounts[5].token())
        .await;
    response.assert_status(200).assert_spec("/_matrix/client/v3/rooms/{roomId}/messages");
    let bodies: Vec<&str> = response.body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies.len(), CLIENTS * MESSAGES_EACH);
    for index in 0..CLIENTS {
        // Each sender's messages keep their sending order.
        let own: Vec<&&str> =
            bodies.iter().rev().filter(|b| b.starts_with(&format!("{index}:"))).collect();
        let expected: Vec<String> = (0..MESSAGES_EACH).map(|m| format!("{index}:{m}")).collect();
        assert_eq!(own.iter().map(|b| b.to_string()).collect::<Vec<_>>(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_paginate_in_order() {
    const COUNT: usize = 1000;
    // One user sends as fast as the server takes them, far above the default message rate.
    let server = TestServer::start_with_env(&[
        SEVERAL_PRIMARY_DEVICES,
        ("CADUCEUS__RATE_LIMITS__MESSAGES__PER_SECOND", "0"),
    ])
    .await;
    let alice = server.register("alice").await;
    let created = server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "name": "archive" }))
        .await;
    created.assert_status(200).assert_spec("/_matrix/client/v3/createRoom");
    let room_id = created.str_field("room_id").to_owned();

    for index in 0..COUNT {
        let path = room_path(&room_id, &format!("send/m.room.message/txn{index}"));
        let body = json!({ "msgtype": "m.text", "body": format!("message {index}") });
        server.put(&path, alice.token(), &body).await.assert_status(200);
    }

    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut path = room_path(&room_id, "messages?dir=b&limit=100");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let page = server.get(&path, alice.token()).await;
        page.assert_status(200).assert_spec("/_matrix/client/v3/rooms/{roomId}/messages");
        for event in page.body["chunk"].as_array().unwrap() {
            if event["type"] == "m.room.message" {
                bodies.push(event["content"]["body"].as_str().unwrap().to_owned());
            }
        }
        match page.body["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    assert_eq!(bodies.len(), COUNT, "every message arrives exactly once");
    let expected: Vec<String> = (0..COUNT).rev().map(|index| format!("message {index}")).collect();
    assert_eq!(bodies, expected, "pages run newest to oldest without gaps");

    // Forward pagination from the start returns the same events oldest first.
    let forward = server.get(&room_path(&room_id, "messages?dir=f&limit=5"), alice.token()).await;
    forward.assert_status(200);
    let first_types: Vec<&str> = forward.body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(first_types[0], "m.room.create");
}

#[tokio::test]
async fn send_is_idempotent_per_device() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let created = server.post("/_matrix/client/v3/createRoom", alice.token(), &json!({})).await;
    let room_id = created.str_field("room_id").to_owned();
    let path = room_path(&room_id, "send/m.room.message/same-txn");
    let first =
        server.put(&path, alice.token(), &json!({ "msgtype": "m.text", "body": "once" })).await;
    first
        .assert_status(200)
        .assert_spec("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}");
    let retry =
        server.put(&path, alice.token(), &json!({ "msgtype": "m.text", "body": "once" })).await;
    assert_eq!(
        first.body["event_id"], retry.body["event_id"],
        "a retried transaction is not sent twice"
    );

    // The same transaction ID from another device is a new event.
    let other = server.login("alice", PASSWORD).await;
    let elsewhere =
        server.put(&path, other.token(), &json!({ "msgtype": "m.text", "body": "once" })).await;
    assert_ne!(first.body["event_id"], elsewhere.body["event_id"]);

    // The sending device sees its transaction ID echoed; other devices do not.
    let sync = initial_sync(&server, &alice).await;
    let events = sync["rooms"]["join"][&room_id]["timeline"]["events"].as_array().unwrap().clone();
    let echoed = events.iter().find(|e| e["event_id"] == first.body["event_id"]).unwrap();
    assert_eq!(echoed["unsigned"]["transaction_id"], "same-txn");
    let other_sync = initial_sync(&server, &other).await;
    let seen =
        other_sync["rooms"]["join"][&room_id]["timeline"]["events"].as_array().unwrap().clone();
    let foreign = seen.iter().find(|e| e["event_id"] == first.body["event_id"]).unwrap();
    assert!(foreign["unsigned"].get("transaction_id").is_none());
}

#[tokio::test]
async fn room_versions_ten_to_twelve() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    for version in ["10", "11", "12"] {
        let created = server
            .post(
                "/_matrix/client/v3/createRoom",
                alice.token(),
                &json!({ "room_version": version }),
            )
            .await;
        created.assert_status(200);
        let room_id = created.str_field("room_id").to_owned();
        let create = server.get(&room_path(&room_id, "state/m.room.create"), alice.token()).await;
        create.assert_status(200);
        assert_eq!(create.body["room_version"], version);
        server
            .put(
                &room_path(&room_id, "send/m.room.message/t1"),
                alice.token(),
                &json!({ "msgtype": "m.text", "body": "hi" }),
            )
            .await
            .assert_status(200);
        if version == "12" {
            assert!(!room_id.contains(':'), "room version 12 IDs are hashes without a server name");
        }
    }
    server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "room_version": "9" }))
        .await
        .assert_matrix_error(400, "M_UNSUPPORTED_ROOM_VERSION");
}

#[tokio::test]
async fn long_poll_wakes_for_new_message() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let created = server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "invite": [bob.user_id] }))
        .await;
    let room_id = created.str_field("room_id").to_owned();
    server.post(&room_path(&room_id, "join"), bob.token(), &json!({})).await.assert_status(200);
    let since = initial_sync(&server, &bob).await["next_batch"].as_str().unwrap().to_owned();

    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=30000");
    let waiting = {
        let server_url = server.base_url();
        let token = bob.access_token.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("{server_url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the sync waits while nothing happens");
    server
        .put(
            &room_path(&room_id, "send/m.room.message/wake"),
            alice.token(),
            &json!({ "msgtype": "m.text", "body": "wake up" }),
        )
        .await
        .assert_status(200);
    let body = tokio::time::timeout(Duration::from_secs(25), waiting)
        .await
        .expect("the waiting sync returns before its timeout")
        .unwrap();
    let events = body["rooms"]["join"][&room_id]["timeline"]["events"].as_array().unwrap();
    assert!(events.iter().any(|event| event["content"]["body"] == "wake up"));
}

#[tokio::test]
async fn unknown_room_and_bad_input() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let unknown = "!nosuchroom:localhost";
    server
        .put(&room_path(unknown, "send/m.room.message/t1"), alice.token(), &json!({ "body": "x" }))
        .await
        .assert_matrix_error(404, "M_NOT_FOUND");
    server
        .post(&room_path(unknown, "join"), alice.token(), &json!({}))
        .await
        .assert_matrix_error(404, "M_NOT_FOUND");
    server
        .get(&room_path("not-a-room-id", "messages"), alice.token())
        .await
        .assert_matrix_error(400, "M_INVALID_PARAM");
    let created = server.post("/_matrix/client/v3/createRoom", alice.token(), &json!({})).await;
    let room_id = created.str_field("room_id").to_owned();
    server
        .post(
            &room_path(&room_id, "invite"),
            alice.token(),
            &json!({ "user_id": "@ghost:localhost" }),
        )
        .await
        .assert_matrix_error(404, "M_NOT_FOUND");
    server
        .put(&room_path(&room_id, "send/m.room.message/t2"), alice.token(), &json!([1, 2]))
        .await
        .assert_matrix_error(400, "M_BAD_JSON");
    server
        .get(&room_path(&room_id, "messages?from=garbage"), alice.token())
        .await
        .assert_matrix_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn unread_counts_follow_push_rules() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let created = server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "invite": [bob.user_id] }))
        .await;
    let room_id = created.str_field("room_id").to_owned();
    server.post(&room_path(&room_id, "join"), bob.token(), &json!({})).await.assert_status(200);

    let mut last_event = String::new();
    for (index, mention) in [false, true, false].into_iter().enumerate() {
        let mut content = json!({ "msgtype": "m.text", "body": format!("update {index}") });
        if mention {
            content["m.mentions"] = json!({ "user_ids": [alice.user_id] });
        }
        let sent = server
            .put(
                &room_path(&room_id, &format!("send/m.room.message/u{index}")),
                bob.token(),
                &content,
            )
            .await;
        sent.assert_status(200);
        last_event = sent.str_field("event_id").to_owned();
    }

    let sync = initial_sync(&server, &alice).await;
    let unread = &sync["rooms"]["join"][&room_id]["unread_notifications"];
    assert_eq!(unread["notification_count"], 3, "{unread}");
    assert_eq!(unread["highlight_count"], 1, "{unread}");

    let receipt_path =
        room_path(&room_id, &format!("receipt/m.read/{}", encode_path_segment(&last_event)));
    server.post(&receipt_path, alice.token(), &json!({})).await.assert_status(200);
    let sync = initial_sync(&server, &alice).await;
    let unread = &sync["rooms"]["join"][&room_id]["unread_notifications"];
    assert_eq!(unread["notification_count"], 0, "{unread}");
    assert_eq!(unread["highlight_count"], 0, "{unread}");

    // Bob's own messages never count for him.
    let sync = initial_sync(&server, &bob).await;
    assert_eq!(sync["rooms"]["join"][&room_id]["unread_notifications"]["notification_count"], 0);
}

#[tokio::test]
async fn thread_unread_counts_are_separate() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let created = server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "invite": [bob.user_id] }))
        .await;
    let room_id = created.str_field("room_id").to_owned();
    server.post(&room_path(&room_id, "join"), bob.token(), &json!({})).await.assert_status(200);

    let root = server
        .put(
            &room_path(&room_id, "send/m.room.message/root"),
            alice.token(),
            &json!({ "msgtype": "m.text", "body": "case question" }),
        )
        .await;
    let root_id = root.str_field("event_id").to_owned();
    for index in 0..2 {
        let reply = json!({
            "msgtype": "m.text",
            "body": format!("thread reply {index}"),
            "m.relates_to": { "rel_type": "m.thread", "event_id": root_id },
        });
        server
            .put(
                &room_path(&room_id, &format!("send/m.room.message/reply{index}")),
                bob.token(),
                &reply,
            )
            .await
            .assert_status(200);
    }
    server
        .put(
            &room_path(&room_id, "send/m.room.message/main"),
            bob.token(),
            &json!({ "msgtype": "m.text", "body": "main timeline" }),
        )
        .await
        .assert_status(200);

    let filter = encode_path_segment(
        &json!({ "room": { "timeline": { "unread_thread_notifications": true } } }).to_string(),
    );
    let response =
        server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), alice.token()).await;
    response.assert_status(200).assert_spec("/_matrix/client/v3/sync");
    let room = &response.body["rooms"]["join"][&room_id];
    assert_eq!(room["unread_notifications"]["notification_count"], 1, "{room}");
    assert_eq!(room["unread_thread_notifications"][&root_id]["notification_count"], 2, "{room}");

    // A threaded receipt clears only its thread.
    let replies = server
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/relations/{}/m.thread",
                encode_path_segment(&room_id),
                encode_path_segment(&root_id)
            ),
            alice.token(),
        )
        .await;
    replies.assert_status(200);
    let newest_reply = replies.body["chunk"][0]["event_id"].as_str().unwrap().to_owned();
    let receipt =
        room_path(&room_id, &format!("receipt/m.read/{}", encode_path_segment(&newest_reply)));
    server.post(&receipt, alice.token(), &json!({ "thread_id": root_id })).await.assert_status(200);
    let response =
        server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), alice.token()).await;
    let room = &response.body["rooms"]["join"][&room_id];
    assert_eq!(room["unread_notifications"]["notification_count"], 1, "{room}");
    assert!(room["unread_thread_notifications"].get(&root_id).is_none(), "{room}");

    // Without the filter option, thread events count in the room's total.
    let plain = initial_sync(&server, &alice).await;
    assert_eq!(plain["rooms"]["join"][&room_id]["unread_notifications"]["notification_count"], 1);
}

#[tokio::test]
async fn knock_then_invite() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let created = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            &json!({
                "name": "Knockable",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }],
            }),
        )
        .await;
    let room_id = created.str_field("room_id").to_owned();

    let knock = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", encode_path_segment(&room_id)),
            bob.token(),
            &json!({ "reason": "new on the ward" }),
        )
        .await;
    knock.assert_status(200).assert_spec("/_matrix/client/v3/knock/{roomIdOrAlias}");
    let sync = initial_sync(&server, &bob).await;
    let knock_state =
        sync["rooms"]["knock"][&room_id]["knock_state"]["events"].as_array().unwrap().clone();
    assert!(knock_state.iter().any(|event| event["type"] == "m.room.name"), "{knock_state:?}");

    // The knock is visible to members, who can let the user in.
    let members = server.get(&room_path(&room_id, "members?membership=knock"), alice.token()).await;
    assert_eq!(members.body["chunk"].as_array().unwrap().len(), 1);
    server
        .post(&room_path(&room_id, "invite"), alice.token(), &json!({ "user_id": bob.user_id }))
        .await
        .assert_status(200);
    server.post(&room_path(&room_id, "join"), bob.token(), &json!({})).await.assert_status(200);

    // A room with the invite rule cannot be knocked on.
    let private = server.post("/_matrix/client/v3/createRoom", alice.token(), &json!({})).await;
    let private_id = private.str_field("room_id").to_owned();
    let carol = server.register("carol").await;
    server
        .post(
            &format!("/_matrix/client/v3/knock/{}", encode_path_segment(&private_id)),
            carol.token(),
            &json!({}),
        )
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn room_survives_kill_and_restart() {
    let mut server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let created = server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "name": "durable" }))
        .await;
    let room_id = created.str_field("room_id").to_owned();
    let sent = server
        .put(
            &room_path(&room_id, "send/m.room.message/before"),
            alice.token(),
            &json!({ "msgtype": "m.text", "body": "before the crash" }),
        )
        .await;
    sent.assert_status(200);
    let since = initial_sync(&server, &alice).await["next_batch"].as_str().unwrap().to_owned();

    server.kill_9();
    server.restart().await;

    let messages = server.get(&room_path(&room_id, "messages?dir=b&limit=5"), alice.token()).await;
    messages.assert_status(200);
    assert_eq!(messages.body["chunk"][0]["event_id"], sent.body["event_id"]);

    // Stream positions continue after the crash, so an incremental sync sees the next message.
    let after = server
        .put(
            &room_path(&room_id, "send/m.room.message/after"),
            alice.token(),
            &json!({ "msgtype": "m.text", "body": "after the crash" }),
        )
        .await;
    after.assert_status(200);
    let sync = sync_since(&server, &alice, &since).await;
    let events = sync["rooms"]["join"][&room_id]["timeline"]["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|event| event["event_id"] == after.body["event_id"]), "{events:?}");
    assert!(!events.iter().any(|event| event["event_id"] == sent.body["event_id"]));
}
