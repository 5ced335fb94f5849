//! Login protection and the audit log: lockouts after wrong passwords, the limit per source
//! address, and security events recorded without secrets.

use std::time::Duration;

use caduceus_tests::{TestServer, PASSWORD};
use serde_json::json;

const WRONG: &str = "not the password";

#[tokio::test]
async fn lockouts_grow_and_survive_restart() {
    let mut server = TestServer::start_with_env(&[
        ("CADUCEUS__SECURITY__FIRST_LOCKOUT_SECS", "3"),
        ("CADUCEUS__SECURITY__LATER_LOCKOUT_SECS", "600"),
        ("CADUCEUS__SECURITY__FAILED_LOGINS_PER_ADDRESS_PER_MINUTE", "0"),
    ])
    .await;
    server.register("alice").await;

    server.login_request("alice", WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    server.login_request("alice", WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    let locked = server.login_request("alice", WRONG).await;
    locked.assert_matrix_error(429, "M_LIMIT_EXCEEDED");
    let retry = locked.body["retry_after_ms"].as_u64().expect("retry_after_ms is set");
    assert!(retry > 0, "a locked account reports a delay: {retry}");
    assert!(retry <= 3000, "the first lockout lasts 3 s here: {retry}");

    // While locked, even the right password is rejected, and the Retry-After header gives the delay.
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/login", server.base_url()))
        .json(&json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));

    // After the first lockout, three more wrong passwords lock for the longer time.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    server.login_request("alice", WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    server.login_request("alice", WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    let second = server.login_request("alice", WRONG).await;
    second.assert_matrix_error(429, "M_LIMIT_EXCEEDED");
    let retry = second.body["retry_after_ms"].as_u64().unwrap();
    assert!(retry > 500_000, "the second lockout lasts 600 s here: {retry}");

    // The lockout is stored, so a restart does not lift it.
    server.kill_9();
    server.restart().await;
    server.login_request("alice", PASSWORD).await.assert_matrix_error(429, "M_LIMIT_EXCEEDED");

    // Attempts on the locked account are in the audit log, one per attempt, none from the
    // earlier wrong passwords.
    let output = server.admin_ok(&["audit-log", "--limit", "100"]).await.stdout;
    let refused = output.lines().filter(|line| line.contains("login_refused_locked")).count();
    assert_eq!(refused, 2, "two logins were refused while locked:\n{output}");
    assert!(
        output
            .lines()
            .filter(|line| line.contains("login_refused_locked"))
            .all(|line| line.contains("user=@alice:localhost")),
        "{output}"
    );

    // An administrator lifts the lockout, which is audited too.
    let unlocked = server.admin_ok(&["unlock", "alice"]).await.stdout;
    assert!(unlocked.contains("unlocked @alice:localhost"), "{unlocked}");
    server.login_request("alice", PASSWORD).await.assert_status(200);
    let again = server.admin_ok(&["unlock", "alice"]).await.stdout;
    assert!(again.contains("was not locked"), "{again}");
    let output = server.admin_ok(&["audit-log", "--limit", "5"]).await.stdout;
    assert!(output.contains("account_unlocked\tuser=@alice:localhost"), "{output}");
}

#[tokio::test]
async fn success_resets_failure_count() {
    let server = TestServer::start_with_env(&[(
        "CADUCEUS__SECURITY__FAILED_LOGINS_PER_ADDRESS_PER_MINUTE",
        "0",
    )])
    .await;
    server.register("bob").await;
    for _ in 0..2 {
        server.login_request("bob", WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    }
    server.login_request("bob", PASSWORD).await.assert_status(200);
    for _ in 0..2 {
        server.login_request("bob", WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    }
    server.login_request("bob", PASSWORD).await.assert_status(200);
}

#[tokio::test]
async fn address_limit_slows_spraying() {
    let server = TestServer::start_with_env(&[(
        "CADUCEUS__SECURITY__FAILED_LOGINS_PER_ADDRESS_PER_MINUTE",
        "3",
    )])
    .await;
    for name in ["carol", "dave", "erin", "frank"] {
        server.register(name).await;
    }
    // One wrong password on each of three accounts uses up the address's allowance.
    for name in ["carol", "dave", "erin"] {
        server.login_request(name, WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    }
    let blocked = server.login_request("frank", WRONG).await;
    blocked.assert_matrix_error(429, "M_LIMIT_EXCEEDED");
    assert!(blocked.body["retry_after_ms"].as_u64().is_some());
}

#[tokio::test]
async fn unknown_email_counts_against_address() {
    let server = TestServer::start_with_env(&[(
        "CADUCEUS__SECURITY__FAILED_LOGINS_PER_ADDRESS_PER_MINUTE",
        "2",
    )])
    .await;
    let by_email = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "nobody@hospital.example" },
        "password": WRONG,
    });
    for _ in 0..2 {
        let response = server.post("/_matrix/client/v3/login", None, &by_email).await;
        response.assert_matrix_error(403, "M_FORBIDDEN");
    }
    let blocked = server.post("/_matrix/client/v3/login", None, &by_email).await;
    blocked.assert_matrix_error(429, "M_LIMIT_EXCEEDED");

    let output = server.admin_ok(&["audit-log", "--limit", "50"]).await.stdout;
    let failed: Vec<&str> = output.lines().filter(|line| line.contains("login_failed")).collect();
    assert_eq!(failed.len(), 2, "each unknown-email login is audited:\n{output}");
    assert!(failed.iter().all(|line| line.contains("unknown user")), "{output}");
    assert!(!output.contains("user=@:localhost"), "no empty user ID is logged:\n{output}");
    assert!(!output.contains("nobody@hospital.example"), "the address is not logged:\n{output}");
}

#[tokio::test]
async fn audit_log_records_events_without_secrets() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.login_request("alice", WRONG).await.assert_matrix_error(403, "M_FORBIDDEN");
    let session = server.login("alice", PASSWORD).await;

    let output = server.admin_ok(&["audit-log", "--limit", "50"]).await.stdout;
    for kind in ["registration", "login_failed", "\tlogin\t", "admin_command"] {
        assert!(output.contains(kind), "the audit log lacks {kind:?}:\n{output}");
    }
    assert!(output.contains("user=@alice:localhost"), "{output}");
    for secret in [PASSWORD, WRONG, alice.access_token.as_str(), session.access_token.as_str()] {
        assert!(!output.contains(secret), "the audit log contains a secret:\n{output}");
    }
}
