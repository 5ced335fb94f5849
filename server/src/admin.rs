//! Administration commands (`caduceus admin ...`), run against a live server through its admin
//! socket or, when no server runs, directly on the data dir.

pub mod socket;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use caduceus_directory::{Area, RebuildProgress, VerificationLevel};

use crate::error::Error;
use crate::service::security::AuditSubject;
use crate::service::verification::{self, VerificationUpdate};
use crate::service::{deletion_requests, now_ms, Services};
use crate::storage::tables::{EvidenceSource, VerificationEvidence};

/// One administration command, as sent over the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminCommand {
    CreateUser {
        username: String,
        password: String,
        admin: bool,
    },
    RegistrationTokenCreate {
        token: Option<String>,
        uses_allowed: Option<u64>,
        expires_in_days: Option<u64>,
    },
    RegistrationTokenList,
    RegistrationTokenRevoke {
        token: String,
    },
    AuditLog {
        limit: usize,
    },
    SetVerification {
        user: String,
        level: String,
        #[serde(default)]
        professions: Vec<String>,
        #[serde(default)]
        specialties: Vec<String>,
        #[serde(default)]
        organisations: Vec<String>,
        /// One area; all its parts are optional.
        #[serde(default)]
        area: Area,
        #[serde(default)]
        unlisted: bool,
        #[serde(default)]
        evidence: Box<EvidenceArgs>,
    },
    Reindex,
    DeletionRequestList,
    DeletionRequestApprove {
        user: String,
    },
    DeletionRequestReject {
        user: String,
        reason: Option<String>,
    },
    SendTestMail {
        to: String,
    },
    Unlock {
        user: String,
    },
}

/// The evidence options of `set-verification`; all optional. The source defaults to
/// `officer`, since an administrator vouches for the change, and the time to now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvidenceArgs {
    pub source: Option<String>,
    pub register: Option<String>,
    pub registration_number: Option<String>,
    pub verified_at: Option<u64>,
    pub next_check: Option<u64>,
    pub note: Option<String>,
}

/// The outcome of a command: text for the operator, and whether it succeeded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminOutput {
    pub success: bool,
    pub text: String,
}

impl AdminOutput {
    fn ok(text: impl Into<String>) -> Self {
        Self { success: true, text: text.into() }
    }

    fn failed(text: impl Into<String>) -> Self {
        Self { success: false, text: text.into() }
    }
}

/// Runs one command against the services.
pub async fn execute(services: &Arc<Services>, command: AdminCommand) -> AdminOutput {
    execute_with_progress(services, command, false).await
}

/// Runs one command; with `progress_to_stderr`, long commands draw a progress line on stderr.
pub async fn execute_with_progress(
    services: &Arc<Services>,
    command: AdminCommand,
    progress_to_stderr: bool,
) -> AdminOutput {
    match run(services, command, progress_to_stderr).await {
        Ok(output) => output,
        Err(Error::Matrix { message, .. }) => AdminOutput::failed(message),
        Err(error) => {
            tracing::error!(error = ?error, "admin command failed");
            AdminOutput::failed(format!("internal error: {error}"))
        }
    }
}

