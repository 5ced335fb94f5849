//! Error responses: authentication, malformed bodies, body size and unknown routes.

use caduceus_tests::{encode_path_segment, Account, TestServer};
use reqwest::Method;
use serde_json::json;

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

fn account_data_path(account: &Account, event_type: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/account_data/{}",
        account.user_path(),
        encode_path_segment(event_type)
    )
}

fn display_name_path(account: &Account) -> String {
    format!("/_matrix/client/v3/profile/{}/displayname", account.user_path())
}

#[tokio::test]
async fn unknown_token_rejected() {
    let server = TestServer::start().await;

    let response = server.get(WHOAMI, Some("syt_not_a_real_token")).await;

    response.assert_matrix_error(401, "M_UNKNOWN_TOKEN").assert_spec(WHOAMI);
    assert_eq!(response.body["soft_logout"], json!(false), "body: {}", response.text);
}

#[tokio::test]
async fn missing_token_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let requests = [
        (Method::GET, WHOAMI.to_owned()),
        (Method::GET, "/_matrix/client/v3/capabilities".to_owned()),
        (Method::GET, "/_matrix/client/v3/devices".to_owned()),
        (Method::GET, "/_matrix/client/v3/pushrules/".to_owned()),
        (Method::POST, "/_matrix/client/v3/logout".to_owned()),
        (Method::PUT, account_data_path(&alice, "org.caduceus.test.settings")),
        (Method::PUT, display_name_path(&alice)),
    ];
    for (method, path) in requests {
        let body = (method != Method::GET).then(|| json!({ "displayname": "Mallory" }));
        let response = server.request(method, &path, None, body.as_ref()).await;
        response.assert_matrix_error(401, "M_MISSING_TOKEN");
    }

    // The unauthenticated writes changed nothing.
    let stored =
        server.get(&account_data_path(&alice, "org.caduceus.test.settings"), alice.token()).await;
    stored.assert_matrix_error(404, "M_NOT_FOUND");
    server.get(WHOAMI, alice.token()).await.assert_status(200);
    let name = server.get(&display_name_path(&alice), alice.token()).await;
    assert_ne!(name.body["displayname"], json!("Mallory"));
}

