//! Server discovery: versions, .well-known, capabilities and the login types.

use caduceus_tests::TestServer;
use matrix_sdk::ruma::api::MatrixVersion;
use serde_json::json;

#[tokio::test]
async fn versions_advertise_v1_16() {
    let server = TestServer::start().await;

    let response = server.get("/_matrix/client/versions", None).await;

    response.assert_status(200).assert_spec("/_matrix/client/versions");
    let versions = response.body["versions"].as_array().expect("versions is an array");
    assert!(versions.contains(&json!("v1.16")), "v1.16 is not advertised: {}", response.text);
}

#[tokio::test]
async fn well_known_client_points_at_server() {
    let server = TestServer::start().await;

    let response = server.get("/.well-known/matrix/client", None).await;

    response.assert_status(200).assert_spec("/.well-known/matrix/client");
    let base_url = response.body["m.homeserver"]["base_url"]
        .as_str()
        .expect("m.homeserver.base_url is a string");
    assert_eq!(base_url.trim_end_matches('/'), server.base_url());
}

#[tokio::test]
async fn well_known_server_names_delegate() {
    let server = TestServer::start().await;

    // This endpoint belongs to the Server-Server API, which the stored spec does not cover,
    // so the check is written out: `m.server` is a server name with an optional port.
    let response = server.get("/.well-known/matrix/server", None).await;

    response.assert_status(200);
    let delegate = response.body["m.server"].as_str().unwrap_or_else(|| {
        panic!("/.well-known/matrix/server has no m.server string: {}", response.text)
    });
    assert!(!delegate.is_empty(), "m.server is empty");
    assert!(!delegate.contains("://"), "m.server {delegate:?} must not contain a URL scheme");
}

#[tokio::test]
async fn capabilities_allow_password_change() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let response = server.get("/_matrix/client/v3/capabilities", alice.token()).await;

    response.assert_status(200).assert_spec("/_matrix/client/v3/capabilities");
    assert_eq!(
        response.body["capabilities"]["m.change_password"]["enabled"],
        json!(true),
        "POST /account/password is implemented, so m.change_password must be enabled: {}",
        response.text
    );
}

#[tokio::test]
async fn login_types_offer_password() {
    let server = TestServer::start().await;

    let response = server.get("/_matrix/client/v3/login", None).await;

    response.assert_status(200).assert_spec("/_matrix/client/v3/login");
    let flows = response.body["flows"].as_array().expect("flows is an array");
    let has_password = flows.iter().any(|flow| flow["type"] == json!("m.login.password"));
    assert!(has_password, "GET /login does not offer m.login.password: {}", response.text);
}

#[tokio::test]
async fn oauth_metadata_not_offered() {
    let server = TestServer::start().await;

    // The spec: a server without the OAuth 2.0 API SHOULD respond 404 M_UNRECOGNIZED here, which
    // directs clients to the legacy login API.
    let response = server.get("/_matrix/client/v1/auth_metadata", None).await;

    response.assert_matrix_error(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn sdk_parses_v1_16() {
    let server = TestServer::start().await;
    let client = server.sdk_client().await;

    let versions = client.server_versions().await.expect("matrix-sdk fetches /versions");

    assert!(
        versions.contains(&MatrixVersion::V1_16),
        "matrix-sdk did not find v1.16 among {versions:?}"
    );
}
