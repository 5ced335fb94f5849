//! Administration commands (`caduceus admin ...`), run against a live server through its admin
//! socket or, when no server runs, directly on the data dir.

pub mod socket;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::service::{now_ms, Services};

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
    match run(services, command).await {
        Ok(output) => output,
        Err(Error::Matrix { message, .. }) => AdminOutput::failed(message),
        Err(error) => {
            tracing::error!(error = ?error, "admin command failed");
            AdminOutput::failed(format!("internal error: {error}"))
        }
    }
}

async fn run(services: &Arc<Services>, command: AdminCommand) -> Result<AdminOutput, Error> {
    if !matches!(command, AdminCommand::AuditLog { .. } | AdminCommand::RegistrationTokenList) {
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
    }
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
    Ok(execute(&services, command).await)
}
