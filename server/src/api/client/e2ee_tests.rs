//! The end-to-end encryption endpoints over HTTP, through the real router and RocksDB: status
//! codes, error bodies and authentication as clients see them.

use axum::body::Body;
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::service::keys::signed_json::test_support::SigningKey;
use crate::service::test_support::{server, TestServer};

const PASSWORD: &str = "correct horse battery";

struct Client {
    app: Router,
    access_token: String,
    user_id: String,
}

impl Client {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.access_token));
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let response = self.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, json)
    }
}

async fn client(server: &TestServer, localpart: &str, device_id: &str) -> Client {
    let services = &server.services;
    let user_id = match services.accounts.create_user(localpart, Some(PASSWORD), false).await {
        Ok(user_id) => user_id,
        Err(_) => services.local_user_id(localpart).unwrap(),
    };
    // Verified users, because pending ones may send to-device messages only within their rooms.
    let record = crate::storage::tables::DirectoryProfileRecord {
        level: caduceus_directory::VerificationLevel::Identity,
        professions: Vec::new(),
        specialties: Vec::new(),
        organisations: Vec::new(),
        areas: Vec::new(),
        listed: false,
        updated_ts: 0,
        evidence: None,
    };
    services.directory.set_record(&user_id, record).unwrap();
    let session = services.accounts.create_session(&user_id, Some(device_id.into()), None).unwrap();
    Client {
        app: crate::api::router(services.clone()),
        access_token: session.access_token,
        user_id: user_id.to_string(),
    }
}

fn device_keys(user_id: &str, device_id: &str, key: &SigningKey) -> Value {
    key.sign(
        user_id,
        json!({
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device_id}"): SigningKey::named("curve").public_key(),
                format!("ed25519:{device_id}"): key.public_key(),
            },
        }),
    )
}

fn cross_signing_key(user_id: &str, usage: &str, key: &SigningKey) -> Value {
    json!({ "user_id": user_id, "usage": [usage], "keys": { key.key_id(): key.public_key() } })
}

