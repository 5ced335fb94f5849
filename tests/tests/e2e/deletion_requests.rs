//! Account deletion on request: the user requests it with their password, an administrator approves
//! or rejects through the admin API or the admin CLI, and approval deactivates the account and
//! erases its personal data.

use caduceus_tests::{
    encode_path_segment, password_auth, Account, SmtpServer, TestServer, PASSWORD,
};
use serde_json::json;

const REQUEST: &str = "/_caduceus/client/v1/account/deletion_request";
const ADMIN_LIST: &str = "/_caduceus/admin/v1/deletion_requests";

fn decision_path(user_id: &str, decision: &str) -> String {
    format!("{ADMIN_LIST}/{}/{decision}", encode_path_segment(user_id))
}

/// Asks for deletion with the password stage and returns the response body.
async fn ask_for_deletion(
    server: &TestServer,
    account: &Account,
    reason: &str,
) -> serde_json::Value {
    let body = json!({ "reason": reason });
    let session = server.uia_session(REQUEST, account.token(), &body).await;
    let mut body = body;
    body["auth"] = password_auth(&account.localpart, PASSWORD, Some(&session));
    let response = server.post(REQUEST, account.token(), &body).await;
    response.assert_status(200);
    response.body
}

async fn admin_session(server: &TestServer) -> Account {
    server.admin_ok(&["create-user", "root", "--password", PASSWORD, "--admin"]).await;
    server.login("root", PASSWORD).await
}

#[tokio::test]
async fn request_withdraw_and_reject() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let admin = admin_session(&server).await;

    server.get(REQUEST, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
    // Without the password stage the server returns a challenge for it.
    let challenge = server.post(REQUEST, alice.token(), &json!({})).await;
    challenge.assert_status(401);
    assert_eq!(challenge.body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let wrong_auth = json!({ "auth": password_auth("alice", "wrong password", None) });
    server.post(REQUEST, alice.token(), &wrong_auth).await.assert_status(401);
    server.get(REQUEST, alice.token()).await.assert_matrix_error(404, "M_NOT_FOUND");

    let opened = ask_for_deletion(&server, &alice, "Leaving the hospital").await;
    assert_eq!(opened["state"], "pending");
    assert_eq!(opened["reason"], "Leaving the hospital");
    assert_eq!(opened["user_id"], alice.user_id.as_str());
    let again = ask_for_deletion(&server, &alice, "Another reason").await;
    assert_eq!(again, opened, "one open request per user");

    let withdrawn = server.delete(REQUEST, alice.token(), None).await;
    withdrawn.assert_status(200);
    assert_eq!(withdrawn.body["state"], "withdrawn");
    server.delete(REQUEST, alice.token(), None).await.assert_matrix_error(404, "M_NOT_FOUND");

    ask_for_deletion(&server, &alice, "Leaving the hospital").await;

    // Only a server administrator may decide.
    server.get(ADMIN_LIST, None).await.assert_matrix_error(401, "M_MISSING_TOKEN");
    server.get(ADMIN_LIST, Some("not-a-token")).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    server.get(ADMIN_LIST, alice.token()).await.assert_matrix_error(403, "M_FORBIDDEN");
    let reject = decision_path(&alice.user_id, "reject");
    server.post(&reject, alice.token(), &json!({})).await.assert_matrix_error(403, "M_FORBIDDEN");
    let unknown = decision_path("@nobody:localhost", "approve");
    server.post(&unknown, admin.token(), &json!({})).await.assert_matrix_error(404, "M_NOT_FOUND");
    let bad = json!({ "reason": 5 });
    server.post(&reject, admin.token(), &bad).await.assert_matrix_error(400, "M_BAD_JSON");

    let listed = server.get(ADMIN_LIST, admin.token()).await;
    listed.assert_status(200);
    let requests = listed.body["deletion_requests"].as_array().expect("a list of requests");
    assert_eq!(requests.len(), 1, "{}", listed.text);
    assert_eq!(requests[0]["user_id"], alice.user_id.as_str());
    assert_eq!(requests[0]["state"], "pending");

    let rejected =
        server.post(&reject, admin.token(), &json!({ "reason": "Open patient handovers" })).await;
    rejected.assert_status(200);
    assert_eq!(rejected.body["state"], "rejected");
    let seen = server.get(REQUEST, alice.token()).await;
    seen.assert_status(200);
    assert_eq!(seen.body["state"], "rejected");
    assert_eq!(seen.body["decision_reason"], "Open patient handovers");
    let approve = decision_path(&alice.user_id, "approve");
    server.post(&approve, admin.token(), &json!({})).await.assert_matrix_error(404, "M_NOT_FOUND");

    // The account still works.
    server.get("/_matrix/client/v3/account/whoami", alice.token()).await.assert_status(200);
    let audit = server.admin_ok(&["audit-log"]).await.stdout;
    for kind in ["deletion_requested", "deletion_withdrawn", "deletion_rejected"] {
        assert!(audit.contains(kind), "the audit log lacks {kind}:\n{audit}");
    }
}

#[tokio::test]
async fn approval_deactivates_and_erases() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let admin = admin_session(&server).await;
    let profile = format!("/_matrix/client/v3/profile/{}", alice.user_path());
    server
        .put(&format!("{profile}/displayname"), alice.token(), &json!({ "displayname": "Dr. A" }))
        .await
        .assert_status(200);
    server.admin_ok(&["set-verification", &alice.user_id, "--level", "identity"]).await;

    ask_for_deletion(&server, &alice, "Retiring").await;
    let listed = server.admin_ok(&["deletion-requests", "list"]).await.stdout;
    assert!(listed.contains(&alice.user_id), "{listed}");
    assert!(listed.contains("pending"), "{listed}");

    let approved =
        server.post(&decision_path(&alice.user_id, "approve"), admin.token(), &json!({})).await;
    approved.assert_status(200);
    assert_eq!(approved.body["state"], "approved");
    assert!(approved.body.get("reason").is_none(), "the reason is erased: {}", approved.text);

    // The account is closed: its token is gone and it cannot log in.
    server.get(REQUEST, alice.token()).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    server.login_request("alice", PASSWORD).await.assert_status(403);
    // Its profile is empty.
    let shown = server.get(&profile, admin.token()).await;
    assert!(shown.body.get("displayname").is_none(), "the display name is erased: {}", shown.text);

    let audit = server.admin_ok(&["audit-log"]).await.stdout;
    for kind in ["deletion_approved", "personal_data_erased"] {
        assert!(audit.contains(kind), "the audit log lacks {kind}:\n{audit}");
    }
    assert!(!audit.contains(PASSWORD), "the audit log holds no password");
}

