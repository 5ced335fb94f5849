//! Registration, login, logout, password change and deactivation.

use caduceus_tests::{encode_path_segment, password_auth, uiaa_password, TestServer, PASSWORD};
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::uiaa::{self, AuthType};
use serde_json::json;

const REGISTER: &str = "/_matrix/client/v3/register";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const LOGIN: &str = "/_matrix/client/v3/login";

fn registration_request(localpart: &str) -> register::v3::Request {
    let mut request = register::v3::Request::new();
    request.username = Some(localpart.to_owned());
    request.password = Some(PASSWORD.to_owned());
    request.initial_device_display_name = Some("Ward laptop".to_owned());
    request
}

#[tokio::test]
async fn register_with_token_via_sdk() {
    let server = TestServer::start().await;
    let token = server.create_registration_token(Some(1)).await;
    let client = server.sdk_client().await;

    let error = client
        .matrix_auth()
        .register(registration_request("alice"))
        .await
        .expect_err("registration without auth must return the UIA response");
    let uiaa_info = error.as_uiaa_response().expect("the first response is a 401 UIA response");
    let offers_token =
        uiaa_info.flows.iter().any(|flow| flow.stages.contains(&AuthType::RegistrationToken));
    assert!(offers_token, "no flow has m.login.registration_token: {:?}", uiaa_info.flows);
    let session = uiaa_info.session.clone().expect("the UIA response has a session");

    let mut token_auth = uiaa::RegistrationToken::new(token);
    token_auth.session = Some(session);
    let mut request = registration_request("alice");
    request.auth = Some(uiaa::AuthData::RegistrationToken(token_auth));
    let response =
        client.matrix_auth().register(request).await.expect("registration with the token");

    assert_eq!(response.user_id.as_str(), "@alice:localhost");
    let access_token = response.access_token.expect("registration returns an access token");
    let device_id = response.device_id.expect("registration returns a device ID");

    let whoami = client.whoami().await.expect("whoami with the new session");
    assert_eq!(whoami.user_id, response.user_id);
    assert_eq!(whoami.device_id.as_deref(), Some(&*device_id));

    let raw = server.get(WHOAMI, Some(&access_token)).await;
    raw.assert_status(200).assert_spec(WHOAMI);
    assert_eq!(raw.body["user_id"], json!("@alice:localhost"));
    assert_eq!(raw.body["device_id"], json!(device_id.as_str()));

    let devices = client.devices().await.expect("list devices").devices;
    assert_eq!(devices.len(), 1, "a new account has one device: {devices:?}");
    assert_eq!(devices[0].display_name.as_deref(), Some("Ward laptop"));
}

#[tokio::test]
async fn register_responses_match_spec() {
    let server = TestServer::start().await;
    let token = server.create_registration_token(Some(1)).await;
    let validity_path = format!(
        "/_matrix/client/v1/register/m.login.registration_token/validity?token={}",
        encode_path_segment(&token)
    );
    let validity_template = "/_matrix/client/v1/register/m.login.registration_token/validity";

    let validity = server.get(&validity_path, None).await;
    validity.assert_status(200).assert_spec(validity_template);
    assert_eq!(validity.body["valid"], json!(true), "a new token is valid");

    let mut body = json!({ "username": "bob", "password": PASSWORD });
    let first = server.post(REGISTER, None, &body).await;
    first.assert_status(401).assert_spec(REGISTER);
    let flows = first.body["flows"].as_array().expect("flows is an array");
    let offers_token =
        flows.iter().any(|flow| flow["stages"] == json!(["m.login.registration_token"]));
    assert!(offers_token, "no flow with the single token stage: {}", first.text);
    let session = first.str_field("session").to_owned();
    assert!(!session.is_empty(), "the UIA session ID is empty");

    body["auth"] =
        json!({ "type": "m.login.registration_token", "token": token, "session": session });
    let second = server.post(REGISTER, None, &body).await;
    second.assert_status(200).assert_spec(REGISTER);
    assert_eq!(second.body["user_id"], json!("@bob:localhost"));
    assert!(!second.str_field("access_token").is_empty(), "the access token is empty");
    assert!(!second.str_field("device_id").is_empty(), "the device ID is empty");

    let in_use = server.get("/_matrix/client/v3/register/available?username=bob", None).await;
    in_use
        .assert_matrix_error(400, "M_USER_IN_USE")
        .assert_spec("/_matrix/client/v3/register/available");

    let free = server.get("/_matrix/client/v3/register/available?username=carol", None).await;
    free.assert_status(200).assert_spec("/_matrix/client/v3/register/available");
    assert_eq!(free.body["available"], json!(true));

    let used_up = server.get(&validity_path, None).await;
    used_up.assert_status(200).assert_spec(validity_template);
    assert_eq!(used_up.body["valid"], json!(false), "a token allowed one use was used");
}

