use ruma::OwnedDeviceId;
use serde_json::{json, Value};

use super::*;
use crate::error::ErrorCode;
use crate::service::test_support::{assert_error, server, TestServer};

fn content(value: Value) -> Raw<ruma::events::AnyToDeviceEventContent> {
    Raw::from_json(serde_json::value::to_raw_value(&value).unwrap())
}

fn messages(entries: &[(&OwnedUserId, &str, Value)]) -> Messages {
    let mut messages = Messages::new();
    for (user_id, target, value) in entries {
        let target = DeviceIdOrAllDevices::try_from(*target).unwrap();
        messages.entry((*user_id).clone()).or_default().insert(target, content(value.clone()));
    }
    messages
}

/// Collects every event waiting for the device, as (sender, type, content).
fn pending(
    server: &TestServer,
    user_id: &OwnedUserId,
    device_id: &str,
) -> Vec<(String, String, Value)> {
    let until = server.services.stream.visible();
    server
        .services
        .to_device
        .to_device_events(user_id, &OwnedDeviceId::from(device_id), 0, until)
        .unwrap()
        .iter()
        .map(|event| {
            let event: Value = event.deserialize_as().unwrap();
            (
                event["sender"].as_str().unwrap().to_owned(),
                event["type"].as_str().unwrap().to_owned(),
                event["content"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn repeated_txn_id_sends_once() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE"]).await;
    let sender = server.sender(&alice, "PHONE");
    let body = messages(&[(&bob, "PHONE", json!({ "n": 1 }))]);

    services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &body).unwrap();
    services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &body).unwrap();
    assert_eq!(
        pending(&server, &bob, "PHONE"),
        [(alice.to_string(), "m.test".to_owned(), json!({ "n": 1 }))]
    );

    // The same transaction ID from another device of the sender is another transaction.
    server.services.accounts.create_session(&alice, Some("LAPTOP".into()), None).unwrap();
    let laptop = server.sender(&alice, "LAPTOP");
    services.to_device.send(&services.accounts, &laptop, "m.test", "txn1", &body).unwrap();
    assert_eq!(pending(&server, &bob, "PHONE").len(), 2);
}

#[tokio::test]
async fn star_reaches_every_device_and_unknown_targets_are_dropped() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE", "LAPTOP"]).await;
    let nobody = OwnedUserId::try_from("@nobody:localhost").unwrap();
    let remote = OwnedUserId::try_from("@dave:remote.example").unwrap();
    let body = messages(&[
        (&bob, "*", json!({ "to": "all" })),
        (&bob, "LAPTOP", json!({ "to": "laptop" })),
        (&alice, "GONE", json!({})),
        (&nobody, "*", json!({})),
        (&remote, "*", json!({})),
    ]);

    let sender = server.sender(&alice, "PHONE");
    services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &body).unwrap();

    let phone = pending(&server, &bob, "PHONE");
    assert_eq!(phone.len(), 1);
    assert_eq!(phone[0].2, json!({ "to": "all" }));
    let laptop = pending(&server, &bob, "LAPTOP");
    assert_eq!(laptop.len(), 1, "a device named explicitly gets one message");
    assert_eq!(laptop[0].2, json!({ "to": "laptop" }));
    assert!(pending(&server, &alice, "PHONE").is_empty());
}

#[tokio::test]
async fn acknowledged_messages_are_deleted() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE"]).await;
    let sender = server.sender(&alice, "PHONE");
    let bob_phone = OwnedDeviceId::from("PHONE");

    let start = services.stream.visible();
    let first = messages(&[(&bob, "PHONE", json!({ "n": 1 }))]);
    services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &first).unwrap();
    let after_first = services.stream.visible();
    let second = messages(&[(&bob, "PHONE", json!({ "n": 2 }))]);
    services.to_device.send(&services.accounts, &sender, "m.test", "txn2", &second).unwrap();
    let after_second = services.stream.visible();

    let first_sync =
        services.to_device.to_device_events(&bob, &bob_phone, start, after_first).unwrap();
    assert_eq!(first_sync.len(), 1, "a sync sees messages up to its next_batch only");

    // A retried sync with the same `since` gets the messages again.
    services.to_device.delete_to_device_up_to(&bob, &bob_phone, start).unwrap();
    let retried =
        services.to_device.to_device_events(&bob, &bob_phone, start, after_second).unwrap();
    assert_eq!(retried.len(), 2);

    // The next sync acknowledges the first message.
    services.to_device.delete_to_device_up_to(&bob, &bob_phone, after_first).unwrap();
    let contents: Vec<Value> =
        pending(&server, &bob, "PHONE").into_iter().map(|(_, _, content)| content).collect();
    assert_eq!(contents, [json!({ "n": 2 })]);

    services.to_device.delete_to_device_up_to(&bob, &bob_phone, after_second).unwrap();
    assert!(pending(&server, &bob, "PHONE").is_empty());
}

#[tokio::test]
async fn content_that_is_not_an_object_is_rejected() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE"]).await;
    let sender = server.sender(&alice, "PHONE");

    let body =
        messages(&[(&bob, "PHONE", json!({ "ok": true })), (&alice, "PHONE", json!("text"))]);
    let result = services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &body);
    assert_error(result, ErrorCode::BadJson);
    assert!(pending(&server, &bob, "PHONE").is_empty(), "no part of the request is sent");

    // The transaction ID was not used up by the rejected request.
    let fixed = messages(&[(&bob, "PHONE", json!({ "ok": true }))]);
    services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &fixed).unwrap();
    assert_eq!(pending(&server, &bob, "PHONE").len(), 1);
}

#[tokio::test]
async fn deleted_device_loses_its_messages() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE"]).await;
    let sender = server.sender(&alice, "PHONE");
    let body = messages(&[(&bob, "PHONE", json!({}))]);
    services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &body).unwrap();

    services.accounts.delete_devices(&bob, &["PHONE".to_owned()]).unwrap();
    services.accounts.create_session(&bob, Some("PHONE".into()), None).unwrap();
    assert!(
        pending(&server, &bob, "PHONE").is_empty(),
        "a new device with the old ID starts empty"
    );
}

#[tokio::test]
async fn send_wakes_recipient_sync() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE"]).await;

    let handle = services.stream.subscribe(&bob);
    let notified = handle.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();

    let sender = server.sender(&alice, "PHONE");
    let body = messages(&[(&bob, "PHONE", json!({}))]);
    services.to_device.send(&services.accounts, &sender, "m.test", "txn1", &body).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), notified)
        .await
        .expect("the recipient's sync wakes");
}
