//! The encryption layer of the gatekeeper's bot (`caduceus_appservice::crypto`) against the
//! real server and a matrix-sdk client: decrypting, replying encrypted, waiting for room
//! keys, and keeping its identity across a restart.

use std::path::Path;
use std::time::Duration;

use caduceus_appservice::crypto::{BotCrypto, Decrypted, DecryptedEvent, Error, ReceivedRoomKey};
use caduceus_tests::{encode_path_segment, Account, TestServer};
use matrix_sdk::ruma::api::client::room::create_room::v3 as create_room;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{DeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use crate::e2ee::{send_text, Device, PATIENCE};

/// The bot's encryption layer with its sync loop running in a task.
struct Bot {
    crypto: BotCrypto,
    account: Account,
    sync_task: JoinHandle<()>,
}

impl Bot {
    /// Opens the bot's store in `store_dir`, runs a first sync (which uploads the device keys,
    /// so clients can encrypt for the bot) and starts the sync loop.
    async fn start(server: &TestServer, account: &Account, store_dir: &Path) -> Self {
        let crypto = open_crypto(server, account, store_dir).await;
        crypto.sync_once(Duration::ZERO).await.expect("the bot's first sync");
        let background = crypto.clone();
        let sync_task = tokio::spawn(async move {
            let Err(error) = background.run_sync().await;
            eprintln!("the bot's sync stopped: {error}");
        });
        Self { crypto, account: account.clone(), sync_task }
    }

    /// Stops the sync loop and waits until it is gone, so the store is closed afterwards.
    async fn stop(self) {
        self.sync_task.abort();
        let _ = self.sync_task.await;
    }

    fn user_id(&self) -> OwnedUserId {
        self.crypto.user_id().to_owned()
    }

    /// Waits until the bot has decrypted a message with `body` in `room_id`.
    async fn expect_message(
        &self,
        server: &TestServer,
        room_id: &RoomId,
        body: &str,
    ) -> DecryptedEvent {
        receive_text(server, &self.crypto, &self.account, room_id, body).await
    }
}

async fn open_crypto(server: &TestServer, account: &Account, store_dir: &Path) -> BotCrypto {
    let user_id = UserId::parse(&account.user_id).expect("a valid user ID");
    let device_id: &DeviceId = account.device_id.as_str().into();
    BotCrypto::open(&server.base_url(), &user_id, device_id, &account.access_token, store_dir)
        .await
        .expect("open the bot's crypto store")
}

/// Reads the room's history as the bot, newest first, and returns its `m.room.encrypted` events
/// as they would reach the application service.
async fn encrypted_events(server: &TestServer, account: &Account, room_id: &RoomId) -> Vec<Value> {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
        encode_path_segment(room_id.as_str())
    );
    let response = server.get(&path, account.token()).await;
    response.assert_status(200);
    let chunk = response.body["chunk"].as_array().cloned().unwrap_or_default();
    chunk.into_iter().filter(|event| event["type"] == "m.room.encrypted").collect()
}

