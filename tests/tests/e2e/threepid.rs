//! Email identity: validation codes by mail, registration with a validated address, the
//! account's 3PIDs, password reset by email, and the registration policy for trusted domains.

use caduceus_tests::{Account, ApiResponse, ReceivedMail, SmtpServer, TestServer};
use serde_json::{json, Value};

const REGISTER: &str = "/_matrix/client/v3/register";
const REGISTER_TOKEN: &str = "/_matrix/client/v3/register/email/requestToken";
const ADD_TOKEN: &str = "/_matrix/client/v3/account/3pid/email/requestToken";
const PASSWORD_TOKEN: &str = "/_matrix/client/v3/account/password/email/requestToken";
const SUBMIT_TOKEN: &str = "/_caduceus/client/v1/email/submit_token";
const THREEPIDS: &str = "/_matrix/client/v3/account/3pid";
const ADD_3PID: &str = "/_matrix/client/v3/account/3pid/add";
const DELETE_3PID: &str = "/_matrix/client/v3/account/3pid/delete";
const PASSWORD: &str = "/_matrix/client/v3/account/password";
const SECRET: &str = "client-secret-1";
const TRUSTED: (&str, &str) = ("CADUCEUS__REGISTRATION__TRUSTED_EMAIL_DOMAINS", "hospital.example");

/// Starts a mail listener and a server that trusts `hospital.example` and its subdomains.
async fn start(extra: &[(&str, &str)]) -> (SmtpServer, TestServer) {
    let smtp = SmtpServer::start().await;
    let mut env = vec![TRUSTED];
    env.extend_from_slice(extra);
    let server = TestServer::start_with_mail(&smtp, &env).await;
    (smtp, server)
}

async fn request_token(
    server: &TestServer,
    path: &str,
    email: &str,
    secret: &str,
    attempt: u64,
) -> ApiResponse {
    let body = json!({ "email": email, "client_secret": secret, "send_attempt": attempt });
    server.post(path, None, &body).await
}

/// Returns the six-digit code in a validation mail.
fn code_of(mail: &ReceivedMail) -> String {
    let body = mail.body();
    let line = body
        .lines()
        .find_map(|line| line.strip_prefix("Your code is: "))
        .unwrap_or_else(|| panic!("no code in the mail body:\n{body}"));
    assert!(line.len() == 6 && line.chars().all(|c| c.is_ascii_digit()), "code {line:?}");
    line.to_owned()
}

/// Returns the validation link in a mail.
fn link_of(mail: &ReceivedMail) -> String {
    let body = mail.body();
    body.lines()
        .find(|line| line.starts_with("http") && line.contains(SUBMIT_TOKEN))
        .unwrap_or_else(|| panic!("no validation link in the mail body:\n{body}"))
        .to_owned()
}

async fn submit(server: &TestServer, sid: &str, secret: &str, code: &str) -> ApiResponse {
    let body = json!({ "sid": sid, "client_secret": secret, "token": code });
    server.post(SUBMIT_TOKEN, None, &body).await
}

/// Requests a code for `email` at `path`, reads it from the mail and submits it. Returns the sid.
async fn validate(smtp: &SmtpServer, server: &TestServer, path: &str, email: &str) -> String {
    let response = request_token(server, path, email, SECRET, 1).await;
    response.assert_status(200).assert_spec(path);
    let sid = response.str_field("sid").to_owned();
    let mail = smtp.next_mail_to(email).await;
    submit(server, &sid, SECRET, &code_of(&mail)).await.assert_status(200);
    sid
}

fn email_auth(sid: &str, secret: &str, session: &str) -> Value {
    json!({
        "type": "m.login.email.identity",
        "threepid_creds": { "sid": sid, "client_secret": secret },
        "session": session,
    })
}