#[tokio::test]
async fn keys_upload_and_query_over_http() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let bob = client(&server, "bob", "PHONE").await;
    let key = SigningKey::named("PHONE");
    let one_time = key.sign(&alice.user_id, json!({ "key": SigningKey::named("c").public_key() }));

    let (status, body) = alice
        .call(
            Method::POST,
            "/_matrix/client/v3/keys/upload",
            Some(json!({
                "device_keys": device_keys(&alice.user_id, "PHONE", &key),
                "one_time_keys": { "signed_curve25519:AAAAAQ": one_time },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 1);

    let (status, body) = bob
        .call(
            Method::POST,
            "/_matrix/client/v3/keys/query",
            Some(json!({ "device_keys": { alice.user_id.clone(): [] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["device_keys"][&alice.user_id]["PHONE"]["keys"]["ed25519:PHONE"],
        key.public_key()
    );

    let (status, body) = bob
        .call(
            Method::POST,
            "/_matrix/client/v3/keys/claim",
            Some(json!({ "one_time_keys": { alice.user_id.clone(): { "PHONE": "signed_curve25519" } } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["one_time_keys"][&alice.user_id]["PHONE"]["signed_curve25519:AAAAAQ"].is_object());
}

#[tokio::test]
async fn bad_signature_is_400_invalid_signature() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let mut keys = device_keys(&alice.user_id, "PHONE", &SigningKey::named("PHONE"));
    keys["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);

    let (status, body) = alice
        .call(Method::POST, "/_matrix/client/v3/keys/upload", Some(json!({ "device_keys": keys })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_INVALID_SIGNATURE");
}

#[tokio::test]
async fn key_changes_rejects_foreign_token() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let (status, body) =
        alice.call(Method::GET, "/_matrix/client/v3/keys/changes?from=yesterday&to=80", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_INVALID_PARAM");

    let (status, body) =
        alice.call(Method::GET, "/_matrix/client/v3/keys/changes?from=0&to=1000", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], json!([alice.user_id]), "creating the device was a change");
    assert_eq!(body["left"], json!([]));
}

#[tokio::test]
async fn replacing_cross_signing_keys_needs_password() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let first = SigningKey::self_named();
    let upload = |master: &SigningKey, auth: Option<Value>| {
        let mut body = json!({ "master_key": cross_signing_key(&alice.user_id, "master", master) });
        if let Some(auth) = auth {
            body["auth"] = auth;
        }
        body
    };
    let path = "/_matrix/client/v3/keys/device_signing/upload";

    let (status, body) = alice.call(Method::POST, path, Some(upload(&first, None))).await;
    assert_eq!(status, StatusCode::OK, "the first upload needs no password: {body}");
    let (status, _) = alice.call(Method::POST, path, Some(upload(&first, None))).await;
    assert_eq!(status, StatusCode::OK, "repeating it needs none either");

    let second = SigningKey::self_named();
    let (status, challenge) = alice.call(Method::POST, path, Some(upload(&second, None))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge["flows"][0]["stages"], json!(["m.login.password"]));
    let session = challenge["session"].as_str().unwrap().to_owned();

    let wrong = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": alice.user_id },
        "password": "wrong password",
        "session": session,
    });
    let (status, body) = alice.call(Method::POST, path, Some(upload(&second, Some(wrong)))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    let right = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": alice.user_id },
        "password": PASSWORD,
        "session": session,
    });
    let (status, body) = alice.call(Method::POST, path, Some(upload(&second, Some(right)))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, keys) = alice
        .call(
            Method::POST,
            "/_matrix/client/v3/keys/query",
            Some(json!({ "device_keys": { alice.user_id.clone(): [] } })),
        )
        .await;
    assert_eq!(keys["master_keys"][&alice.user_id]["keys"][second.key_id()], second.public_key());
}

#[tokio::test]
async fn signature_failures_are_reported_per_key() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let (status, body) = alice
        .call(
            Method::POST,
            "/_matrix/client/v3/keys/signatures/upload",
            Some(json!({ alice.user_id.clone(): { "NOSUCHKEY": { "keys": {} } } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["failures"][&alice.user_id]["NOSUCHKEY"]["errcode"], "M_NOT_FOUND");
}

#[tokio::test]
async fn backup_over_http() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let algorithm = json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": { "public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo", "signatures": {} },
    });
    let session = json!({
        "first_message_index": 0,
        "forwarded_count": 0,
        "is_verified": true,
        "session_data": { "ephemeral": "YWJj", "ciphertext": "YWJj", "mac": "YWJj" },
    });

    let (status, body) =
        alice.call(Method::GET, "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    let (status, body) = alice
        .call(Method::POST, "/_matrix/client/v3/room_keys/version", Some(algorithm.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let old = body["version"].as_str().unwrap().to_owned();
    let (_, body) = alice
        .call(Method::POST, "/_matrix/client/v3/room_keys/version", Some(algorithm.clone()))
        .await;
    let current = body["version"].as_str().unwrap().to_owned();

    let path = |version: &str| {
        format!("/_matrix/client/v3/room_keys/keys/!room:localhost/sess?version={version}")
    };
    let (status, body) = alice.call(Method::PUT, &path(&current), Some(session.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    assert!(body["etag"].is_string());

    let (status, body) = alice.call(Method::PUT, &path(&old), Some(session.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["errcode"], "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(body["current_version"], current);

    let (status, body) = alice.call(Method::GET, &path("99"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    let (status, body) =
        alice.call(Method::GET, "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], current);
    assert_eq!(body["count"], 1);
    assert_eq!(body["algorithm"], algorithm["algorithm"]);
    assert_eq!(body["auth_data"], algorithm["auth_data"]);

    let (status, body) = alice
        .call(Method::GET, &format!("/_matrix/client/v3/room_keys/keys?version={current}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rooms"]["!room:localhost"]["sessions"]["sess"], session);
}

#[tokio::test]
async fn send_to_device_is_idempotent_over_http() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let bob = client(&server, "bob", "PHONE").await;
    let body = json!({ "messages": { bob.user_id.clone(): { "*": { "hello": 1 } } } });
    for _ in 0..2 {
        let (status, response) = alice
            .call(Method::PUT, "/_matrix/client/v3/sendToDevice/m.test/txn1", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::OK, "{response}");
    }
    let until = server.services.stream.visible();
    let bob_id = server.services.local_user_id("bob").unwrap();
    let events =
        server.services.to_device.to_device_events(&bob_id, "PHONE".into(), 0, until).unwrap();
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn secret_storage_account_data_is_accepted() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    for event_type in [
        "m.secret_storage.default_key",
        "m.secret_storage.key.abc",
        "m.cross_signing.master",
        "m.cross_signing.self_signing",
        "m.cross_signing.user_signing",
        "m.megolm_backup.v1",
    ] {
        let path = format!("/_matrix/client/v3/user/{}/account_data/{event_type}", alice.user_id);
        let content =
            json!({ "encrypted": { "abc": { "iv": "a", "ciphertext": "b", "mac": "c" } } });
        let (status, body) = alice.call(Method::PUT, &path, Some(content.clone())).await;
        assert_eq!(status, StatusCode::OK, "{event_type}: {body}");
        let (status, body) = alice.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{event_type}: {body}");
        assert_eq!(body, content, "{event_type}");
    }
}

#[tokio::test]
async fn sync_delivers_to_device_and_key_state() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let bob = client(&server, "bob", "PHONE").await;
    let key = SigningKey::named("PHONE");
    let one_time = key.sign(&bob.user_id, json!({ "key": SigningKey::named("c").public_key() }));
    let fallback = key.sign(
        &bob.user_id,
        json!({ "key": SigningKey::named("f").public_key(), "fallback": true }),
    );
    let upload = json!({
        "device_keys": device_keys(&bob.user_id, "PHONE", &key),
        "one_time_keys": { "signed_curve25519:AAAAAQ": one_time },
        "fallback_keys": { "signed_curve25519:AAAAAg": fallback },
    });
    let (status, body) =
        bob.call(Method::POST, "/_matrix/client/v3/keys/upload", Some(upload)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, initial) = bob.call(Method::GET, "/_matrix/client/v3/sync", None).await;
    assert_eq!(status, StatusCode::OK, "{initial}");
    assert_eq!(initial["device_one_time_keys_count"]["signed_curve25519"], 1);
    assert_eq!(initial["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    // A waiting sync wakes for the message.
    let waiting = {
        let path = format!("/_matrix/client/v3/sync?since={since}&timeout=10000");
        let app = bob.app.clone();
        let access_token = bob.access_token.clone();
        tokio::spawn(async move {
            let waiter = Client { app, access_token, user_id: String::new() };
            let started = std::time::Instant::now();
            let response = waiter.call(Method::GET, &path, None).await;
            (response, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let message = json!({ "messages": { bob.user_id.clone(): { "PHONE": { "secret": "hi" } } } });
    let (status, _) =
        alice.call(Method::PUT, "/_matrix/client/v3/sendToDevice/m.test/txn1", Some(message)).await;
    assert_eq!(status, StatusCode::OK);
    let ((status, woken), waited) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{woken}");
    assert!(waited < std::time::Duration::from_secs(5), "the sync waited {waited:?}");
    let events = woken["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{woken}");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["type"], "m.test");
    assert_eq!(events[0]["content"], json!({ "secret": "hi" }));

    // Repeating the same `since` redelivers; moving on acknowledges.
    let (_, repeated) =
        bob.call(Method::GET, &format!("/_matrix/client/v3/sync?since={since}"), None).await;
    assert_eq!(repeated["to_device"]["events"].as_array().unwrap().len(), 1);
    let next = woken["next_batch"].as_str().unwrap();
    let (_, acknowledged) =
        bob.call(Method::GET, &format!("/_matrix/client/v3/sync?since={next}"), None).await;
    assert_eq!(acknowledged["to_device"]["events"], json!([]));

    // A claim shows up in the counts of the next sync.
    let claim =
        json!({ "one_time_keys": { bob.user_id.clone(): { "PHONE": "signed_curve25519" } } });
    alice.call(Method::POST, "/_matrix/client/v3/keys/claim", Some(claim.clone())).await;
    alice.call(Method::POST, "/_matrix/client/v3/keys/claim", Some(claim)).await;
    let (_, after_claims) = bob.call(Method::GET, "/_matrix/client/v3/sync", None).await;
    assert_eq!(after_claims["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(after_claims["device_unused_fallback_key_types"], json!([]));
}

#[tokio::test]
async fn sync_reports_device_list_changes_of_room_members() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let bob = client(&server, "bob", "PHONE").await;
    let alice_id = server.services.local_user_id("alice").unwrap();
    let bob_id = server.services.local_user_id("bob").unwrap();
    server.shared_room(&alice_id, &[&bob_id]).await;

    let (_, initial) = bob.call(Method::GET, "/_matrix/client/v3/sync", None).await;
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    let key = SigningKey::named("PHONE");
    let upload = json!({ "device_keys": device_keys(&alice.user_id, "PHONE", &key) });
    alice.call(Method::POST, "/_matrix/client/v3/keys/upload", Some(upload)).await;

    let (status, body) =
        bob.call(Method::GET, &format!("/_matrix/client/v3/sync?since={since}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_lists"]["changed"], json!([alice.user_id]));
    let next = body["next_batch"].as_str().unwrap();
    let (_, changes) = bob
        .call(Method::GET, &format!("/_matrix/client/v3/keys/changes?from={since}&to={next}"), None)
        .await;
    assert_eq!(changes["changed"], json!([alice.user_id]));
}

#[tokio::test]
async fn dehydrated_device_lifecycle() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let bob = client(&server, "bob", "PHONE").await;
    let path = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";
    let device_data = json!({ "algorithm": "org.matrix.msc3814.v2", "device_pickle": "c2VjcmV0", "nonce": "bm9uY2U" });
    let upload = |device_id: &str, key: &SigningKey| {
        json!({
            "device_id": device_id,
            "device_data": device_data,
            "initial_device_display_name": "Dehydrated device",
            "device_keys": device_keys(&alice.user_id, device_id, key),
            "one_time_keys": {
                "signed_curve25519:AAAAAQ":
                    key.sign(&alice.user_id, json!({ "key": SigningKey::named("c").public_key() })),
            },
        })
    };
    let query_devices = || async {
        let body = json!({ "device_keys": { alice.user_id.clone(): [] } });
        let (_, keys) = bob.call(Method::POST, "/_matrix/client/v3/keys/query", Some(body)).await;
        let devices = keys["device_keys"][&alice.user_id].as_object().cloned().unwrap_or_default();
        devices.keys().cloned().collect::<Vec<String>>()
    };

    let (status, body) = alice.call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    // Bad keys change nothing.
    let mut bad = upload("DEHYDRATED1", &SigningKey::named("DEHYDRATED1"));
    bad["device_keys"]["algorithms"] = json!([]);
    let (status, body) = alice.call(Method::PUT, path, Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_INVALID_SIGNATURE");
    assert_eq!(alice.call(Method::GET, path, None).await.0, StatusCode::NOT_FOUND);
    assert!(server
        .services
        .accounts
        .get_device(&alice_id(&server), "DEHYDRATED1")
        .unwrap()
        .is_none());

    // A real device's ID cannot be taken.
    let (status, body) =
        alice.call(Method::PUT, path, Some(upload("PHONE", &SigningKey::named("PHONE")))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_INVALID_PARAM");

    let first_key = SigningKey::named("DEHYDRATED1");
    let (status, body) =
        alice.call(Method::PUT, path, Some(upload("DEHYDRATED1", &first_key))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], "DEHYDRATED1");
    let (status, body) = alice.call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], "DEHYDRATED1");
    assert_eq!(body["device_data"], device_data);
    assert!(query_devices().await.contains(&"DEHYDRATED1".to_owned()), "others can encrypt to it");

    // Messages for the dehydrated device wait until it is rehydrated.
    let message =
        json!({ "messages": { alice.user_id.clone(): { "DEHYDRATED1": { "room_key": "k" } } } });
    let (status, _) =
        bob.call(Method::PUT, "/_matrix/client/v3/sendToDevice/m.test/txn1", Some(message)).await;
    assert_eq!(status, StatusCode::OK);
    let events_path = format!("{path}/DEHYDRATED1/events");
    let (status, first) = alice.call(Method::POST, &events_path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["events"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["events"][0]["content"], json!({ "room_key": "k" }));
    let next_batch = first["next_batch"].as_str().unwrap();
    let (_, second) =
        alice.call(Method::POST, &events_path, Some(json!({ "next_batch": next_batch }))).await;
    assert_eq!(second["events"], json!([]), "the collected messages are acknowledged");
    let (status, _) =
        alice.call(Method::POST, &format!("{path}/PHONE/events"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only the dehydrated device's messages are offered");

    // A new dehydrated device replaces the old one.
    let (status, _) = alice
        .call(Method::PUT, path, Some(upload("DEHYDRATED2", &SigningKey::named("DEHYDRATED2"))))
        .await;
    assert_eq!(status, StatusCode::OK);
    let devices = query_devices().await;
    assert!(devices.contains(&"DEHYDRATED2".to_owned()), "{devices:?}");
    assert!(!devices.contains(&"DEHYDRATED1".to_owned()), "{devices:?}");

    let (status, body) = alice.call(Method::DELETE, path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], "DEHYDRATED2");
    assert_eq!(alice.call(Method::GET, path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(alice.call(Method::DELETE, path, None).await.0, StatusCode::NOT_FOUND);
    assert!(!query_devices().await.contains(&"DEHYDRATED2".to_owned()));
}

fn alice_id(server: &TestServer) -> ruma::OwnedUserId {
    server.services.local_user_id("alice").unwrap()
}

#[tokio::test]
async fn versions_advertise_dehydrated_devices() {
    let server = server();
    let alice = client(&server, "alice", "PHONE").await;
    let (status, body) = alice.call(Method::GET, "/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["unstable_features"]["org.matrix.msc3814"], true);
}
