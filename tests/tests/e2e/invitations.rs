//! POST /_caduceus/client/v1/invitations: verified members invite colleagues by email with a
//! single-use registration token.

use caduceus_tests::{SmtpServer, TestServer, PASSWORD};
use serde_json::json;

const INVITATIONS: &str = "/_caduceus/client/v1/invitations";

/// Returns the tokens that `registration-token list` shows, with their list line.
async fn registration_tokens(server: &TestServer) -> Vec<(String, String)> {
    let output = server.admin_ok(&["registration-token", "list"]).await.stdout;
    output
        .lines()
        .filter(|line| line.contains('\t'))
        .map(|line| (line.split('\t').next().unwrap_or_default().to_owned(), line.to_owned()))
        .collect()
}

#[tokio::test]
async fn pending_members_cannot_invite() {
    let server = TestServer::start().await;
    let alice = server.register_pending("alice").await;

    let response =
        server.post(INVITATIONS, alice.token(), &json!({ "email": "jan@umc.example" })).await;
    response.assert_matrix_error(403, "M_FORBIDDEN");
    assert!(
        response.str_field("error").contains("Only verified members can invite colleagues"),
        "{}",
        response.text
    );
    server
        .post(INVITATIONS, None, &json!({ "email": "jan@umc.example" }))
        .await
        .assert_matrix_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn verified_member_invites_colleague() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_mail(&smtp, &[]).await;
    let alice = server.register("alice").await;
    server.admin_ok(&["set-verification", &alice.user_id, "--level", "identity"]).await;
    let tokens_before = registration_tokens(&server).await;

    let bad_inputs = [
        (json!({ "email": "not an address" }), 400, "M_INVALID_PARAM"),
        (json!({ "email": 42 }), 400, "M_BAD_JSON"),
        (json!({}), 400, "M_MISSING_PARAM"),
    ];
    for (body, status, errcode) in bad_inputs {
        server.post(INVITATIONS, alice.token(), &body).await.assert_matrix_error(status, errcode);
    }
    assert_eq!(registration_tokens(&server).await, tokens_before, "bad input creates no token");
    assert!(smtp.all_mails().is_empty(), "bad input sends no mail");

    let invited =
        server.post(INVITATIONS, alice.token(), &json!({ "email": "Jan@UMC.example" })).await;
    invited.assert_status(200);
    assert_eq!(invited.body["email"], "Jan@umc.example");
    let expires = invited.body["expires_ts"].as_u64().expect("expires_ts is a number");
    assert!(expires > 0);
    assert!(!invited.text.contains("token"), "the inviter never sees the token: {}", invited.text);

    // A second invitation to the same address waits for the first one.
    server
        .post(INVITATIONS, alice.token(), &json!({ "email": "jan@umc.example" }))
        .await
        .assert_matrix_error(400, "M_INVALID_PARAM");

    let tokens = registration_tokens(&server).await;
    let new: Vec<&(String, String)> =
        tokens.iter().filter(|token| !tokens_before.contains(token)).collect();
    assert_eq!(new.len(), 1, "one token per invitation: {tokens:?}");
    let (token, line) = new[0];
    assert!(line.contains("used 0 of 1"), "the token is single-use: {line}");
    assert!(!line.contains("expires never"), "the token expires: {line}");

    let mail = smtp.next_mail_to("jan@umc.example").await;
    assert_eq!(mail.to, ["Jan@umc.example"]);
    assert!(mail.subject().contains(&alice.user_id), "subject: {}", mail.subject());
    let body = mail.body();
    let mailed_token = body
        .lines()
        .find(|line| line.starts_with("    "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no indented token line in the mail: {body}"));
    assert_eq!(mailed_token, token, "the mail carries the invitation's token");
    assert!(body.contains(&server.base_url()), "the mail says where to register: {body}");
    assert_eq!(smtp.all_mails().len(), 1, "the rejected duplicate sent no mail");

    server.register_with_token("jan", PASSWORD, token).await.assert_status(200);
    let second = server.register_with_token("piet", PASSWORD, token).await;
    second.assert_status(401);
    assert_eq!(second.errcode(), Some("M_FORBIDDEN"), "the token is used up: {}", second.text);

    let audit = server.admin_ok(&["audit-log"]).await.stdout;
    let registration = audit
        .lines()
        .find(|line| line.contains("registration") && line.contains("@jan:localhost"))
        .unwrap_or_else(|| panic!("no registration of jan in the audit log:\n{audit}"));
    assert!(registration.contains("invitation"), "{registration}");
    assert!(registration.contains(&alice.user_id), "the inviter is recorded: {registration}");
}