#[tokio::test]
async fn cli_approves_and_rejects() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    ask_for_deletion(&server, &alice, "Moving abroad").await;
    ask_for_deletion(&server, &bob, "Wrong account").await;

    let rejected = server
        .admin_ok(&["deletion-requests", "reject", "bob", "--reason", "Talk to your manager"])
        .await;
    assert!(rejected.stdout.contains("rejected"), "{}", rejected.stdout);
    let again = server.admin(&["deletion-requests", "reject", "bob"]).await;
    assert!(!again.status.success(), "a decided request cannot be rejected again");
    assert!(
        again.stdout.contains("no open deletion request")
            || again.stderr.contains("no open deletion request"),
        "{again:?}"
    );

    server.admin_ok(&["deletion-requests", "approve", &alice.user_id]).await;
    let listed = server.admin_ok(&["deletion-requests", "list"]).await.stdout;
    let line = |user: &str| {
        listed.lines().find(|line| line.starts_with(user)).unwrap_or_default().to_owned()
    };
    assert!(line(&alice.user_id).contains("approved"), "{listed}");
    assert!(!line(&alice.user_id).contains("Moving abroad"), "{listed}");
    assert!(line(&bob.user_id).contains("rejected"), "{listed}");
    server.get("/_matrix/client/v3/account/whoami", alice.token()).await.assert_status(401);
    server.get("/_matrix/client/v3/account/whoami", bob.token()).await.assert_status(200);
}

#[tokio::test]
async fn invited_account_gets_confirmation_mail() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_mail(&smtp, &[]).await;
    let alice = server.register("alice").await;
    server.admin_ok(&["set-verification", &alice.user_id, "--level", "medical"]).await;
    let invited = server
        .post(
            "/_caduceus/client/v1/invitations",
            alice.token(),
            &json!({ "email": "jan@umc.example" }),
        )
        .await;
    invited.assert_status(200);
    let invitation = smtp.next_mail_to("jan@umc.example").await.body();
    let token = invitation
        .lines()
        .find(|line| line.starts_with("    "))
        .map(str::trim)
        .expect("the invitation mail carries a token")
        .to_owned();
    server.register_with_token("jan", PASSWORD, &token).await.assert_status(200);
    let jan = server.login("jan", PASSWORD).await;

    ask_for_deletion(&server, &jan, "Changed hospitals").await;
    server.admin_ok(&["deletion-requests", "approve", "jan"]).await;

    let confirmation = smtp.next_mail_to("jan@umc.example").await;
    assert_eq!(confirmation.subject(), "Your account has been deleted");
    assert!(confirmation.body().contains(&jan.user_id), "body: {}", confirmation.body());
    assert_eq!(smtp.count_to("jan@umc.example"), 2, "one invitation, one confirmation");
    // The erased invitation no longer ties alice to jan's address.
    let audit = server.admin_ok(&["audit-log"]).await.stdout;
    assert!(audit.contains("personal_data_erased"), "{audit}");
}