/// Waits until `crypto` decrypts a message with `body` in `room_id`, reading the history
/// again every 100 ms. The sync loop brings in the room key meanwhile.
async fn receive_text(
    server: &TestServer,
    crypto: &BotCrypto,
    account: &Account,
    room_id: &RoomId,
    body: &str,
) -> DecryptedEvent {
    let wait = async {
        loop {
            for event in encrypted_events(server, account, room_id).await {
                let raw = Raw::new(&event).expect("an event serializes");
                let decrypted = crypto.decrypt(room_id, &raw).await;
                match decrypted.expect("decrypting does not fail") {
                    Decrypted::Event(event) if event.content["body"] == body => return event,
                    Decrypted::Event(_) | Decrypted::MissingRoomKey { .. } => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("the bot did not decrypt {body:?} within {PATIENCE:?}"))
}

/// Creates an encrypted direct chat of `human` with the bot, and makes the bot join it.
async fn direct_chat(server: &TestServer, human: &Device, bot: &Account) -> OwnedRoomId {
    let bot_user_id = UserId::parse(&bot.user_id).expect("a valid user ID");
    let mut request = create_room::Request::new();
    request.invite = vec![bot_user_id.clone()];
    request.is_direct = true;
    request.preset = Some(create_room::RoomPreset::TrustedPrivateChat);
    request.initial_state = vec![InitialStateEvent::with_empty_state_key(
        RoomEncryptionEventContent::with_recommended_defaults(),
    )
    .to_raw_any()];
    let room = human.client.create_room(request).await.expect("create the direct chat");
    let room_id = room.room_id().to_owned();

    let path = format!("/_matrix/client/v3/join/{}", encode_path_segment(room_id.as_str()));
    server.post(&path, bot.token(), &json!({})).await.assert_status(200);
    human.wait_for_member(&room_id, &bot_user_id).await;
    room_id
}

/// Returns the Ed25519 key of the bot's device as `/keys/query` lists it.
async fn published_ed25519_key(server: &TestServer, account: &Account) -> String {
    let query = json!({ "device_keys": { &account.user_id: [] } });
    let response = server.post("/_matrix/client/v3/keys/query", account.token(), &query).await;
    response.assert_status(200);
    let keys = &response.body["device_keys"][&account.user_id][&account.device_id]["keys"];
    let key = &keys[format!("ed25519:{}", account.device_id)];
    key.as_str().unwrap_or_else(|| panic!("no ed25519 key in {}", response.text)).to_owned()
}

/// Starts a server with the bot's account and Alice's, and makes a directory for the bot's store.
async fn start_with_bot_account() -> (TestServer, Account, TempDir) {
    let server = TestServer::start().await;
    let bot_account = server.register("verification-bot").await;
    server.register("alice").await;
    let store_dir = TempDir::new().expect("failed to create the bot's store directory");
    (server, bot_account, store_dir)
}

#[tokio::test]
async fn bot_decrypts_and_answers_encrypted() {
    let (server, bot_account, store_dir) = start_with_bot_account().await;
    let bot = Bot::start(&server, &bot_account, store_dir.path()).await;
    let mut alice = Device::login(&server, "alice").await;
    let room_id = direct_chat(&server, &alice, &bot_account).await;

    send_text(&alice, &room_id, "I would like to get verified").await;
    let received = bot.expect_message(&server, &room_id, "I would like to get verified").await;
    assert_eq!(received.sender, alice.user_id());
    assert_eq!(received.sender_device.as_deref(), alice.client.device_id());
    assert_eq!(received.event_type, "m.room.message");
    assert_eq!(received.content["msgtype"], "m.text");

    let answer = "Please send your registration number";
    let members = [alice.user_id(), bot.user_id()];
    let content = json!({ "msgtype": "m.text", "body": answer });
    let event_id = bot
        .crypto
        .send_encrypted(&room_id, &members, "m.room.message", &content)
        .await
        .expect("send an encrypted answer");
    alice.expect_message(&room_id, answer).await;

    // The server stored only ciphertext.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        encode_path_segment(room_id.as_str()),
        encode_path_segment(event_id.as_str())
    );
    let stored = server.get(&path, bot_account.token()).await;
    stored.assert_status(200);
    assert_eq!(stored.body["type"], "m.room.encrypted", "{}", stored.text);
    assert!(!stored.text.contains("registration number"), "plain text reached the server");

    bot.stop().await;
}

#[tokio::test]
async fn missing_room_key_arrives_with_next_sync() {
    let (server, bot_account, store_dir) = start_with_bot_account().await;
    // No sync loop: this test decides when the bot syncs.
    let crypto = open_crypto(&server, &bot_account, store_dir.path()).await;
    assert_eq!(crypto.next_batch().await.unwrap(), None, "a new store has no sync token");
    crypto.sync_once(Duration::ZERO).await.expect("the bot's first sync");
    assert!(crypto.next_batch().await.unwrap().is_some(), "the first sync saves its token");
    let mut room_keys = crypto.subscribe_room_keys();

    let alice = Device::login(&server, "alice").await;
    let room_id = direct_chat(&server, &alice, &bot_account).await;
    send_text(&alice, &room_id, "Is anyone there?").await;

    // The room key waits on the server as a to-device message until the bot syncs.
    let events = encrypted_events(&server, &bot_account, &room_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = Raw::new(&events[0]).unwrap();
    let expected_session = events[0]["content"]["session_id"].as_str().unwrap().to_owned();
    let Decrypted::MissingRoomKey { session_id, withheld_code } =
        crypto.decrypt(&room_id, &event).await.expect("decrypt without the key")
    else {
        panic!("the bot decrypted a message whose key it has not received");
    };
    assert_eq!(session_id.as_deref(), Some(expected_session.as_str()));
    assert_eq!(withheld_code, None);

    let wait_for_key = async {
        loop {
            let outcome = crypto.sync_once(Duration::from_secs(5)).await.expect("sync");
            if outcome.room_keys.iter().any(|key| key.session_id == expected_session) {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait_for_key).await.expect("the room key arrives");
    let notice = room_keys.try_recv().expect("subscribers hear of the room key");
    assert_eq!(notice, ReceivedRoomKey { room_id: room_id.clone(), session_id: expected_session });

    let Decrypted::Event(decrypted) = crypto.decrypt(&room_id, &event).await.unwrap() else {
        panic!("the room key is stored, yet the message does not decrypt");
    };
    assert_eq!(decrypted.content["body"], "Is anyone there?");
}

#[tokio::test]
async fn restarted_bot_keeps_identity_and_decrypts() {
    let (server, bot_account, store_dir) = start_with_bot_account().await;
    let bot = Bot::start(&server, &bot_account, store_dir.path()).await;
    let ed25519 = bot.crypto.ed25519_key();
    let curve25519 = bot.crypto.curve25519_key();
    assert_eq!(published_ed25519_key(&server, &bot_account).await, ed25519);

    let mut alice = Device::login(&server, "alice").await;
    let room_id = direct_chat(&server, &alice, &bot_account).await;
    send_text(&alice, &room_id, "Before the restart").await;
    bot.expect_message(&server, &room_id, "Before the restart").await;
    bot.stop().await;

    // While the bot is down, Alice starts a new room key. It waits on the server as a
    // to-device message, encrypted with the Olm session the bot has stored.
    let alice_room = alice.client.get_room(&room_id).expect("Alice knows the room");
    alice_room.discard_room_key().await.expect("discard Alice's room key");
    send_text(&alice, &room_id, "While the bot was down").await;

    // The store belongs to one device, so opening it for another device fails.
    let user_id = UserId::parse(&bot_account.user_id).unwrap();
    let other_device: &DeviceId = "OTHERDEVICE".into();
    let wrong = BotCrypto::open(
        &server.base_url(),
        &user_id,
        other_device,
        &bot_account.access_token,
        store_dir.path(),
    )
    .await;
    assert!(matches!(wrong, Err(Error::Store(_))), "opened another device's store");

    let bot = Bot::start(&server, &bot_account, store_dir.path()).await;
    assert_eq!(bot.crypto.ed25519_key(), ed25519, "the restarted bot has new keys");
    assert_eq!(bot.crypto.curve25519_key(), curve25519, "the restarted bot has new keys");
    assert_eq!(published_ed25519_key(&server, &bot_account).await, ed25519);
    bot.expect_message(&server, &room_id, "While the bot was down").await;
    bot.expect_message(&server, &room_id, "Before the restart").await;

    let answer = "Welcome back";
    let members = [alice.user_id(), bot.user_id()];
    let content = json!({ "msgtype": "m.text", "body": answer });
    bot.crypto
        .send_encrypted(&room_id, &members, "m.room.message", &content)
        .await
        .expect("send an encrypted answer after the restart");
    alice.expect_message(&room_id, answer).await;

    bot.stop().await;
}
