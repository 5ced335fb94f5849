//! The admin CLI (`caduceus admin ...`), run while the server is running.

use caduceus_tests::{encode_path_segment, TestServer, PASSWORD};
use serde_json::json;

const REGISTER: &str = "/_matrix/client/v3/register";

async fn token_is_valid(server: &TestServer, token: &str) -> bool {
    let path = format!(
        "/_matrix/client/v1/register/m.login.registration_token/validity?token={}",
        encode_path_segment(token)
    );
    let response = server.get(&path, None).await;
    response.assert_status(200);
    response.body["valid"].as_bool().unwrap_or_else(|| {
        panic!("the validity response has no boolean `valid`: {}", response.text)
    })
}

#[tokio::test]
async fn single_use_token_works_once() {
    let server = TestServer::start().await;

    let token = server.create_registration_token(Some(1)).await;

    // The spec: tokens use the opaque identifier grammar and are at most 64 characters long.
    assert!(token.len() <= 64, "the token is {} characters long", token.len());
    let opaque = token.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c));
    assert!(opaque, "the token {token:?} has characters outside [A-Za-z0-9._~-]");

    server.register_with_token("alice", PASSWORD, &token).await.assert_status(200);

    let second = server.register_with_token("bob", PASSWORD, &token).await;
    second.assert_status(401).assert_spec(REGISTER);
    assert_eq!(second.errcode(), Some("M_FORBIDDEN"), "body: {}", second.text);
    let completed = second.body["completed"].to_string();
    assert!(
        !completed.contains("m.login.registration_token"),
        "the used-up token completed the stage: {}",
        second.text
    );
    assert!(server.username_available("bob").await, "a used-up token created bob");
    assert!(!token_is_valid(&server, &token).await, "a used-up token is reported valid");
}

#[tokio::test]
async fn unlimited_token_works_twice() {
    let server = TestServer::start().await;

    let token = server.create_registration_token(None).await;

    server.register_with_token("alice", PASSWORD, &token).await.assert_status(200);
    server.register_with_token("bob", PASSWORD, &token).await.assert_status(200);
    assert!(token_is_valid(&server, &token).await, "a token without a limit was used up");
}

#[tokio::test]
async fn token_list_and_revoke() {
    let server = TestServer::start().await;
    let revoked = server.create_registration_token(None).await;
    let still_valid = server.create_registration_token(Some(5)).await;

    let list = server.admin_ok(&["registration-token", "list"]).await;
    for token in [&revoked, &still_valid] {
        let lines = list.stdout.lines().filter(|line| line.contains(token.as_str())).count();
        assert_eq!(
            lines, 1,
            "`registration-token list` shows {token} on {lines} lines:\n{}",
            list.stdout
        );
    }

    server.admin_ok(&["registration-token", "revoke", &revoked]).await;

    assert!(!token_is_valid(&server, &revoked).await, "a revoked token is reported valid");
    assert!(token_is_valid(&server, &still_valid).await, "revoking one token invalidated another");
    let response = server.register_with_token("alice", PASSWORD, &revoked).await;
    response.assert_status(401).assert_spec(REGISTER);
    assert_eq!(response.errcode(), Some("M_FORBIDDEN"), "body: {}", response.text);
    assert!(server.username_available("alice").await, "a revoked token created alice");
    server.register_with_token("alice", PASSWORD, &still_valid).await.assert_status(200);
}

#[tokio::test]
async fn revoking_unknown_token_fails() {
    let server = TestServer::start().await;

    let output = server.admin(&["registration-token", "revoke", "no-such-token"]).await;

    assert!(!output.status.success(), "revoking an unknown token succeeded: {output:?}");
    assert!(!output.stderr.trim().is_empty(), "the failure printed no message on stderr");
}

#[tokio::test]
async fn create_user_then_login() {
    let server = TestServer::start().await;

    server.admin_ok(&["create-user", "carol", "--password", PASSWORD]).await;

    let carol = server.login("carol", PASSWORD).await;
    assert_eq!(carol.user_id, "@carol:localhost");
    let whoami = server.get("/_matrix/client/v3/account/whoami", carol.token()).await;
    assert_eq!(whoami.body["user_id"], json!("@carol:localhost"));

    let again = server.admin(&["create-user", "carol", "--password", "another password"]).await;
    assert!(!again.status.success(), "creating carol twice succeeded: {again:?}");
    server.login_request("carol", PASSWORD).await.assert_status(200);
    server.login_request("carol", "another password").await.assert_matrix_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn create_admin_user_then_login() {
    let server = TestServer::start().await;

    server.admin_ok(&["create-user", "dave", "--password", PASSWORD, "--admin"]).await;

    let dave = server.login("dave", PASSWORD).await;
    assert_eq!(dave.user_id, "@dave:localhost");
    assert!(!server.username_available("dave").await, "dave is not registered");

    let audit = server.admin_ok(&["audit-log"]).await.stdout;
    let created = audit
        .lines()
        .find(|line| line.contains("registration\tuser=@dave:localhost"))
        .unwrap_or_else(|| panic!("the account made with the CLI is not audited:\n{audit}"));
    assert!(created.contains(r#""method":"admin_cli""#), "{created}");
    assert!(created.contains(r#""admin":true"#), "{created}");
}