async fn run(
    services: &Arc<Services>,
    command: AdminCommand,
    progress_to_stderr: bool,
) -> Result<AdminOutput, Error> {
    if !matches!(
        command,
        AdminCommand::AuditLog { .. }
            | AdminCommand::RegistrationTokenList
            | AdminCommand::DeletionRequestList
    ) {
        let detail = serde_json::json!({ "command": socket::command_name(&command) });
        services.security.audit("admin_command", &Default::default(), detail)?;
    }
    match command {
        AdminCommand::AuditLog { limit } => {
            let mut lines = Vec::new();
            for record in services.security.audit_log(limit)? {
                let mut line = format!("{}\t{}", record.ts, record.kind);
                for (label, value) in [
                    ("user", record.user_id),
                    ("device", record.device_id),
                    ("address", record.address),
                ] {
                    if let Some(value) = value {
                        line.push_str(&format!("\t{label}={value}"));
                    }
                }
                if !record.detail.is_null() {
                    line.push_str(&format!("\t{}", record.detail));
                }
                lines.push(line);
            }
            if lines.is_empty() {
                lines.push("the audit log is empty".to_owned());
            }
            Ok(AdminOutput::ok(lines.join("\n")))
        }
        AdminCommand::CreateUser { username, password, admin } => {
            crate::service::accounts::check_new_password(&password)?;
            let user_id = services.accounts.create_user(&username, Some(&password), admin).await?;
            let subject = AuditSubject { user_id: Some(user_id.as_str()), ..Default::default() };
            let detail = serde_json::json!({ "method": "admin_cli", "admin": admin });
            services.security.audit("registration", &subject, detail)?;
            Ok(AdminOutput::ok(format!("created {user_id}")))
        }
        AdminCommand::RegistrationTokenCreate { token, uses_allowed, expires_in_days } => {
            if uses_allowed == Some(0) {
                return Ok(AdminOutput::failed("--uses-allowed must be at least 1"));
            }
            let expiry_ts = expires_in_days.map(|days| now_ms() + days * 24 * 60 * 60 * 1000);
            let token = services.registration_tokens.create(token, uses_allowed, expiry_ts)?;
            Ok(AdminOutput::ok(token))
        }
        AdminCommand::RegistrationTokenList => {
            let mut lines = Vec::new();
            for (token, record) in services.registration_tokens.list()? {
                let allowed = record.uses_allowed.map_or("unlimited".to_owned(), |n| n.to_string());
                let state = if record.revoked {
                    "revoked"
                } else if record.expiry_ts.is_some_and(|expiry| expiry <= now_ms()) {
                    "expired"
                } else if record.uses_allowed.is_some_and(|n| record.completed >= n) {
                    "used up"
                } else {
                    "valid"
                };
                lines.push(format!(
                    "{token}\t{state}\tused {} of {allowed}\texpires {}",
                    record.completed,
                    record.expiry_ts.map_or("never".to_owned(), |ts| format!("at {ts} ms")),
                ));
            }
            if lines.is_empty() {
                lines.push("no registration tokens".to_owned());
            }
            Ok(AdminOutput::ok(lines.join("\n")))
        }
        AdminCommand::RegistrationTokenRevoke { token } => {
            if services.registration_tokens.revoke(&token)? {
                Ok(AdminOutput::ok(format!("revoked {token}")))
            } else {
                Ok(AdminOutput::failed(format!("no registration token {token:?} exists")))
            }
        }
        AdminCommand::SetVerification {
            user,
            level,
            professions,
            specialties,
            organisations,
            area,
            unlisted,
            evidence,
        } => {
            let user_id = services.local_user_id(&user)?;
            if services.accounts.get_user(&user_id)?.is_none() {
                return Ok(AdminOutput::failed(format!("no user {user_id} exists")));
            }
            let Some(level) = VerificationLevel::parse(&level) else {
                return Ok(AdminOutput::failed(format!(
                    "invalid level {level:?}; use pending, identity or medical"
                )));
            };
            let source = evidence.source.as_deref().unwrap_or("officer");
            let Some(source) = EvidenceSource::parse(source) else {
                return Ok(AdminOutput::failed(format!(
                    "invalid source {source:?}; use register, roster, email_domain or officer"
                )));
            };
            let has_area = area.city.is_some()
                || area.postal_code.is_some()
                || area.region.is_some()
                || area.country.is_some()
                || area.coordinates.is_some();
            let update = VerificationUpdate {
                level: Some(level),
                evidence: Some(VerificationEvidence {
                    source,
                    register: evidence.register,
                    registration_number: evidence.registration_number,
                    verified_at: evidence.verified_at.unwrap_or_else(now_ms),
                    next_check: evidence.next_check,
                    note: evidence.note,
                }),
                professions,
                specialties,
                organisations,
                areas: if has_area { vec![area] } else { Vec::new() },
                listed: Some(!unlisted),
            };
            let record =
                verification::set_verification(services, "admin_cli", &user_id, update, None)
                    .await?;
            let mut text = format!("{user_id} is now {}", level.as_str());
            if let Some(evidence) = &record.evidence {
                text.push_str(&format!(" (source {}", evidence.source.as_str()));
                if let (Some(register), Some(number)) =
                    (&evidence.register, &evidence.registration_number)
                {
                    text.push_str(&format!(", {register} {number}"));
                }
                text.push(')');
            }
            Ok(AdminOutput::ok(text))
        }
        AdminCommand::DeletionRequestList => {
            let mut lines = Vec::new();
            for (user_id, record) in services.deletion_requests.list()? {
                let mut line = format!(
                    "{user_id}\t{}\trequested at {} ms",
                    record.state.as_str(),
                    record.requested_ts
                );
                if let Some(reason) = &record.reason {
                    line.push_str(&format!("\treason: {reason}"));
                }
                if let Some(decided_ts) = record.decided_ts {
                    line.push_str(&format!("\tdecided at {decided_ts} ms"));
                }
                lines.push(line);
            }
            if lines.is_empty() {
                lines.push("no deletion requests".to_owned());
            }
            Ok(AdminOutput::ok(lines.join("\n")))
        }
        AdminCommand::DeletionRequestApprove { user } => {
            let user_id = services.local_user_id(&user)?;
            deletion_requests::approve(services, &user_id, None).await?;
            Ok(AdminOutput::ok(format!(
                "approved: {user_id} is deactivated and its personal data erased"
            )))
        }
        AdminCommand::DeletionRequestReject { user, reason } => {
            let user_id = services.local_user_id(&user)?;
            deletion_requests::reject(services, &user_id, None, reason)?;
            Ok(AdminOutput::ok(format!("rejected the deletion request of {user_id}")))
        }
        AdminCommand::SendTestMail { to } => {
            let body = format!(
                "This test mail shows that {} can send mail. No action is needed.\n",
                services.server_name
            );
            services.mail.send(&to, "Caduceus test mail", &body).await?;
            Ok(AdminOutput::ok(format!("sent a test mail to {to}")))
        }
        AdminCommand::Unlock { user } => {
            let user_id = services.local_user_id(&user)?;
            if !services.security.unlock(&user_id)? {
                return Ok(AdminOutput::ok(format!("{user_id} was not locked")));
            }
            let subject = AuditSubject { user_id: Some(user_id.as_str()), ..Default::default() };
            services.security.audit("account_unlocked", &subject, serde_json::Value::Null)?;
            Ok(AdminOutput::ok(format!("unlocked {user_id}")))
        }
        AdminCommand::Reindex => {
            let directory = services.directory.clone();
            let progress = tokio::task::spawn_blocking(move || {
                directory.rebuild(|progress| report_progress(progress, progress_to_stderr))
            })
            .await??;
            Ok(AdminOutput::ok(format!(
                "reindexed {} directory entries ({} skipped) in {:.1} s",
                progress.indexed,
                progress.skipped,
                progress.elapsed.as_secs_f64()
            )))
        }
    }
}