/// Registers `localpart` with the `m.login.email.identity` stage and returns the response.
async fn register_with_email(server: &TestServer, localpart: &str, sid: &str) -> ApiResponse {
    let mut body = json!({ "username": localpart, "password": caduceus_tests::PASSWORD });
    let session = server.uia_session(REGISTER, None, &body).await;
    body["auth"] = email_auth(sid, SECRET, &session);
    server.post(REGISTER, None, &body).await
}

async fn threepid_addresses(server: &TestServer, account: &Account) -> Vec<String> {
    let response = server.get(THREEPIDS, account.token()).await;
    response.assert_status(200).assert_spec(THREEPIDS);
    // The spec makes `threepids` optional, and ruma leaves it out when it is empty.
    let Some(threepids) = response.body.get("threepids") else {
        return Vec::new();
    };
    threepids
        .as_array()
        .expect("threepids is an array")
        .iter()
        .map(|threepid| threepid["address"].as_str().expect("address is a string").to_owned())
        .collect()
}

async fn audit_log(server: &TestServer) -> String {
    server.admin_ok(&["audit-log"]).await.stdout
}

#[tokio::test]
async fn registration_with_emailed_code() {
    let (smtp, server) = start(&[]).await;

    let flows = server.post(REGISTER, None, &json!({ "password": caduceus_tests::PASSWORD })).await;
    flows.assert_status(401).assert_spec(REGISTER);
    assert!(
        flows.text.contains("m.login.email.identity"),
        "the email stage is not offered: {}",
        flows.text
    );

    let response =
        request_token(&server, REGISTER_TOKEN, "Dr.Alice@Hospital.Example", SECRET, 1).await;
    response.assert_status(200).assert_spec(REGISTER_TOKEN);
    let sid = response.str_field("sid").to_owned();
    let submit_url = response.str_field("submit_url");
    assert_eq!(submit_url, format!("{}{SUBMIT_TOKEN}", server.base_url()));

    let mail = smtp.next_mail_to("dr.alice@hospital.example").await;
    let code = code_of(&mail);
    assert!(mail.subject().contains(&code), "subject: {}", mail.subject());

    // Before the code is submitted the stage fails, and no account is made.
    let early = register_with_email(&server, "alice", &sid).await;
    early.assert_status(401).assert_spec(REGISTER);
    assert_eq!(early.errcode(), Some("M_THREEPID_AUTH_FAILED"), "body: {}", early.text);
    assert!(server.username_available("alice").await, "alice exists before validation");

    let submitted = submit(&server, &sid, SECRET, &code).await;
    submitted.assert_status(200);
    assert_eq!(submitted.body, json!({ "success": true }));

    let registered = register_with_email(&server, "alice", &sid).await;
    registered.assert_status(200).assert_spec(REGISTER);
    let alice = server.login("alice", caduceus_tests::PASSWORD).await;
    assert_eq!(threepid_addresses(&server, &alice).await, ["dr.alice@hospital.example"]);

    // The session is used up: it cannot make a second account.
    let again = register_with_email(&server, "alice2", &sid).await;
    assert_eq!(again.status, 401, "body: {}", again.text);
    assert!(server.username_available("alice2").await, "a used session made a second account");

    let log = audit_log(&server).await;
    assert!(log.contains("email_added"), "audit log: {log}");
    assert!(log.contains("\"method\":\"email\""), "audit log: {log}");
    assert!(!log.contains(&code), "the audit log contains the code: {log}");
}

#[tokio::test]
async fn emailed_link_validates_and_redirects() {
    let (smtp, server) = start(&[]).await;
    let body = json!({
        "email": "bob@hospital.example",
        "client_secret": SECRET,
        "send_attempt": 1,
        "next_link": "https://app.example/welcome",
    });
    let response = server.post(REGISTER_TOKEN, None, &body).await;
    response.assert_status(200).assert_spec(REGISTER_TOKEN);
    let sid = response.str_field("sid").to_owned();
    let link = link_of(&smtp.next_mail_to("bob@hospital.example").await);
    assert!(link.starts_with(&server.base_url()), "link {link} points elsewhere");

    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opened = browser.get(&link).send().await.unwrap();
    assert_eq!(opened.status().as_u16(), 302, "the link did not redirect");
    assert_eq!(opened.headers()["location"], "https://app.example/welcome");

    register_with_email(&server, "bob", &sid).await.assert_status(200);

    // A link without its parameters gets a readable page, not a server error.
    let broken = browser.get(format!("{}{SUBMIT_TOKEN}?sid={sid}", server.base_url())).send().await;
    let broken = broken.unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    assert!(broken.text().await.unwrap().contains("incomplete"));
}

