//! Device and session policy: one primary device per account, sessions linked with a login
//! token that end after a fixed time, and refresh tokens.

use std::time::{Duration, Instant};

use caduceus_tests::{
    encode_path_segment, password_auth, Account, ApiResponse, TestServer, PASSWORD,
};
use serde_json::{json, Value};

const LOGIN: &str = "/_matrix/client/v3/login";
const GET_TOKEN: &str = "/_matrix/client/v1/login/get_token";
const REFRESH: &str = "/_matrix/client/v3/refresh";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const DEVICES: &str = "/_matrix/client/v3/devices";
const CAPABILITIES: &str = "/_matrix/client/v3/capabilities";

async fn device_ids(server: &TestServer, account: &Account) -> Vec<String> {
    let response = server.get(DEVICES, account.token()).await;
    response.assert_status(200).assert_spec(DEVICES);
    let devices = response.body["devices"].as_array().expect("devices is an array");
    devices.iter().map(|device| device["device_id"].as_str().unwrap().to_owned()).collect()
}

/// Requests a login token from `account`'s device, confirming the password through UIA.
async fn get_login_token(server: &TestServer, account: &Account) -> ApiResponse {
    let challenge = server.post(GET_TOKEN, account.token(), &json!({})).await;
    challenge.assert_status(401).assert_spec(GET_TOKEN);
    let session = challenge.str_field("session").to_owned();
    let body = json!({ "auth": password_auth(&account.localpart, PASSWORD, Some(&session)) });
    server.post(GET_TOKEN, account.token(), &body).await
}

async fn login_with_token(server: &TestServer, token: &str, extra: Value) -> ApiResponse {
    let mut body = json!({ "type": "m.login.token", "token": token });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    server.post(LOGIN, None, &body).await
}

/// Links a new session to `primary` with a login token and returns it.
async fn link_session(server: &TestServer, primary: &Account) -> Account {
    let token = get_login_token(server, primary).await;
    token.assert_status(200);
    let response = login_with_token(server, token.str_field("login_token"), json!({})).await;
    response.assert_status(200).assert_spec(LOGIN);
    Account {
        localpart: primary.localpart.clone(),
        user_id: response.str_field("user_id").to_owned(),
        password: PASSWORD.to_owned(),
        access_token: response.str_field("access_token").to_owned(),
        device_id: response.str_field("device_id").to_owned(),
    }
}

fn capability_enabled(response: &ApiResponse) -> Value {
    response.body["capabilities"]["m.get_login_token"]["enabled"].clone()
}

/// Polls `/devices` until `device_id` is gone, for at most `limit`.
async fn wait_until_device_gone(
    server: &TestServer,
    account: &Account,
    device_id: &str,
    limit: Duration,
) {
    let started = Instant::now();
    while device_ids(server, account).await.iter().any(|id| id == device_id) {
        assert!(started.elapsed() < limit, "device {device_id} still listed after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn second_password_login_signs_first_out() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    // Bob shares a room with alice, so he hears of her device-list changes.
    let room = server.post("/_matrix/client/v3/createRoom", alice.token(), &json!({})).await;
    let room_id = room.assert_status(200).str_field("room_id").to_owned();
    let room_path = encode_path_segment(&room_id);
    let invite = format!("/_matrix/client/v3/rooms/{room_path}/invite");
    server
        .post(&invite, alice.token(), &json!({ "user_id": bob.user_id }))
        .await
        .assert_status(200);
    let join = format!("/_matrix/client/v3/rooms/{room_path}/join");
    server.post(&join, bob.token(), &json!({})).await.assert_status(200);
    let sync = server.get("/_matrix/client/v3/sync", bob.token()).await;
    let since = sync.assert_status(200).str_field("next_batch").to_owned();

    let login = server.login_request("alice", PASSWORD).await;
    login.assert_status(200).assert_spec(LOGIN);
    let phone = server.login("alice", PASSWORD).await;
    // The login just above replaced the one before it; the registration device went first.
    let whoami = server.get(WHOAMI, alice.token()).await;
    whoami.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(whoami.body["soft_logout"], json!(false), "body: {}", whoami.text);
    let replaced = server.get(WHOAMI, Some(login.str_field("access_token"))).await;
    replaced.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(device_ids(&server, &phone).await, vec![phone.device_id.clone()]);

    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=5000");
    let changes = server.get(&path, bob.token()).await;
    changes.assert_status(200).assert_spec("/_matrix/client/v3/sync");
    let changed = &changes.body["device_lists"]["changed"];
    assert!(
        changed.as_array().is_some_and(|users| users.contains(&json!(alice.user_id))),
        "bob did not hear of alice's device change: {}",
        changes.text
    );

    // Logging in again on the primary device's ID keeps that device.
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
        "device_id": phone.device_id,
    });
    let again = server.post(LOGIN, None, &body).await;
    again.assert_status(200).assert_spec(LOGIN);
    assert_eq!(again.str_field("device_id"), phone.device_id);
    let token = again.str_field("access_token");
    server.get(WHOAMI, Some(token)).await.assert_status(200);
    let devices = server.get(DEVICES, Some(token)).await;
    let listed = devices.body["devices"].as_array().map(Vec::len);
    assert_eq!(listed, Some(1), "devices: {}", devices.text);

    let audit = server.admin_ok(&["audit-log", "--limit", "50"]).await.stdout;
    assert!(audit.contains("primary_device_replaced"), "{audit}");
    assert!(audit.contains(&alice.device_id), "the replaced device is not named: {audit}");
}

