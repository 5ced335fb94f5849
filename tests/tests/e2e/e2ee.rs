//! End-to-end encryption with real matrix-sdk clients: encrypted rooms, new devices,
//! cross-signing verification, and history recovered from key backup on a fresh device.

use std::time::Duration;

use caduceus_tests::{TestClient, TestServer, PASSWORD};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::room::create_room::v3 as create_room;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::{
    OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, InitialStateEvent};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Client, Room, RoomMemberships};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a client may take to see something another client did.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// A logged-in matrix-sdk client that syncs in the background and reports every room message
/// it could decrypt.
pub(crate) struct Device {
    pub(crate) client: TestClient,
    messages: mpsc::UnboundedReceiver<(OwnedRoomId, String)>,
    sync_task: JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.sync_task.abort();
    }
}

impl Device {
    /// Logs `localpart` in on a new device and starts syncing.
    pub(crate) async fn login(server: &TestServer, localpart: &str) -> Self {
        let client = server.sdk_client().await;
        client
            .matrix_auth()
            .login_username(localpart, PASSWORD)
            .initial_device_display_name(&format!("{localpart}'s test device"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{localpart} cannot log in: {error}"));

        let (sender, messages) = mpsc::unbounded_channel();
        client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, room: Room| {
            let sender = sender.clone();
            async move {
                let _ = sender.send((room.room_id().to_owned(), event.content.body().to_owned()));
            }
        });

        // The first sync uploads the device's identity and one-time keys.
        client.sync_once(SyncSettings::default()).await.expect("first sync");
        client.encryption().wait_for_e2ee_initialization_tasks().await;

        let background: Client = (*client).clone();
        let sync_task = tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(Duration::from_secs(1));
            if let Err(error) = background.sync(settings).await {
                eprintln!("background sync stopped: {error}");
            }
        });
        Self { client, messages, sync_task }
    }

    pub(crate) fn user_id(&self) -> OwnedUserId {
        self.client.user_id().expect("logged in").to_owned()
    }

    /// Waits until this device has decrypted a message with `body` in `room_id`.
    pub(crate) async fn expect_message(&mut self, room_id: &RoomId, body: &str) {
        let who = format!("{} ({:?})", self.user_id(), self.client.device_id());
        let wait = async {
            loop {
                let (room, text) = self.messages.recv().await.expect("the handler lives");
                if room == room_id && text == body {
                    return;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("{who} did not decrypt {body:?} within {PATIENCE:?}"));
    }

    /// Waits until the client knows `room_id` and `user_id` is joined to it.
    pub(crate) async fn wait_for_member(&self, room_id: &RoomId, user_id: &UserId) -> Room {
        let wait = async {
            loop {
                if let Some(room) = self.client.get_room(room_id) {
                    let members = room.members_no_sync(RoomMemberships::JOIN).await.unwrap();
                    if members.iter().any(|member| member.user_id() == user_id) {
                        return room;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("{user_id} never appeared as joined in {room_id}"))
    }

    /// Waits until this client knows the device `device_id` of `user_id`, which it learns from
    /// the device-list changes in `/sync` and a following `/keys/query`.
    async fn wait_for_device(&self, user_id: &UserId, device_id: &str) {
        let wait = async {
            loop {
                let device =
                    self.client.encryption().get_device(user_id, device_id.into()).await.unwrap();
                if device.is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("the device {device_id} of {user_id} never became known"));
    }
}

/// Creates an encrypted private room and invites `invitee`, who joins it.
async fn encrypted_room(owner: &Device, invitee: &Device) -> OwnedRoomId {
    let mut request = create_room::Request::new();
    request.invite = vec![invitee.user_id()];
    request.preset = Some(create_room::RoomPreset::PrivateChat);
    request.initial_state = vec![InitialStateEvent::with_empty_state_key(
        RoomEncryptionEventContent::with_recommended_defaults(),
    )
    .to_raw_any()];
    let room = owner.client.create_room(request).await.expect("create an encrypted room");
    let room_id = room.room_id().to_owned();

    invitee.client.join_room_by_id(&room_id).await.expect("join the room");
    owner.wait_for_member(&room_id, &invitee.user_id()).await;
    invitee.wait_for_member(&room_id, &owner.user_id()).await;
    room_id
}

pub(crate) async fn send_text(device: &Device, room_id: &RoomId, body: &str) {
    let room = device.client.get_room(room_id).expect("the sender knows the room");
    assert!(room.latest_encryption_state().await.unwrap().is_encrypted(), "the room is encrypted");
    room.send(RoomMessageEventContent::text_plain(body)).await.expect("send a message");
}

/// Reads the text of a timeline event that was decrypted, or `None` for anything else.
fn decrypted_text(event: &TimelineEvent) -> Option<String> {
    event.encryption_info()?;
    match event.raw().deserialize().ok()? {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(message)) => {
            Some(message.as_original()?.content.body().to_owned())
        }
        _ => None,
    }
}

async fn start_with_users(localparts: &[&str]) -> TestServer {
    let server = TestServer::start().await;
    for localpart in localparts {
        server.register(localpart).await;
    }
    server
}

#[tokio::test]
async fn encrypted_messages_decrypt_both_ways() {
    let server = start_with_users(&["alice", "bob"]).await;
    let mut alice = Device::login(&server, "alice").await;
    let mut bob = Device::login(&server, "bob").await;
    let room_id = encrypted_room(&alice, &bob).await;

    send_text(&alice, &room_id, "Blood results are in").await;
    bob.expect_message(&room_id, "Blood results are in").await;

    send_text(&bob, &room_id, "Thanks, reviewing now").await;
    alice.expect_message(&room_id, "Thanks, reviewing now").await;

    // The server only ever saw ciphertext.
    let room = alice.client.get_room(&room_id).unwrap();
    let history = room.messages(MessagesOptions::backward()).await.expect("read history");
    let texts: Vec<String> = history.chunk.iter().filter_map(decrypted_text).collect();
    assert!(texts.contains(&"Blood results are in".to_owned()), "{texts:?}");
    let alice_path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b",
        caduceus_tests::encode_path_segment(room_id.as_str())
    );
    let token = alice.client.access_token().expect("logged in");
    let raw = server.get(&alice_path, Some(&token)).await;
    raw.assert_status(200);
    assert!(!raw.text.contains("Blood results"), "plain text reached the server");
    assert!(raw.text.contains("m.room.encrypted"));
}

#[tokio::test]
async fn second_device_decrypts_new_messages() {
    let server = start_with_users(&["alice", "bob"]).await;
    let alice = Device::login(&server, "alice").await;
    let mut bob = Device::login(&server, "bob").await;
    let room_id = encrypted_room(&alice, &bob).await;
    send_text(&alice, &room_id, "before the new phone").await;
    bob.expect_message(&room_id, "before the new phone").await;

    let mut bob_tablet = Device::login(&server, "bob").await;
    let tablet_id = bob_tablet.client.device_id().unwrap().to_owned();
    alice.wait_for_device(&bob.user_id(), tablet_id.as_str()).await;

    send_text(&alice, &room_id, "after the new phone").await;
    bob_tablet.expect_message(&room_id, "after the new phone").await;
    bob.expect_message(&room_id, "after the new phone").await;
}

#[tokio::test]
async fn cross_signing_verifies_other_user() {
    let server = start_with_users(&["alice", "bob"]).await;
    let alice = Device::login(&server, "alice").await;
    let bob = Device::login(&server, "bob").await;
    encrypted_room(&alice, &bob).await;

    // A first upload of cross-signing keys needs no password.
    alice.client.encryption().bootstrap_cross_signing(None).await.expect("Alice's cross-signing");
    bob.client.encryption().bootstrap_cross_signing(None).await.expect("Bob's cross-signing");

    let bob_id = bob.user_id();
    let bob_identity = alice
        .client
        .encryption()
        .request_user_identity(&bob_id)
        .await
        .expect("query Bob's keys")
        .expect("Bob has a cross-signing identity");
    assert!(!bob_identity.is_verified());
    bob_identity.verify().await.expect("sign Bob's master key");

    let refreshed = alice
        .client
        .encryption()
        .request_user_identity(&bob_id)
        .await
        .expect("query Bob's keys again")
        .expect("Bob still has an identity");
    assert!(refreshed.is_verified(), "the server returns Alice's signature on Bob's master key");

    let bob_device_id = bob.client.device_id().unwrap();
    let bob_device = alice
        .client
        .encryption()
        .get_device(&bob_id, bob_device_id)
        .await
        .unwrap()
        .expect("Alice knows Bob's device");
    assert!(
        bob_device.is_verified_with_cross_signing(),
        "Bob's device is signed by his self-signing key, which his verified master key signed"
    );

    // Alice's signature is stored on the server and shown to her, not to Bob.
    let query = json!({ "device_keys": { bob_id.as_str(): [] } });
    let alice_token = alice.client.access_token().unwrap();
    let for_alice = server.post("/_matrix/client/v3/keys/query", Some(&alice_token), &query).await;
    for_alice.assert_status(200).assert_spec("/_matrix/client/v3/keys/query");
    let signatures = &for_alice.body["master_keys"][bob_id.as_str()]["signatures"];
    assert!(signatures.get(alice.user_id().as_str()).is_some(), "{signatures}");
    let bob_token = bob.client.access_token().unwrap();
    let for_bob = server.post("/_matrix/client/v3/keys/query", Some(&bob_token), &query).await;
    let signatures = &for_bob.body["master_keys"][bob_id.as_str()]["signatures"];
    assert!(signatures.get(alice.user_id().as_str()).is_none(), "{signatures}");
}

#[tokio::test]
async fn recovery_restores_history_on_new_device() {
    let server = start_with_users(&["alice", "bob"]).await;
    let alice = Device::login(&server, "alice").await;
    let mut bob = Device::login(&server, "bob").await;
    let room_id = encrypted_room(&alice, &bob).await;
    send_text(&alice, &room_id, "Patient in bed 4 is stable").await;
    bob.expect_message(&room_id, "Patient in bed 4 is stable").await;
    send_text(&bob, &room_id, "Noted, next check at 18:00").await;

    alice.client.encryption().bootstrap_cross_signing(None).await.expect("Alice's cross-signing");
    let recovery_key = alice
        .client
        .encryption()
        .recovery()
        .enable()
        .wait_for_backups_to_upload()
        .await
        .expect("enable recovery and back up room keys");
    let token = alice.client.access_token().unwrap();
    let backup = server.get("/_matrix/client/v3/room_keys/version", Some(&token)).await;
    backup.assert_status(200).assert_spec("/_matrix/client/v3/room_keys/version");
    assert!(backup.body["count"].as_u64().unwrap() >= 1, "{}", backup.text);

    // Alice's phone is lost: a fresh device has no keys until it recovers them.
    drop(alice);
    let new_phone = Device::login(&server, "alice").await;
    new_phone.client.encryption().recovery().recover(&recovery_key).await.expect("recover");
    let status = new_phone.client.encryption().cross_signing_status().await.unwrap();
    assert!(status.is_complete(), "the cross-signing keys came back from secret storage");
    let own_device = new_phone
        .client
        .encryption()
        .get_own_device()
        .await
        .unwrap()
        .expect("the new device knows itself");
    assert!(own_device.is_cross_signed_by_owner(), "recovery signs the new device");

    new_phone
        .client
        .encryption()
        .backups()
        .download_room_keys_for_room(&room_id)
        .await
        .expect("download room keys from the backup");
    let room = new_phone.client.get_room(&room_id).expect("the new device knows the room");
    let history = room.messages(MessagesOptions::backward()).await.expect("read history");
    let texts: Vec<String> = history.chunk.iter().filter_map(decrypted_text).collect();
    assert!(texts.contains(&"Patient in bed 4 is stable".to_owned()), "{texts:?}");
    assert!(texts.contains(&"Noted, next check at 18:00".to_owned()), "{texts:?}");
}

/// An ed25519 key pair whose key ID is `ed25519:<name>`, for hand-built key uploads.
struct SigningKey(ruma::signatures::Ed25519KeyPair);

impl SigningKey {
    fn named(name: &str) -> Self {
        let document = ruma::signatures::Ed25519KeyPair::generate();
        Self(ruma::signatures::Ed25519KeyPair::from_der(&document, name.to_owned()).unwrap())
    }

    fn public_key(&self) -> String {
        ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(self.0.public_key().to_vec())
            .encode()
    }

    /// Adds this key's signature, made as `signer`, to a JSON object.
    fn sign(&self, signer: &str, object: serde_json::Value) -> serde_json::Value {
        let Ok(ruma::CanonicalJsonValue::Object(mut canonical)) = object.try_into() else {
            panic!("only objects can be signed");
        };
        ruma::signatures::sign_json(signer, &self.0, &mut canonical).unwrap();
        serde_json::to_value(canonical).unwrap()
    }
}

#[tokio::test]
async fn key_endpoints_match_spec() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device_id = alice.device_id.as_str();
    let key = SigningKey::named(device_id);
    let device_keys = key.sign(
        &alice.user_id,
        json!({
            "user_id": alice.user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device_id}"): SigningKey::named("c").public_key(),
                format!("ed25519:{device_id}"): key.public_key(),
            },
        }),
    );
    let one_time = key.sign(&alice.user_id, json!({ "key": SigningKey::named("o").public_key() }));
    let fallback = key.sign(
        &alice.user_id,
        json!({ "key": SigningKey::named("f").public_key(), "fallback": true }),
    );

    let upload = "/_matrix/client/v3/keys/upload";
    let mut tampered = device_keys.clone();
    tampered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    server
        .post(upload, alice.token(), &json!({ "device_keys": tampered }))
        .await
        .assert_matrix_error(400, "M_INVALID_SIGNATURE");
    let body = json!({
        "device_keys": device_keys,
        "one_time_keys": { "signed_curve25519:AAAAAQ": one_time },
        "fallback_keys": { "signed_curve25519:AAAAAg": fallback },
    });
    let uploaded = server.post(upload, alice.token(), &body).await;
    uploaded.assert_status(200).assert_spec(upload);
    assert_eq!(uploaded.body["one_time_key_counts"]["signed_curve25519"], 1);

    let query = "/_matrix/client/v3/keys/query";
    let body = json!({ "device_keys": { alice.user_id.clone(): [], "@dave:remote.example": [] } });
    let queried = server.post(query, bob.token(), &body).await;
    queried.assert_status(200).assert_spec(query);
    assert!(queried.body["device_keys"][&alice.user_id][device_id].is_object());
    assert!(queried.body["failures"]["remote.example"].is_object());

    let claim = "/_matrix/client/v3/keys/claim";
    let body =
        json!({ "one_time_keys": { alice.user_id.clone(): { device_id: "signed_curve25519" } } });
    for expected in ["signed_curve25519:AAAAAQ", "signed_curve25519:AAAAAg"] {
        let claimed = server.post(claim, bob.token(), &body).await;
        claimed.assert_status(200).assert_spec(claim);
        assert!(claimed.body["one_time_keys"][&alice.user_id][device_id][expected].is_object());
    }

    let changes = "/_matrix/client/v3/keys/changes";
    let synced = server.get("/_matrix/client/v3/sync", bob.token()).await;
    let to = synced.str_field("next_batch");
    let listed = server.get(&format!("{changes}?from=0&to={to}"), bob.token()).await;
    listed.assert_status(200).assert_spec(changes);
    server
        .get(&format!("{changes}?from=yesterday&to={to}"), bob.token())
        .await
        .assert_matrix_error(400, "M_INVALID_PARAM");

    let signing = "/_matrix/client/v3/keys/device_signing/upload";
    // Cross-signing keys are named after their public key; only the public halves are needed.
    let cross_signing_key = |usage: &str| {
        let public_key = SigningKey::named(usage).public_key();
        json!({
            "user_id": alice.user_id,
            "usage": [usage],
            "keys": { format!("ed25519:{public_key}"): public_key },
        })
    };
    let body = json!({ "master_key": cross_signing_key("master") });
    let stored = server.post(signing, alice.token(), &body).await;
    stored.assert_status(200).assert_spec(signing);
    let unsigned_self_signing = cross_signing_key("self_signing");
    // A key the server does not have yet needs the password, and then fails its signature check.
    let mut body = json!({ "self_signing_key": unsigned_self_signing });
    let session = server.uia_session(signing, alice.token(), &body).await;
    body["auth"] = caduceus_tests::password_auth("alice", PASSWORD, Some(&session));
    let rejected = server.post(signing, alice.token(), &body).await;
    rejected.assert_matrix_error(400, "M_INVALID_SIGNATURE").assert_spec(signing);

    let signatures = "/_matrix/client/v3/keys/signatures/upload";
    let body = json!({ alice.user_id.clone(): { "NOSUCHKEY": { "keys": {} } } });
    let reported = server.post(signatures, alice.token(), &body).await;
    reported.assert_status(200).assert_spec(signatures);
    assert_eq!(reported.body["failures"][&alice.user_id]["NOSUCHKEY"]["errcode"], "M_NOT_FOUND");

    let to_device = "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}";
    let body = json!({ "messages": { bob.user_id.clone(): { "*": { "hello": "bob" } } } });
    let sent =
        server.put("/_matrix/client/v3/sendToDevice/m.test/txn1", alice.token(), &body).await;
    sent.assert_status(200).assert_spec(to_device);
}

