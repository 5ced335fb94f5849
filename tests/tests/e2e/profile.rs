//! Profiles: display name, avatar URL and custom fields.

use caduceus_tests::{encode_path_segment, Account, TestServer, PASSWORD};
use serde_json::json;

const PROFILE: &str = "/_matrix/client/v3/profile/{userId}";
const PROFILE_FIELD: &str = "/_matrix/client/v3/profile/{userId}/{keyName}";

fn field_path(account: &Account, key: &str) -> String {
    format!("/_matrix/client/v3/profile/{}/{}", account.user_path(), encode_path_segment(key))
}

fn profile_path(account: &Account) -> String {
    format!("/_matrix/client/v3/profile/{}", account.user_path())
}

#[tokio::test]
async fn display_name_via_sdk() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let client = server.sdk_client().await;
    client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("password login");

    client.account().set_display_name(Some("Dr. Alice Martin")).await.expect("set display name");

    let name = client.account().get_display_name().await.expect("get display name");
    assert_eq!(name.as_deref(), Some("Dr. Alice Martin"));

    let field = server.get(&field_path(&alice, "displayname"), alice.token()).await;
    field.assert_status(200).assert_spec(PROFILE_FIELD);
    assert_eq!(field.body, json!({ "displayname": "Dr. Alice Martin" }));

    let profile = server.get(&profile_path(&alice), alice.token()).await;
    profile.assert_status(200).assert_spec(PROFILE);
    assert_eq!(profile.body["displayname"], json!("Dr. Alice Martin"));
}

#[tokio::test]
async fn avatar_url_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = field_path(&alice, "avatar_url");
    let avatar = "mxc://localhost/AbCdEf123";

    let set = server.put(&path, alice.token(), &json!({ "avatar_url": avatar })).await;
    set.assert_status(200).assert_spec(PROFILE_FIELD);

    let get = server.get(&path, alice.token()).await;
    get.assert_status(200).assert_spec(PROFILE_FIELD);
    assert_eq!(get.body, json!({ "avatar_url": avatar }));
    let profile = server.get(&profile_path(&alice), alice.token()).await;
    profile.assert_status(200).assert_spec(PROFILE);
    assert_eq!(profile.body["avatar_url"], json!(avatar));
}

#[tokio::test]
async fn custom_field_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let key = "org.example.pager";
    let value = json!({ "number": "4411", "on_call": true });
    let path = field_path(&alice, key);

    let set = server.put(&path, alice.token(), &json!({ key: value })).await;
    set.assert_status(200).assert_spec(PROFILE_FIELD);
    let get = server.get(&path, alice.token()).await;
    get.assert_status(200).assert_spec(PROFILE_FIELD);
    assert_eq!(get.body, json!({ key: value }));
    let profile = server.get(&profile_path(&alice), alice.token()).await;
    profile.assert_status(200).assert_spec(PROFILE);
    assert_eq!(profile.body[key], value, "the full profile lacks the field: {}", profile.text);

    let delete = server.delete(&path, alice.token(), None).await;
    delete.assert_status(200).assert_spec(PROFILE_FIELD);
    server.get(&path, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
    let profile = server.get(&profile_path(&alice), alice.token()).await;
    profile.assert_status(200);
    assert!(profile.body.get(key).is_none(), "the deleted field is still listed: {}", profile.text);
}

#[tokio::test]
async fn caduceus_fields_read_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let key = "org.caduceus.verification";
    let path = field_path(&alice, key);

    // Fields in the org.caduceus. namespace carry the verification level, which only the server
    // sets, so a user cannot write or delete them.
    let set = server.put(&path, alice.token(), &json!({ key: { "level": "medical" } })).await;
    set.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(PROFILE_FIELD);
    let delete = server.delete(&path, alice.token(), None).await;
    delete.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(PROFILE_FIELD);

    let profile = server.get(&profile_path(&alice), alice.token()).await;
    profile.assert_status(200);
    assert_ne!(profile.body[key]["level"], json!("medical"), "the user set their own level");
}

#[tokio::test]
async fn time_zone_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = field_path(&alice, "m.tz");

    let set = server.put(&path, alice.token(), &json!({ "m.tz": "Europe/Amsterdam" })).await;
    set.assert_status(200).assert_spec(PROFILE_FIELD);

    let get = server.get(&path, alice.token()).await;
    get.assert_status(200).assert_spec(PROFILE_FIELD);
    assert_eq!(get.body, json!({ "m.tz": "Europe/Amsterdam" }));
}

#[tokio::test]
async fn unnamespaced_key_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = field_path(&alice, "pager");

    let response = server.put(&path, alice.token(), &json!({ "pager": "4411" })).await;

    // The spec's example for an invalid key name uses M_INVALID_PARAM.
    response.assert_matrix_error(400, "M_INVALID_PARAM").assert_spec(PROFILE_FIELD);
    let profile = server.get(&profile_path(&alice), alice.token()).await;
    profile.assert_status(200);
    assert!(profile.body.get("pager").is_none(), "the rejected field was stored: {}", profile.text);
}

#[tokio::test]
async fn body_without_path_key_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = field_path(&alice, "displayname");
    server.put(&path, alice.token(), &json!({ "displayname": "Alice" })).await.assert_status(200);

    // The spec: M_MISSING_PARAM when the body lacks the property named by keyName.
    let response =
        server.put(&path, alice.token(), &json!({ "avatar_url": "mxc://localhost/x" })).await;

    response.assert_matrix_error(400, "M_MISSING_PARAM").assert_spec(PROFILE_FIELD);
    let profile = server.get(&profile_path(&alice), alice.token()).await;
    assert_eq!(profile.body["displayname"], json!("Alice"));
    assert!(profile.body.get("avatar_url").is_none(), "avatar_url was stored: {}", profile.text);
}

#[tokio::test]
async fn other_users_profile_read_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_name = field_path(&bob, "displayname");
    server.put(&bob_name, bob.token(), &json!({ "displayname": "Bob" })).await.assert_status(200);

    let response = server.put(&bob_name, alice.token(), &json!({ "displayname": "Mallory" })).await;
    response.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(PROFILE_FIELD);

    let custom = field_path(&bob, "org.example.pager");
    let response = server.put(&custom, alice.token(), &json!({ "org.example.pager": "1" })).await;
    response.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(PROFILE_FIELD);

    let delete = server.delete(&bob_name, alice.token(), None).await;
    delete.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(PROFILE_FIELD);

    let profile = server.get(&profile_path(&bob), bob.token()).await;
    profile.assert_status(200);
    assert_eq!(profile.body["displayname"], json!("Bob"));
    assert!(profile.body.get("org.example.pager").is_none(), "{}", profile.text);
}

#[tokio::test]
async fn unknown_user_profile_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let nobody = encode_path_segment("@nobody:localhost");

    let profile = server.get(&format!("/_matrix/client/v3/profile/{nobody}"), alice.token()).await;
    profile.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(PROFILE);

    let field = server
        .get(&format!("/_matrix/client/v3/profile/{nobody}/displayname"), alice.token())
        .await;
    field.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(PROFILE_FIELD);
}