#[tokio::test]
async fn several_password_devices_when_configured() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", PASSWORD).await;

    server.get(WHOAMI, alice.token()).await.assert_status(200);
    server.get(WHOAMI, phone.token()).await.assert_status(200);
    assert_eq!(device_ids(&server, &phone).await.len(), 2);
}

#[tokio::test]
async fn linked_session_works_then_expires() {
    let server =
        TestServer::start_with_env(&[("CADUCEUS__SESSIONS__LINKED_SESSION_LIFETIME_SECS", "2")])
            .await;
    let alice = server.register("alice").await;

    let flows = server.get(LOGIN, None).await;
    flows.assert_status(200).assert_spec(LOGIN);
    assert!(
        flows.body["flows"]
            .as_array()
            .unwrap()
            .contains(&json!({ "type": "m.login.token", "get_login_token": true })),
        "no m.login.token flow with get_login_token: {}",
        flows.text
    );
    let capabilities = server.get(CAPABILITIES, alice.token()).await;
    capabilities.assert_status(200).assert_spec(CAPABILITIES);
    assert_eq!(capability_enabled(&capabilities), json!(true));

    let token = get_login_token(&server, &alice).await;
    token.assert_status(200).assert_spec(GET_TOKEN);
    assert_eq!(token.body["expires_in_ms"], json!(120_000));
    let started = Instant::now();
    let login = login_with_token(&server, token.str_field("login_token"), json!({})).await;
    login.assert_status(200).assert_spec(LOGIN);
    assert_eq!(login.str_field("user_id"), alice.user_id);
    let expires_in = login.body["expires_in_ms"].as_u64().expect("expires_in_ms is set");
    assert!(expires_in > 0, "expires_in_ms: {expires_in}");
    assert!(expires_in <= 2000, "expires_in_ms: {expires_in}");
    let laptop = Account {
        localpart: "alice".to_owned(),
        user_id: alice.user_id.clone(),
        password: PASSWORD.to_owned(),
        access_token: login.str_field("access_token").to_owned(),
        device_id: login.str_field("device_id").to_owned(),
    };

    // The linked session does not replace the primary device.
    server.get(WHOAMI, laptop.token()).await.assert_status(200);
    server.get(WHOAMI, alice.token()).await.assert_status(200);
    let mut listed = device_ids(&server, &alice).await;
    listed.sort();
    let mut expected = vec![alice.device_id.clone(), laptop.device_id.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    let until_end = Duration::from_millis(2100).saturating_sub(started.elapsed());
    tokio::time::sleep(until_end).await;
    let ended = server.get(WHOAMI, laptop.token()).await;
    ended.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(ended.body["soft_logout"], json!(false), "body: {}", ended.text);
    wait_until_device_gone(&server, &alice, &laptop.device_id, Duration::from_secs(5)).await;
    server.get(WHOAMI, alice.token()).await.assert_status(200);

    let audit = server.admin_ok(&["audit-log", "--limit", "50"]).await.stdout;
    for kind in ["login_token_issued", "session_expired", "\"linked\""] {
        assert!(audit.contains(kind), "the audit log lacks {kind:?}:\n{audit}");
    }
    let login_token = token.str_field("login_token");
    assert!(!audit.contains(login_token), "the audit log contains the login token:\n{audit}");
    assert!(!audit.contains(&laptop.access_token), "the audit log contains a token:\n{audit}");
}

#[tokio::test]
async fn get_token_refused_for_linked_session() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let laptop = link_session(&server, &alice).await;

    let capabilities = server.get(CAPABILITIES, laptop.token()).await;
    capabilities.assert_status(200).assert_spec(CAPABILITIES);
    assert_eq!(capability_enabled(&capabilities), json!(false));

    let refused = server.post(GET_TOKEN, laptop.token(), &json!({})).await;
    refused.assert_matrix_error(403, "M_FORBIDDEN");
    assert!(refused.str_field("error").contains("primary device"), "body: {}", refused.text);

    // A linked login cannot take over the primary device's ID either.
    let token = get_login_token(&server, &alice).await;
    let body = json!({ "device_id": alice.device_id });
    let takeover = login_with_token(&server, token.str_field("login_token"), body).await;
    takeover.assert_matrix_error(403, "M_FORBIDDEN");
    server.get(WHOAMI, alice.token()).await.assert_status(200);
}