#[tokio::test]
async fn register_taken_username_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = server.create_registration_token(Some(1)).await;

    // The server may check the name before or after the token stage; both are spec-compliant.
    let mut body = json!({ "username": "alice", "password": "another password" });
    let mut response = server.post(REGISTER, None, &body).await;
    if response.status == 401 {
        let session = response.str_field("session").to_owned();
        body["auth"] =
            json!({ "type": "m.login.registration_token", "token": token, "session": session });
        response = server.post(REGISTER, None, &body).await;
    }

    response.assert_matrix_error(400, "M_USER_IN_USE").assert_spec(REGISTER);
    server.get(WHOAMI, alice.token()).await.assert_status(200);
    server.login_request("alice", PASSWORD).await.assert_status(200);
    server.login_request("alice", "another password").await.assert_matrix_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn register_invalid_username_rejected() {
    let server = TestServer::start().await;
    let token = server.create_registration_token(Some(1)).await;

    let available =
        server.get("/_matrix/client/v3/register/available?username=dr%20who%3F", None).await;
    available
        .assert_matrix_error(400, "M_INVALID_USERNAME")
        .assert_spec("/_matrix/client/v3/register/available");

    let mut body = json!({ "username": "dr who?", "password": PASSWORD });
    let mut response = server.post(REGISTER, None, &body).await;
    if response.status == 401 {
        let session = response.str_field("session").to_owned();
        body["auth"] =
            json!({ "type": "m.login.registration_token", "token": token, "session": session });
        response = server.post(REGISTER, None, &body).await;
    }
    response.assert_matrix_error(400, "M_INVALID_USERNAME").assert_spec(REGISTER);
}

#[tokio::test]
async fn guest_registration_forbidden() {
    let server = TestServer::start().await;

    let response = server.post("/_matrix/client/v3/register?kind=guest", None, &json!({})).await;

    // The spec's 403 covers "a particular kind of account is not allowed" without fixing the
    // errcode, and both codes below describe the case.
    response.assert_status(403).assert_error_shape().assert_spec(REGISTER);
    assert!(
        matches!(response.errcode(), Some("M_FORBIDDEN" | "M_GUEST_ACCESS_FORBIDDEN")),
        "guest registration returned {:?}",
        response.errcode()
    );
}

#[tokio::test]
async fn registration_disabled_forbidden() {
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__REGISTRATION__TOKEN", "false"),
        ("CADUCEUS__REGISTRATION__OPEN", "false"),
    ])
    .await;

    let body = json!({ "username": "alice", "password": PASSWORD });
    let response = server.post(REGISTER, None, &body).await;
    response.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(REGISTER);
    assert!(server.username_available("alice").await, "a refused registration created alice");

    // The spec's 403 for this endpoint: registration is not permitted, so every token is
    // invalid.
    let validity = server
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", None)
        .await;
    validity
        .assert_matrix_error(403, "M_FORBIDDEN")
        .assert_spec("/_matrix/client/v1/register/m.login.registration_token/validity");
}