#[tokio::test]
async fn malformed_json_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = account_data_path(&alice, "org.caduceus.test.settings");

    let login = server
        .request_bytes(Method::POST, "/_matrix/client/v3/login", None, b"{\"type\": ".to_vec())
        .await;
    login.assert_matrix_error(400, "M_NOT_JSON");

    let put =
        server.request_bytes(Method::PUT, &path, alice.token(), b"{theme: dark}".to_vec()).await;
    put.assert_matrix_error(400, "M_NOT_JSON")
        .assert_spec("/_matrix/client/v3/user/{userId}/account_data/{type}");

    // The spec allows either code for a body that is JSON but not an object.
    let array = server.request_bytes(Method::PUT, &path, alice.token(), b"[1, 2]".to_vec()).await;
    array.assert_status(400).assert_error_shape();
    assert!(
        matches!(array.errcode(), Some("M_BAD_JSON" | "M_NOT_JSON")),
        "a JSON array as account data returned {:?}",
        array.errcode()
    );

    server.get(&path, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn wrong_field_types_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let name_path = display_name_path(&alice);
    let device_path =
        format!("/_matrix/client/v3/devices/{}", encode_path_segment(&alice.device_id));
    server
        .put(&name_path, alice.token(), &json!({ "displayname": "Alice" }))
        .await
        .assert_status(200);
    server
        .put(&device_path, alice.token(), &json!({ "display_name": "Pager" }))
        .await
        .assert_status(200);

    let name = server.put(&name_path, alice.token(), &json!({ "displayname": 42 })).await;
    name.assert_matrix_error(400, "M_BAD_JSON")
        .assert_spec("/_matrix/client/v3/profile/{userId}/{keyName}");

    let device = server.put(&device_path, alice.token(), &json!({ "display_name": 7 })).await;
    device.assert_matrix_error(400, "M_BAD_JSON");

    let login_body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": 123
    });
    let login = server.post("/_matrix/client/v3/login", None, &login_body).await;
    login.assert_matrix_error(400, "M_BAD_JSON");

    let filter_path = format!("/_matrix/client/v3/user/{}/filter", alice.user_path());
    let filter_body = json!({ "room": { "timeline": { "limit": "ten" } } });
    let filter = server.post(&filter_path, alice.token(), &filter_body).await;
    filter.assert_matrix_error(400, "M_BAD_JSON");

    let rule_path = "/_matrix/client/v3/pushrules/global/override/org.caduceus.test.rule";
    let rule = server.put(rule_path, alice.token(), &json!({ "actions": "notify" })).await;
    rule.assert_matrix_error(400, "M_BAD_JSON");

    let stored_name = server.get(&name_path, alice.token()).await;
    assert_eq!(stored_name.body, json!({ "displayname": "Alice" }));
    let stored_device = server.get(&device_path, alice.token()).await;
    assert_eq!(stored_device.body["display_name"], json!("Pager"));
    server.get(rule_path, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn oversized_body_rejected() {
    let limit = 4096;
    let server = TestServer::start_with_env(&[(
        "CADUCEUS__SERVER__MAX_REQUEST_BODY_BYTES",
        &limit.to_string(),
    )])
    .await;
    let alice = server.register("alice").await;
    let path = account_data_path(&alice, "org.caduceus.test.notes");

    let too_large = json!({ "text": "x".repeat(2 * limit) });
    let response = server.put(&path, alice.token(), &too_large).await;
    response.assert_matrix_error(413, "M_TOO_LARGE");
    server.get(&path, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");

    let fits = json!({ "text": "x".repeat(limit / 2) });
    server.put(&path, alice.token(), &fits).await.assert_status(200);
    let stored = server.get(&path, alice.token()).await;
    stored.assert_status(200);
    assert_eq!(stored.body, fits);
}

#[tokio::test]
async fn unknown_endpoint_unrecognized() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let requests = [
        (Method::GET, "/_matrix/client/v3/no_such_endpoint", None),
        (Method::GET, "/_matrix/client/v3/no_such_endpoint", alice.token()),
        (Method::POST, "/_matrix/client/v3/account/no_such_action", alice.token()),
        (Method::GET, "/_matrix/client/unstable/org.example.no_such_feature", None),
        (Method::GET, "/_matrix/no_such_api/v1/thing", None),
        (Method::GET, "/no_such_page", None),
    ];
    for (method, path, token) in requests {
        let body = (method != Method::GET).then(|| json!({}));
        let response = server.request(method, path, token, body.as_ref()).await;
        response.assert_matrix_error(404, "M_UNRECOGNIZED");
    }
}

#[tokio::test]
async fn wrong_method_unrecognized() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let requests = [
        (Method::POST, "/_matrix/client/versions", None),
        (Method::PUT, "/_matrix/client/v3/login", None),
        (Method::DELETE, WHOAMI, alice.token()),
        (Method::GET, "/_matrix/client/v3/logout", alice.token()),
    ];
    for (method, path, token) in requests {
        let body = (method != Method::GET).then(|| json!({}));
        let response = server.request(method, path, token, body.as_ref()).await;
        response.assert_matrix_error(405, "M_UNRECOGNIZED");
    }
    server.get(WHOAMI, alice.token()).await.assert_status(200);
}

#[tokio::test]
async fn wrong_method_lists_allowed() {
    let server = TestServer::start().await;

    // RFC 9110, section 15.5.6: a 405 response MUST carry an Allow header.
    let response = server.post("/_matrix/client/versions", None, &json!({})).await;

    response.assert_status(405);
    let allow = response
        .allow
        .as_deref()
        .unwrap_or_else(|| panic!("405 from POST /_matrix/client/versions has no Allow header"));
    assert!(allow.contains("GET"), "Allow is {allow:?}, which lacks GET");
}