/// Draws a progress line on stderr for an operator, or logs it inside the server.
fn report_progress(progress: RebuildProgress, to_stderr: bool) {
    if !to_stderr {
        tracing::info!(indexed = progress.indexed, "rebuilding the directory index");
        return;
    }
    const WIDTH: u64 = 30;
    let line = match progress.expected {
        Some(expected) if expected > 0 => {
            let filled = (progress.indexed * WIDTH / expected).min(WIDTH) as usize;
            format!(
                "[{}{}] {}/{expected}",
                "#".repeat(filled),
                " ".repeat(WIDTH as usize - filled),
                progress.indexed
            )
        }
        _ => format!("{} entries indexed", progress.indexed),
    };
    let end = if progress.finished { "\n" } else { "" };
    eprint!("\r{line}{end}");
}

/// Runs a command on the server that uses this data dir, or on the data dir itself when no
/// server runs.
pub async fn run_anywhere(
    config: &caduceus_config::Config,
    command: AdminCommand,
) -> anyhow::Result<AdminOutput> {
    use anyhow::Context;

    let data_dir = &config.storage.data_dir;
    if let Some(output) = socket::send(data_dir, &command)
        .await
        .context("cannot reach the running server's admin socket")?
    {
        return Ok(output);
    }
    let db = crate::storage::Db::open(&data_dir.join("db"))
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    let services = Services::new(config.clone(), Arc::new(db))?;
    Ok(execute_with_progress(&services, command, true).await)
}