#[tokio::test]
async fn open_registration_uses_dummy_stage() {
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__REGISTRATION__TOKEN", "false"),
        ("CADUCEUS__REGISTRATION__OPEN", "true"),
    ])
    .await;

    let mut body = json!({ "username": "alice", "password": PASSWORD });
    let first = server.post(REGISTER, None, &body).await;
    first.assert_status(401).assert_spec(REGISTER);
    let flows = first.body["flows"].as_array().expect("flows is an array");
    assert!(
        flows.iter().any(|flow| flow["stages"] == json!(["m.login.dummy"])),
        "open registration offers no m.login.dummy flow: {}",
        first.text
    );
    assert!(
        flows.iter().all(|flow| !flow["stages"].to_string().contains("m.login.registration_token")),
        "token registration is off, but a flow asks for a token: {}",
        first.text
    );

    body["auth"] = json!({ "type": "m.login.dummy", "session": first.str_field("session") });
    let second = server.post(REGISTER, None, &body).await;
    second.assert_status(200).assert_spec(REGISTER);
    assert_eq!(second.body["user_id"], json!("@alice:localhost"));
}

#[tokio::test]
async fn unknown_registration_token_rejected() {
    let server = TestServer::start().await;

    let response = server.register_with_token("alice", PASSWORD, "no-such-token").await;

    response.assert_status(401).assert_spec(REGISTER);
    assert_eq!(response.errcode(), Some("M_FORBIDDEN"), "body: {}", response.text);
    assert!(server.username_available("alice").await, "a rejected token created alice");
}

#[tokio::test]
async fn login_with_password_via_sdk() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let client = server.sdk_client().await;

    let response = client
        .matrix_auth()
        .login_username("alice", PASSWORD)
        .initial_device_display_name("Pager app")
        .send()
        .await
        .expect("password login");

    assert_eq!(response.user_id.as_str(), alice.user_id);
    assert_ne!(response.device_id.as_str(), alice.device_id, "a login creates a new device");
    let whoami = client.whoami().await.expect("whoami after login");
    assert_eq!(whoami.user_id, response.user_id);
    assert_eq!(whoami.device_id.as_ref(), Some(&response.device_id));

    let raw = server.login_request("@alice:localhost", PASSWORD).await;
    raw.assert_status(200).assert_spec(LOGIN);
    assert_eq!(raw.body["user_id"], json!(alice.user_id), "login with the full user ID");

    let devices = server.get("/_matrix/client/v3/devices", alice.token()).await;
    devices.assert_status(200).assert_spec("/_matrix/client/v3/devices");
    let names: Vec<_> = devices.body["devices"]
        .as_array()
        .expect("devices is an array")
        .iter()
        .map(|device| device["display_name"].clone())
        .collect();
    assert!(names.contains(&json!("Pager app")), "the SDK device is not listed: {names:?}");
}

#[tokio::test]
async fn login_wrong_password_forbidden() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let wrong_password = server.login_request("alice", "not the password").await;
    wrong_password.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(LOGIN);

    let unknown_user = server.login_request("nobody", PASSWORD).await;
    unknown_user.assert_matrix_error(403, "M_FORBIDDEN").assert_spec(LOGIN);

    let devices = server.get("/_matrix/client/v3/devices", alice.token()).await;
    devices.assert_status(200);
    let count = devices.body["devices"].as_array().map(Vec::len);
    assert_eq!(count, Some(1), "a failed login created a device: {}", devices.text);
}

#[tokio::test]
async fn logout_via_sdk_revokes_token() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let client = server.sdk_client().await;
    client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("password login");
    let sdk_token = client.access_token().expect("the SDK holds an access token");
    let sdk_device = client.device_id().expect("the SDK holds a device ID").to_string();

    client.logout().await.expect("logout");

    let revoked = server.get(WHOAMI, Some(&sdk_token)).await;
    revoked.assert_matrix_error(401, "M_UNKNOWN_TOKEN").assert_spec(WHOAMI);
    assert_eq!(revoked.body["soft_logout"], json!(false), "body: {}", revoked.text);
    let devices = server.get("/_matrix/client/v3/devices", alice.token()).await;
    devices.assert_status(200);
    assert!(!devices.text.contains(&sdk_device), "logout left the device: {}", devices.text);
    server.get(WHOAMI, alice.token()).await.assert_status(200);
}