#[tokio::test]
async fn same_send_attempt_sends_no_new_mail() {
    let (smtp, server) = start(&[]).await;
    let email = "carol@hospital.example";

    let first = request_token(&server, REGISTER_TOKEN, email, SECRET, 1).await;
    first.assert_status(200);
    let first_code = code_of(&smtp.next_mail_to(email).await);
    let repeat = request_token(&server, REGISTER_TOKEN, email, SECRET, 1).await;
    repeat.assert_status(200).assert_spec(REGISTER_TOKEN);
    assert_eq!(repeat.str_field("sid"), first.str_field("sid"), "a repeat got a new sid");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to(email), 1, "a repeated send_attempt sent another mail");

    let next = request_token(&server, REGISTER_TOKEN, email, SECRET, 2).await;
    next.assert_status(200);
    assert_eq!(next.str_field("sid"), first.str_field("sid"), "a new attempt got a new sid");
    let second_code = code_of(&smtp.next_mail_to(email).await);
    let sid = first.str_field("sid");
    if first_code != second_code {
        submit(&server, sid, SECRET, &first_code)
            .await
            .assert_matrix_error(400, "M_THREEPID_AUTH_FAILED");
    }
    submit(&server, sid, SECRET, &second_code).await.assert_status(200);
}

#[tokio::test]
async fn one_account_per_email_address() {
    let (smtp, server) = start(&[]).await;
    let sid = validate(&smtp, &server, REGISTER_TOKEN, "dave@hospital.example").await;
    register_with_email(&server, "dave", &sid).await.assert_status(200);

    for address in ["dave@hospital.example", "DAVE@Hospital.example"] {
        let taken = request_token(&server, REGISTER_TOKEN, address, SECRET, 1).await;
        taken.assert_matrix_error(400, "M_THREEPID_IN_USE").assert_spec(REGISTER_TOKEN);
        let taken = request_token(&server, ADD_TOKEN, address, SECRET, 1).await;
        taken.assert_matrix_error(400, "M_THREEPID_IN_USE").assert_spec(ADD_TOKEN);
    }
    assert_eq!(smtp.count_to("dave@hospital.example"), 1, "a mail went to a taken address");
}

