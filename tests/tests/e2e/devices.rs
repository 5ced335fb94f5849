//! Device listing, renaming and deletion.

use caduceus_tests::{
    encode_path_segment, password_auth, uiaa_password, Account, TestServer, PASSWORD,
};
use matrix_sdk::ruma::api::client::uiaa::AuthType;
use matrix_sdk::ruma::OwnedDeviceId;
use serde_json::{json, Value};

const DEVICES: &str = "/_matrix/client/v3/devices";
const DEVICE: &str = "/_matrix/client/v3/devices/{deviceId}";
const DELETE_DEVICES: &str = "/_matrix/client/v3/delete_devices";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

fn device_path(device_id: &str) -> String {
    format!("/_matrix/client/v3/devices/{}", encode_path_segment(device_id))
}

async fn device_ids(server: &TestServer, account: &Account) -> Vec<String> {
    let response = server.get(DEVICES, account.token()).await;
    response.assert_status(200).assert_spec(DEVICES);
    response.body["devices"]
        .as_array()
        .expect("devices is an array")
        .iter()
        .map(|device| device["device_id"].as_str().expect("device_id is a string").to_owned())
        .collect()
}

#[tokio::test]
async fn delete_device_via_sdk() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let client = server.sdk_client().await;
    client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("password login");
    let sdk_device = client.device_id().expect("the SDK holds a device ID").to_owned();

    let listed: Vec<OwnedDeviceId> = client
        .devices()
        .await
        .expect("list devices")
        .devices
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(listed.len(), 2, "registration and SDK login make two devices: {listed:?}");
    assert!(listed.iter().any(|id| id.as_str() == alice.device_id), "{listed:?}");
    assert!(listed.contains(&sdk_device), "{listed:?}");

    let to_delete: OwnedDeviceId = alice.device_id.as_str().into();
    let error = client
        .delete_devices(std::slice::from_ref(&to_delete), None)
        .await
        .expect_err("deleting a device without auth must return the UIA response");
    let uiaa_info = error.as_uiaa_response().expect("a 401 UIA response");
    let offers_password = uiaa_info.flows.iter().any(|flow| flow.stages == [AuthType::Password]);
    assert!(offers_password, "no m.login.password flow: {:?}", uiaa_info.flows);

    let auth = uiaa_password("alice", PASSWORD, uiaa_info.session.clone());
    client.delete_devices(&[to_delete], Some(auth)).await.expect("delete with the password");

    let remaining: Vec<OwnedDeviceId> = client
        .devices()
        .await
        .expect("list devices")
        .devices
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(remaining, vec![sdk_device]);
    server.get(WHOAMI, alice.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn device_rename_round_trip() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let path = device_path(&alice.device_id);

    let rename =
        server.put(&path, alice.token(), &json!({ "display_name": "Ward 3 tablet" })).await;
    rename.assert_status(200).assert_spec(DEVICE);

    let device = server.get(&path, alice.token()).await;
    device.assert_status(200).assert_spec(DEVICE);
    assert_eq!(device.body["device_id"], json!(alice.device_id));
    assert_eq!(device.body["display_name"], json!("Ward 3 tablet"));

    let list = server.get(DEVICES, alice.token()).await;
    list.assert_status(200).assert_spec(DEVICES);
    let listed = list.body["devices"]
        .as_array()
        .expect("devices is an array")
        .iter()
        .find(|device| device["device_id"] == json!(alice.device_id))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(listed["display_name"], json!("Ward 3 tablet"), "list: {}", list.text);
}

#[tokio::test]
async fn unknown_device_not_found() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let path = device_path("NOSUCHDEVICE");

    let get = server.get(&path, alice.token()).await;
    get.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(DEVICE);

    // Only application services may create devices with PUT; a user gets 404.
    let put = server.put(&path, alice.token(), &json!({ "display_name": "Ghost" })).await;
    put.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(DEVICE);
    assert_eq!(device_ids(&server, &alice).await, vec![alice.device_id.clone()]);
}

#[tokio::test]
async fn other_users_device_hidden() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = device_path(&alice.device_id);

    server.get(&path, bob.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
    let rename = server.put(&path, bob.token(), &json!({ "display_name": "Taken over" })).await;
    rename.assert_matrix_error(404, "M_NOT_FOUND");

    let device = server.get(&path, alice.token()).await;
    device.assert_status(200);
    assert_ne!(device.body["display_name"], json!("Taken over"), "bob renamed alice's device");
}

#[tokio::test]
async fn delete_device_wrong_password_keeps_it() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", PASSWORD).await;
    let path = device_path(&phone.device_id);

    let challenge = server.delete(&path, alice.token(), Some(&json!({}))).await;
    challenge.assert_status(401).assert_spec(DEVICE);
    let session = challenge.str_field("session").to_owned();

    let body = json!({ "auth": password_auth("alice", "not the password", Some(&session)) });
    let wrong = server.delete(&path, alice.token(), Some(&body)).await;
    wrong.assert_status(401).assert_spec(DEVICE);
    assert_eq!(wrong.errcode(), Some("M_FORBIDDEN"), "body: {}", wrong.text);
    server.get(WHOAMI, phone.token()).await.assert_status(200);
    assert_eq!(device_ids(&server, &alice).await.len(), 2);

    let body = json!({ "auth": password_auth("alice", PASSWORD, Some(&session)) });
    server.delete(&path, alice.token(), Some(&body)).await.assert_status(200).assert_spec(DEVICE);
    server.get(WHOAMI, phone.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(device_ids(&server, &alice).await, vec![alice.device_id.clone()]);
}

#[tokio::test]
async fn delete_devices_in_bulk() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", PASSWORD).await;
    let tablet = server.login("alice", PASSWORD).await;

    let mut body = json!({ "devices": [phone.device_id, tablet.device_id] });
    let challenge = server.post(DELETE_DEVICES, alice.token(), &body).await;
    challenge.assert_status(401).assert_spec(DELETE_DEVICES);
    assert_eq!(device_ids(&server, &alice).await.len(), 3, "a UIA challenge deleted devices");

    body["auth"] = password_auth("alice", PASSWORD, Some(challenge.str_field("session")));
    let response = server.post(DELETE_DEVICES, alice.token(), &body).await;
    response.assert_status(200).assert_spec(DELETE_DEVICES);

    assert_eq!(device_ids(&server, &alice).await, vec![alice.device_id.clone()]);
    server.get(WHOAMI, phone.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    server.get(WHOAMI, tablet.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
}
