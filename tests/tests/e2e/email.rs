//! Email: mail delivery through SMTP and the log fallback.

use caduceus_tests::{SmtpServer, TestServer};

#[tokio::test]
async fn test_mail_reaches_smtp_server() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_mail(&smtp, &[]).await;

    let output = server.admin_ok(&["send-test-mail", "Alice@Hospital.Example"]).await;
    assert!(output.stdout.contains("sent a test mail"), "stdout: {}", output.stdout);

    let mail = smtp.next_mail_to("alice@hospital.example").await;
    assert_eq!(mail.from, "noreply@localhost", "envelope sender");
    assert_eq!(mail.to, ["Alice@Hospital.Example"], "envelope recipients");
    assert_eq!(mail.subject(), "Caduceus test mail");
    assert!(mail.body().contains("can send mail"), "body: {}", mail.body());
    assert!(
        mail.header("From").is_some_and(|from| from.contains("noreply@localhost")),
        "From header: {:?}",
        mail.header("From")
    );
}

#[tokio::test]
async fn mail_goes_to_log_without_smtp_host() {
    let server = TestServer::start().await;

    server.admin_ok(&["send-test-mail", "bob@hospital.example"]).await;

    let output = server.output();
    let line = output
        .lines()
        .find(|line| line.contains("mail not sent"))
        .unwrap_or_else(|| panic!("no log line for the unsent mail:\n{output}"));
    assert!(line.contains("bob@hospital.example"), "log line: {line}");
    assert!(line.contains("Caduceus test mail"), "log line: {line}");
}

#[tokio::test]
async fn unreachable_smtp_server_fails_the_send() {
    let smtp = SmtpServer::start().await;
    let port = smtp.port().to_string();
    drop(smtp);
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("CADUCEUS__EMAIL__SMTP_PORT", &port),
        ("CADUCEUS__EMAIL__SECURITY", "none"),
    ])
    .await;

    let output = server.admin(&["send-test-mail", "carol@hospital.example"]).await;
    assert!(!output.status.success(), "the send succeeded without an SMTP server: {output:?}");
}

#[tokio::test]
async fn invalid_recipient_is_rejected() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_mail(&smtp, &[]).await;

    let output = server.admin(&["send-test-mail", "not an address"]).await;
    assert!(!output.status.success(), "an invalid address was accepted: {output:?}");
    assert!(
        output.stdout.contains("not a valid email address")
            || output.stderr.contains("not a valid email address"),
        "{output:?}"
    );
    assert!(smtp.all_mails().is_empty(), "a mail was sent: {:?}", smtp.all_mails());
}