#[tokio::test]
async fn backup_endpoints_match_spec() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let version_path = "/_matrix/client/v3/room_keys/version";
    let algorithm = json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": { "public_key": SigningKey::named("b").public_key(), "signatures": {} },
    });
    let session = json!({
        "first_message_index": 0,
        "forwarded_count": 0,
        "is_verified": true,
        "session_data": { "ephemeral": "YWJj", "ciphertext": "YWJj", "mac": "YWJj" },
    });

    server
        .get(version_path, alice.token())
        .await
        .assert_matrix_error(404, "M_NOT_FOUND")
        .assert_spec(version_path);
    let created = server.post(version_path, alice.token(), &algorithm).await;
    created.assert_status(200).assert_spec(version_path);
    let old = created.str_field("version").to_owned();
    let created = server.post(version_path, alice.token(), &algorithm).await;
    let current = created.str_field("version").to_owned();

    let session_path = "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}";
    let room_path = "/_matrix/client/v3/room_keys/keys/{roomId}";
    let all_path = "/_matrix/client/v3/room_keys/keys";
    let room = caduceus_tests::encode_path_segment("!room:localhost");
    let session_url = |version: &str| format!("{all_path}/{room}/sess?version={version}");
    let stored = server.put(&session_url(&current), alice.token(), &session).await;
    stored.assert_status(200).assert_spec(session_path);
    assert_eq!(stored.body["count"], 1);

    let wrong = server.put(&session_url(&old), alice.token(), &session).await;
    wrong.assert_matrix_error(403, "M_WRONG_ROOM_KEYS_VERSION").assert_spec(session_path);
    assert_eq!(wrong.body["current_version"], current.as_str());
    server
        .get(&session_url("99"), alice.token())
        .await
        .assert_matrix_error(404, "M_NOT_FOUND")
        .assert_spec(session_path);

    let latest = server.get(version_path, alice.token()).await;
    latest.assert_status(200).assert_spec(version_path);
    assert_eq!(latest.body["count"], 1);
    let by_version = format!("{version_path}/{current}");
    server
        .get(&by_version, alice.token())
        .await
        .assert_status(200)
        .assert_spec("/_matrix/client/v3/room_keys/version/{version}");
    let mut updated = algorithm.clone();
    updated["version"] = json!(current);
    server
        .put(&by_version, alice.token(), &updated)
        .await
        .assert_status(200)
        .assert_spec("/_matrix/client/v3/room_keys/version/{version}");

    server
        .get(&session_url(&current), alice.token())
        .await
        .assert_status(200)
        .assert_spec(session_path);
    let room_url = format!("{all_path}/{room}?version={current}");
    server.get(&room_url, alice.token()).await.assert_status(200).assert_spec(room_path);
    let all_url = format!("{all_path}?version={current}");
    let all = server.get(&all_url, alice.token()).await;
    all.assert_status(200).assert_spec(all_path);
    assert_eq!(all.body["rooms"]["!room:localhost"]["sessions"]["sess"], session);

    let deleted = server.delete(&all_url, alice.token(), None).await;
    deleted.assert_status(200).assert_spec(all_path);
    assert_eq!(deleted.body["count"], 0);
    server
        .delete(&by_version, alice.token(), None)
        .await
        .assert_status(200)
        .assert_spec("/_matrix/client/v3/room_keys/version/{version}");
    server.get(&by_version, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn encrypted_attachment_reaches_recipient() {
    use matrix_sdk::attachment::AttachmentConfig;
    use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
    use matrix_sdk::ruma::events::room::message::MessageType;

    let server = start_with_users(&["alice", "bob"]).await;
    let alice = Device::login(&server, "alice").await;
    let mut bob = Device::login(&server, "bob").await;
    let room_id = encrypted_room(&alice, &bob).await;

    let scan = b"%PDF-1.7 wound photo report, bed 12".repeat(200);
    let room = alice.client.get_room(&room_id).unwrap();
    room.send_attachment(
        "wound-report.pdf",
        &"application/pdf".parse().unwrap(),
        scan.clone(),
        AttachmentConfig::new(),
    )
    .await
    .expect("sending the attachment");
    bob.expect_message(&room_id, "wound-report.pdf").await;

    // Bob finds the decrypted event and downloads and decrypts the file it points to.
    let bob_room = bob.client.get_room(&room_id).unwrap();
    let history = bob_room.messages(MessagesOptions::backward()).await.expect("read history");
    let source = history
        .chunk
        .iter()
        .filter(|event| event.encryption_info().is_some())
        .find_map(|event| match event.raw().deserialize().ok()? {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(message)) => {
                match &message.as_original()?.content.msgtype {
                    MessageType::File(file) => Some(file.source.clone()),
                    _ => None,
                }
            }
            _ => None,
        })
        .expect("Bob decrypted the file message");
    assert!(matches!(source, matrix_sdk::ruma::events::room::MediaSource::Encrypted(_)));
    let request = MediaRequestParameters { source, format: MediaFormat::File };
    let bytes = bob.client.media().get_media_content(&request, false).await.expect("download");
    assert_eq!(bytes, scan, "Bob decrypts the file Alice sent");
}