#[tokio::test]
async fn trusted_domain_policy() {
    let (smtp, server) = start(&[("CADUCEUS__REGISTRATION__TOKEN", "false")]).await;

    let sub =
        request_token(&server, REGISTER_TOKEN, "erin@cardio.hospital.example", SECRET, 1).await;
    sub.assert_status(200).assert_spec(REGISTER_TOKEN);
    smtp.next_mail_to("erin@cardio.hospital.example").await;

    for outsider in
        ["mallory@gmail.example", "mallory@evilhospital.example", "m@hospital.example.org"]
    {
        let denied = request_token(&server, REGISTER_TOKEN, outsider, SECRET, 1).await;
        denied.assert_matrix_error(403, "M_THREEPID_DENIED").assert_spec(REGISTER_TOKEN);
        let message = denied.body["error"].as_str().unwrap();
        for hint in ["registration token", "work email", "invitation"] {
            assert!(message.contains(hint), "{message:?} does not mention {hint:?}");
        }
        assert_eq!(smtp.count_to(outsider), 0, "a code was mailed to {outsider}");
    }

    // With tokens off and registration not open, only the email flow is offered.
    let flows = server.post(REGISTER, None, &json!({ "password": caduceus_tests::PASSWORD })).await;
    flows.assert_status(401).assert_spec(REGISTER);
    assert_eq!(flows.body["flows"], json!([{ "stages": ["m.login.email.identity"] }]));

    let mut body = json!({ "username": "mallory", "password": caduceus_tests::PASSWORD });
    let session = server.uia_session(REGISTER, None, &body).await;
    body["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let refused = server.post(REGISTER, None, &body).await;
    refused.assert_matrix_error(401, "M_FORBIDDEN");
    let message = refused.body["error"].as_str().unwrap();
    for hint in ["registration token", "work email", "invitation"] {
        assert!(message.contains(hint), "{message:?} does not mention {hint:?}");
    }
    assert!(server.username_available("mallory").await, "mallory was registered");
}

#[tokio::test]
async fn email_registration_is_off_without_trusted_domains() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_mail(&smtp, &[]).await;

    let flows = server.post(REGISTER, None, &json!({ "password": caduceus_tests::PASSWORD })).await;
    flows.assert_status(401);
    assert!(!flows.text.contains("m.login.email.identity"), "flows: {}", flows.text);
    let denied = request_token(&server, REGISTER_TOKEN, "a@hospital.example", SECRET, 1).await;
    denied.assert_matrix_error(403, "M_THREEPID_DENIED").assert_spec(REGISTER_TOKEN);
}

#[tokio::test]
async fn add_list_and_delete_email() {
    let (smtp, server) = start(&[]).await;
    let frank = server.register("frank").await;
    assert!(threepid_addresses(&server, &frank).await.is_empty());

    let sid = validate(&smtp, &server, ADD_TOKEN, "frank@clinic.example").await;
    let mut body = json!({ "sid": sid, "client_secret": SECRET });
    let session = server.uia_session(ADD_3PID, frank.token(), &body).await;

    body["auth"] = caduceus_tests::password_auth("frank", "wrong password", Some(&session));
    let wrong = server.post(ADD_3PID, frank.token(), &body).await;
    wrong.assert_status(401).assert_spec(ADD_3PID);
    assert!(threepid_addresses(&server, &frank).await.is_empty(), "added without the password");

    body["auth"] = caduceus_tests::password_auth("frank", caduceus_tests::PASSWORD, Some(&session));
    server.post(ADD_3PID, frank.token(), &body).await.assert_status(200).assert_spec(ADD_3PID);
    assert_eq!(threepid_addresses(&server, &frank).await, ["frank@clinic.example"]);

    let listed = server.get(THREEPIDS, frank.token()).await;
    let threepid = &listed.body["threepids"][0];
    assert_eq!(threepid["medium"], "email");
    assert!(threepid["validated_at"].as_u64().unwrap() <= threepid["added_at"].as_u64().unwrap());

    // Another account cannot take the address.
    let grace = server.register("grace").await;
    let taken = request_token(&server, ADD_TOKEN, "Frank@Clinic.example", "other-secret", 1).await;
    taken.assert_matrix_error(400, "M_THREEPID_IN_USE");

    let delete = json!({ "medium": "email", "address": "frank@clinic.example" });
    let deleted = server.post(DELETE_3PID, frank.token(), &delete).await;
    deleted.assert_status(200).assert_spec(DELETE_3PID);
    assert_eq!(deleted.body["id_server_unbind_result"], "no-support");
    assert!(threepid_addresses(&server, &frank).await.is_empty(), "the address is still listed");
    server
        .post(DELETE_3PID, frank.token(), &delete)
        .await
        .assert_matrix_error(400, "M_THREEPID_NOT_FOUND");

    // Now it is free for grace.
    let sid = validate(&smtp, &server, ADD_TOKEN, "frank@clinic.example").await;
    let mut body = json!({ "sid": sid, "client_secret": SECRET });
    let session = server.uia_session(ADD_3PID, grace.token(), &body).await;
    body["auth"] = caduceus_tests::password_auth("grace", caduceus_tests::PASSWORD, Some(&session));
    server.post(ADD_3PID, grace.token(), &body).await.assert_status(200);
    assert_eq!(threepid_addresses(&server, &grace).await, ["frank@clinic.example"]);

    let log = audit_log(&server).await;
    assert!(log.contains("email_added"), "audit log: {log}");
    assert!(log.contains("email_removed"), "audit log: {log}");
}