#[tokio::test]
async fn login_token_single_use_and_expiry() {
    let server =
        TestServer::start_with_env(&[("CADUCEUS__SESSIONS__LOGIN_TOKEN_LIFETIME_SECS", "1")]).await;
    let alice = server.register("alice").await;

    let token = get_login_token(&server, &alice).await;
    token.assert_status(200).assert_spec(GET_TOKEN);
    assert_eq!(token.body["expires_in_ms"], json!(1000));
    let login_token = token.str_field("login_token").to_owned();
    login_with_token(&server, &login_token, json!({})).await.assert_status(200);
    let reused = login_with_token(&server, &login_token, json!({})).await;
    reused.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(LOGIN);

    let token = get_login_token(&server, &alice).await;
    token.assert_status(200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = login_with_token(&server, token.str_field("login_token"), json!({})).await;
    expired.assert_matrix_error(403, "M_FORBIDDEN");

    let unknown = login_with_token(&server, "cadl_not-a-token", json!({})).await;
    unknown.assert_matrix_error(403, "M_FORBIDDEN");

    // Each token needs a fresh password confirmation.
    let wrong = json!({ "auth": password_auth("alice", "not the password", None) });
    let refused = server.post(GET_TOKEN, alice.token(), &wrong).await;
    refused.assert_status(401).assert_spec(GET_TOKEN);
    assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "body: {}", refused.text);
    assert!(refused.body.get("login_token").is_none(), "body: {}", refused.text);
}

#[tokio::test]
async fn refresh_rotates_tokens() {
    let server =
        TestServer::start_with_env(&[("CADUCEUS__SESSIONS__ACCESS_TOKEN_LIFETIME_SECS", "2")])
            .await;
    server.register("alice").await;

    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
        "refresh_token": true,
    });
    let login = server.post(LOGIN, None, &body).await;
    login.assert_status(200).assert_spec(LOGIN);
    let first_access = login.str_field("access_token").to_owned();
    let first_refresh = login.str_field("refresh_token").to_owned();
    let expires_in = login.body["expires_in_ms"].as_u64().expect("expires_in_ms is set");
    assert!(expires_in > 0, "expires_in_ms: {expires_in}");
    assert!(expires_in <= 2000, "expires_in_ms: {expires_in}");

    let refreshed = server.post(REFRESH, None, &json!({ "refresh_token": first_refresh })).await;
    refreshed.assert_status(200).assert_spec(REFRESH);
    let lost_access = refreshed.str_field("access_token").to_owned();
    assert_ne!(refreshed.str_field("refresh_token"), first_refresh);
    assert!(refreshed.body["expires_in_ms"].as_u64().is_some(), "body: {}", refreshed.text);
    server.get(WHOAMI, Some(&first_access)).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");

    // Until the new tokens are used, the old refresh token still works (the response may have
    // been lost), and using it revokes the tokens of the lost response.
    let retried = server.post(REFRESH, None, &json!({ "refresh_token": first_refresh })).await;
    retried.assert_status(200).assert_spec(REFRESH);
    server.get(WHOAMI, Some(&lost_access)).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    let access = retried.str_field("access_token").to_owned();
    let refresh = retried.str_field("refresh_token").to_owned();
    server.get(WHOAMI, Some(&access)).await.assert_status(200);
    let stale = server.post(REFRESH, None, &json!({ "refresh_token": first_refresh })).await;
    stale.assert_matrix_error(401, "M_UNKNOWN_TOKEN").assert_spec(REFRESH);

    // An expired access token is a soft logout; refreshing brings the session back.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = server.get(WHOAMI, Some(&access)).await;
    expired.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], json!(true), "body: {}", expired.text);
    let v1 =
        server.post("/_matrix/client/v1/refresh", None, &json!({ "refresh_token": refresh })).await;
    v1.assert_status(200);
    server.get(WHOAMI, Some(v1.str_field("access_token"))).await.assert_status(200);

    let unknown = server.post(REFRESH, None, &json!({ "refresh_token": "cadr_unknown" })).await;
    unknown.assert_matrix_error(401, "M_UNKNOWN_TOKEN").assert_spec(REFRESH);
    assert_eq!(unknown.body["soft_logout"], json!(false), "body: {}", unknown.text);
}