#[tokio::test]
async fn logout_response_matches_spec() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let response = server.post("/_matrix/client/v3/logout", alice.token(), &json!({})).await;

    response.assert_status(200).assert_spec("/_matrix/client/v3/logout");
    server.get(WHOAMI, alice.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn logout_all_revokes_every_token() {
    let server = TestServer::start_with_several_devices().await;
    let first = server.register("alice").await;
    let second = server.login("alice", PASSWORD).await;

    let response = server.post("/_matrix/client/v3/logout/all", second.token(), &json!({})).await;

    response.assert_status(200).assert_spec("/_matrix/client/v3/logout/all");
    server.get(WHOAMI, first.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    server.get(WHOAMI, second.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    let third = server.login("alice", PASSWORD).await;
    let devices = server.get("/_matrix/client/v3/devices", third.token()).await;
    devices.assert_status(200);
    let count = devices.body["devices"].as_array().map(Vec::len);
    assert_eq!(count, Some(1), "logout/all left devices behind: {}", devices.text);
}

#[tokio::test]
async fn password_change_requires_uia() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let other_session = server.login("alice", PASSWORD).await;
    let path = "/_matrix/client/v3/account/password";
    let new_password = "a brand new passphrase";

    let mut body = json!({ "new_password": new_password });
    let challenge = server.post(path, alice.token(), &body).await;
    challenge.assert_status(401).assert_spec(path);
    let flows = challenge.body["flows"].as_array().expect("flows is an array");
    assert!(
        flows.iter().any(|flow| flow["stages"] == json!(["m.login.password"])),
        "no m.login.password flow: {}",
        challenge.text
    );
    let session = challenge.str_field("session").to_owned();

    body["auth"] = password_auth("alice", "not the password", Some(&session));
    let wrong = server.post(path, alice.token(), &body).await;
    wrong.assert_status(401).assert_spec(path);
    assert_eq!(wrong.errcode(), Some("M_FORBIDDEN"), "body: {}", wrong.text);
    server.get(WHOAMI, other_session.token()).await.assert_status(200);

    body["auth"] = password_auth("alice", PASSWORD, Some(&session));
    server.post(path, alice.token(), &body).await.assert_status(200).assert_spec(path);

    // The spec: the server SHOULD NOT revoke the token of the request, and `logout_devices`
    // defaults to true, which revokes every other token.
    server.get(WHOAMI, alice.token()).await.assert_status(200);
    server.get(WHOAMI, other_session.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    server.login_request("alice", PASSWORD).await.assert_matrix_error(403, "M_FORBIDDEN");
    server.login_request("alice", new_password).await.assert_status(200);
}

#[tokio::test]
async fn deactivation_blocks_login() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = "/_matrix/client/v3/account/deactivate";

    let challenge = server.post(path, alice.token(), &json!({})).await;
    challenge.assert_status(401).assert_spec(path);
    let session = challenge.str_field("session").to_owned();

    let body = json!({ "auth": password_auth("alice", PASSWORD, Some(&session)) });
    let response = server.post(path, alice.token(), &body).await;
    response.assert_status(200).assert_spec(path);

    server.get(WHOAMI, alice.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    let login = server.login_request("alice", PASSWORD).await;
    login.assert_status(403).assert_error_shape().assert_spec(LOGIN);
    // The spec allows M_FORBIDDEN when the server can no longer check the password.
    assert!(
        matches!(login.errcode(), Some("M_USER_DEACTIVATED" | "M_FORBIDDEN")),
        "login of a deactivated account returned {:?}",
        login.errcode()
    );
}

#[tokio::test]
async fn deactivation_via_sdk_with_password() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let client = server.sdk_client().await;
    client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("password login");
    let token = client.access_token().expect("the SDK holds an access token");

    let error = client
        .account()
        .deactivate(None, None, false)
        .await
        .expect_err("deactivation without auth must return the UIA response");
    let session = error.as_uiaa_response().and_then(|info| info.session.clone());
    assert!(session.is_some(), "the deactivation UIA response has no session: {error:?}");

    client
        .account()
        .deactivate(None, Some(uiaa_password("alice", PASSWORD, session)), false)
        .await
        .expect("deactivation with the password");

    server.get(WHOAMI, Some(&token)).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
}