#[tokio::test]
async fn identity_server_binding_is_not_supported() {
    let (_smtp, server) = start(&[]).await;
    let henry = server.register("henry").await;

    let bind = json!({
        "client_secret": SECRET,
        "id_server": "id.example",
        "id_access_token": "abc",
        "sid": "abc",
    });
    let response = server.post("/_matrix/client/v3/account/3pid/bind", henry.token(), &bind).await;
    response.assert_matrix_error(400, "M_SERVER_NOT_TRUSTED");

    let unbind = json!({ "medium": "email", "address": "henry@hospital.example" });
    let path = "/_matrix/client/v3/account/3pid/unbind";
    let response = server.post(path, henry.token(), &unbind).await;
    response.assert_status(200).assert_spec(path);
    assert_eq!(response.body["id_server_unbind_result"], "no-support");
}

/// Registers `localpart` with a validated address and returns the logged-in account.
async fn register_email_account(
    smtp: &SmtpServer,
    server: &TestServer,
    localpart: &str,
    email: &str,
) -> Account {
    let sid = validate(smtp, server, REGISTER_TOKEN, email).await;
    register_with_email(server, localpart, &sid).await.assert_status(200);
    server.login(localpart, caduceus_tests::PASSWORD).await
}

/// Runs a password reset for `email` through mail and returns the final response.
async fn reset_password(
    smtp: &SmtpServer,
    server: &TestServer,
    email: &str,
    new_password: &str,
    logout_devices: bool,
) -> ApiResponse {
    let sid = validate(smtp, server, PASSWORD_TOKEN, email).await;
    let mut body = json!({ "new_password": new_password, "logout_devices": logout_devices });
    let challenge = server.post(PASSWORD, None, &body).await;
    challenge.assert_status(401).assert_spec(PASSWORD);
    assert_eq!(challenge.body["flows"], json!([{ "stages": ["m.login.email.identity"] }]));
    body["auth"] = email_auth(&sid, SECRET, challenge.str_field("session"));
    server.post(PASSWORD, None, &body).await
}

#[tokio::test]
async fn password_reset_by_email() {
    let (smtp, server) = start(&[]).await;
    let ivy = register_email_account(&smtp, &server, "ivy", "ivy@hospital.example").await;

    let unknown =
        request_token(&server, PASSWORD_TOKEN, "nobody@hospital.example", SECRET, 1).await;
    unknown.assert_matrix_error(400, "M_THREEPID_NOT_FOUND").assert_spec(PASSWORD_TOKEN);

    let new_password = "a new and long passphrase";
    let reset = reset_password(&smtp, &server, "IVY@hospital.example", new_password, true).await;
    reset.assert_status(200).assert_spec(PASSWORD);

    server
        .login_request("ivy", caduceus_tests::PASSWORD)
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");
    server.login("ivy", new_password).await;
    let whoami = server.get("/_matrix/client/v3/account/whoami", ivy.token()).await;
    whoami.assert_matrix_error(401, "M_UNKNOWN_TOKEN");

    let log = audit_log(&server).await;
    assert!(log.contains("password_reset"), "audit log: {log}");
}

#[tokio::test]
async fn password_reset_can_keep_devices() {
    let (smtp, server) = start(&[]).await;
    let jack = register_email_account(&smtp, &server, "jack", "jack@hospital.example").await;

    let reset =
        reset_password(&smtp, &server, "jack@hospital.example", "another long passphrase", false)
            .await;
    reset.assert_status(200);
    let whoami = server.get("/_matrix/client/v3/account/whoami", jack.token()).await;
    whoami.assert_status(200);
}