#[tokio::test]
async fn registration_returns_refresh_token() {
    let server = TestServer::start().await;
    let token = server.create_registration_token(Some(1)).await;
    let mut body = json!({ "username": "alice", "password": PASSWORD, "refresh_token": true });
    let session = server.uia_session("/_matrix/client/v3/register", None, &body).await;
    body["auth"] =
        json!({ "type": "m.login.registration_token", "token": token, "session": session });

    let response = server.post("/_matrix/client/v3/register", None, &body).await;
    response.assert_status(200).assert_spec("/_matrix/client/v3/register");
    assert_eq!(response.body["expires_in_ms"], json!(3_600_000));
    let refresh_token = response.str_field("refresh_token");
    let refreshed = server.post(REFRESH, None, &json!({ "refresh_token": refresh_token })).await;
    refreshed.assert_status(200).assert_spec(REFRESH);
    server.get(WHOAMI, Some(refreshed.str_field("access_token"))).await.assert_status(200);
}

#[tokio::test]
async fn refresh_cannot_outlive_linked_session() {
    let server =
        TestServer::start_with_env(&[("CADUCEUS__SESSIONS__LINKED_SESSION_LIFETIME_SECS", "2")])
            .await;
    let alice = server.register("alice").await;
    let token = get_login_token(&server, &alice).await;
    token.assert_status(200);

    let login =
        login_with_token(&server, token.str_field("login_token"), json!({ "refresh_token": true }))
            .await;
    login.assert_status(200).assert_spec(LOGIN);
    let started = Instant::now();
    let refresh_token = login.str_field("refresh_token").to_owned();
    let refreshed = server.post(REFRESH, None, &json!({ "refresh_token": refresh_token })).await;
    refreshed.assert_status(200).assert_spec(REFRESH);
    let expires_in = refreshed.body["expires_in_ms"].as_u64().expect("expires_in_ms is set");
    assert!(expires_in <= 2000, "a refresh extended the linked session: {expires_in} ms");

    let until_end = Duration::from_millis(2100).saturating_sub(started.elapsed());
    tokio::time::sleep(until_end).await;
    let refresh_token = refreshed.str_field("refresh_token");
    let after_end = server.post(REFRESH, None, &json!({ "refresh_token": refresh_token })).await;
    after_end.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    let ended = server.get(WHOAMI, Some(refreshed.str_field("access_token"))).await;
    ended.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(ended.body["soft_logout"], json!(false), "body: {}", ended.text);
}

#[tokio::test]
async fn sdk_logs_in_with_login_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = get_login_token(&server, &alice).await;
    token.assert_status(200);

    let client = server.sdk_client().await;
    client
        .matrix_auth()
        .login_token(token.str_field("login_token"))
        .initial_device_display_name("Ward workstation")
        .send()
        .await
        .expect("login with the login token");
    let whoami = client.whoami().await.expect("whoami on the linked session");
    assert_eq!(whoami.user_id.as_str(), alice.user_id);
    server.get(WHOAMI, alice.token()).await.assert_status(200);
}
