//! Outgoing mail: plain-text messages through the configured SMTP server, or into the log when
//! `[email] smtp_host` is empty.

use std::time::Duration;

use anyhow::Context;
use caduceus_config::{EmailConfig, SmtpSecurity};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::error::{Error, Result};

/// How long one SMTP conversation (connect, greeting, each command) may take before the send
/// fails. A client waits for the send, so this stays well below common HTTP client timeouts.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Mail {
    from: Mailbox,
    /// None when no SMTP server is configured and mails go to the log.
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

impl Mail {
    /// Builds the SMTP transport from `config`. `hello_name` is the name this server gives in
    /// `EHLO`. No connection is made until the first mail.
    pub fn new(config: &EmailConfig, hello_name: &str) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse().with_context(|| {
            format!("invalid configuration: `email.from` is {:?}, not a mail address", config.from)
        })?;
        if config.smtp_host.is_empty() {
            return Ok(Self { from, transport: None });
        }

        let host = config.smtp_host.as_str();
        let builder = match config.security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .with_context(|| format!("cannot set up STARTTLS for SMTP host {host:?}"))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .with_context(|| format!("cannot set up TLS for SMTP host {host:?}"))?,
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder
            .port(config.smtp_port)
            .hello_name(ClientId::Domain(hello_name.to_owned()))
            .timeout(Some(SMTP_TIMEOUT));
        if !config.username.is_empty() {
            builder = builder
                .credentials(Credentials::new(config.username.clone(), config.password.clone()));
        }
        Ok(Self { from, transport: Some(builder.build()) })
    }

    /// Sends a plain-text mail to `to`, a bare address or `Name <address>`.
    ///
    /// Returns once the SMTP server has accepted the message. Without an SMTP server the
    /// message is written to the log at INFO level, body included, so a developer can read
    /// validation codes there.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<()> {
        let recipient: Mailbox = to
            .parse()
            .map_err(|_| Error::invalid_param(format!("{to:?} is not a valid email address")))?;

        let Some(transport) = &self.transport else {
            tracing::info!(
                to = %recipient,
                subject,
                body,
                "mail not sent because `email.smtp_host` is empty; written here instead"
            );
            return Ok(());
        };

        let message = Message::builder()
            .from(self.from.clone())
            .to(recipient.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .context("cannot build the mail")?;
        transport
            .send(message)
            .await
            .with_context(|| format!("cannot send mail to {recipient}"))?;
        tracing::debug!(to = %recipient, subject, "mail sent");
        Ok(())
    }
}