#[tokio::test]
async fn register_session_cannot_reset_password() {
    let (smtp, server) = start(&[]).await;
    register_email_account(&smtp, &server, "kate", "kate@hospital.example").await;
    // A session validated for adding an address is refused by the password reset.
    let sid = validate(&smtp, &server, ADD_TOKEN, "kate2@hospital.example").await;
    let mut body = json!({ "new_password": "yet another passphrase" });
    let session = server.uia_session(PASSWORD, None, &body).await;
    body["auth"] = email_auth(&sid, SECRET, &session);
    let refused = server.post(PASSWORD, None, &body).await;
    refused.assert_matrix_error(401, "M_THREEPID_AUTH_FAILED");
    server.login("kate", caduceus_tests::PASSWORD).await;
}

#[tokio::test]
async fn wrong_code_and_wrong_secret_are_rejected() {
    let (smtp, server) = start(&[]).await;
    let response = request_token(&server, REGISTER_TOKEN, "liam@hospital.example", SECRET, 1).await;
    let sid = response.str_field("sid").to_owned();
    let code = code_of(&smtp.next_mail_to("liam@hospital.example").await);
    let wrong_code = if code == "000000" { "111111" } else { "000000" };

    submit(&server, &sid, SECRET, wrong_code)
        .await
        .assert_matrix_error(400, "M_THREEPID_AUTH_FAILED");
    submit(&server, &sid, "another-secret", &code)
        .await
        .assert_matrix_error(400, "M_THREEPID_AUTH_FAILED");
    submit(&server, "no-such-sid", SECRET, &code)
        .await
        .assert_matrix_error(400, "M_THREEPID_AUTH_FAILED");

    // The stage with the wrong secret fails even after validation.
    submit(&server, &sid, SECRET, &code).await.assert_status(200);
    let mut body = json!({ "username": "liam", "password": caduceus_tests::PASSWORD });
    let session = server.uia_session(REGISTER, None, &body).await;
    body["auth"] = email_auth(&sid, "another-secret", &session);
    server.post(REGISTER, None, &body).await.assert_matrix_error(401, "M_THREEPID_AUTH_FAILED");
    assert!(server.username_available("liam").await);
}

#[tokio::test]
async fn too_many_wrong_codes_close_the_session() {
    let (smtp, server) = start(&[]).await;
    let response = request_token(&server, REGISTER_TOKEN, "mia@hospital.example", SECRET, 1).await;
    let sid = response.str_field("sid").to_owned();
    let code = code_of(&smtp.next_mail_to("mia@hospital.example").await);
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        submit(&server, &sid, SECRET, wrong_code).await.assert_status(400);
    }
    let closed = submit(&server, &sid, SECRET, &code).await;
    closed.assert_matrix_error(400, "M_THREEPID_AUTH_FAILED");
    assert!(closed.text.contains("Too many wrong codes"), "body: {}", closed.text);
}

#[tokio::test]
async fn expired_code_is_rejected() {
    let (smtp, server) = start(&[("CADUCEUS__EMAIL__TOKEN_LIFETIME_SECS", "1")]).await;
    let response = request_token(&server, REGISTER_TOKEN, "noah@hospital.example", SECRET, 1).await;
    let sid = response.str_field("sid").to_owned();
    let code = code_of(&smtp.next_mail_to("noah@hospital.example").await);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let expired = submit(&server, &sid, SECRET, &code).await;
    expired.assert_matrix_error(400, "M_THREEPID_AUTH_FAILED");
    assert!(expired.text.contains("expired"), "body: {}", expired.text);
}

#[tokio::test]
async fn request_token_limit_per_address() {
    let (smtp, server) = start(&[("CADUCEUS__EMAIL__MAILS_PER_ADDRESS_PER_HOUR", "2")]).await;
    let email = "olivia@hospital.example";
    for attempt in 1..=2 {
        request_token(&server, REGISTER_TOKEN, email, SECRET, attempt).await.assert_status(200);
    }
    let limited = request_token(&server, REGISTER_TOKEN, email, SECRET, 3).await;
    limited.assert_matrix_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.body["retry_after_ms"].as_u64().is_some(), "body: {}", limited.text);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to(email), 2);

    // Other addresses are not affected.
    request_token(&server, REGISTER_TOKEN, "paul@hospital.example", SECRET, 1)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn malformed_requests_get_clear_errors() {
    let (smtp, server) = start(&[]).await;

    for invalid in ["not-an-address", "a@b", "two@@hospital.example", "a b@hospital.example"] {
        let response = request_token(&server, REGISTER_TOKEN, invalid, SECRET, 1).await;
        response.assert_matrix_error(400, "M_INVALID_EMAIL").assert_spec(REGISTER_TOKEN);
    }
    for next_link in ["javascript:alert(1)", "ftp://files.example/", "/relative"] {
        let body = json!({
            "email": "quinn@hospital.example",
            "client_secret": SECRET,
            "send_attempt": 1,
            "next_link": next_link,
        });
        let response = server.post(REGISTER_TOKEN, None, &body).await;
        response.assert_matrix_error(400, "M_INVALID_PARAM");
    }
    let bad_secret =
        request_token(&server, REGISTER_TOKEN, "quinn@hospital.example", "bad secret!", 1).await;
    assert_eq!(bad_secret.status, 400, "body: {}", bad_secret.text);
    bad_secret.assert_error_shape();

    let not_json = server
        .request_bytes(reqwest::Method::POST, SUBMIT_TOKEN, None, b"{not json".to_vec())
        .await;
    not_json.assert_matrix_error(400, "M_NOT_JSON");
    let missing = server.post(SUBMIT_TOKEN, None, &json!({ "sid": "x" })).await;
    missing.assert_matrix_error(400, "M_BAD_JSON");
    let not_json =
        server.request_bytes(reqwest::Method::POST, REGISTER_TOKEN, None, b"[1,".to_vec()).await;
    not_json.assert_matrix_error(400, "M_NOT_JSON");

    assert!(smtp.all_mails().is_empty(), "a malformed request sent mail: {:?}", smtp.all_mails());
}

#[tokio::test]
async fn deactivation_frees_the_address() {
    let (smtp, server) = start(&[]).await;
    let rose = register_email_account(&smtp, &server, "rose", "rose@hospital.example").await;

    let mut body = json!({});
    let session =
        server.uia_session("/_matrix/client/v3/account/deactivate", rose.token(), &body).await;
    body["auth"] = caduceus_tests::password_auth("rose", caduceus_tests::PASSWORD, Some(&session));
    server
        .post("/_matrix/client/v3/account/deactivate", rose.token(), &body)
        .await
        .assert_status(200);

    register_email_account(&smtp, &server, "rose2", "rose@hospital.example").await;
    let log = audit_log(&server).await;
    assert!(log.contains("email_removed"), "audit log: {log}");
}

#[tokio::test]
async fn login_with_email_identifier() {
    let (smtp, server) = start(&[]).await;
    let sam = register_email_account(&smtp, &server, "sam", "sam@hospital.example").await;

    let login = |address: &str, password: &str| {
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": address },
            "password": password,
        })
    };
    let path = "/_matrix/client/v3/login";
    let response =
        server.post(path, None, &login("Sam@Hospital.example", caduceus_tests::PASSWORD)).await;
    response.assert_status(200).assert_spec(path);
    assert_eq!(response.str_field("user_id"), sam.user_id);

    let wrong = server.post(path, None, &login("sam@hospital.example", "wrong password")).await;
    wrong.assert_matrix_error(403, "M_FORBIDDEN");
    let unknown = server.post(path, None, &login("nobody@hospital.example", "whatever")).await;
    unknown.assert_matrix_error(403, "M_FORBIDDEN");
}
