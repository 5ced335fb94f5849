//! The background task that ends linked sessions when their time is up and records each end in
//! the audit log.

use std::sync::Arc;
use std::time::Duration;

use super::security::AuditSubject;
use super::Services;

/// Runs the sweep until the task is dropped.
///
/// The sweep runs every half linked-session lifetime, at least once a minute and at most once
/// a second, so a session's device is deleted within that interval after the session ends.
/// Requests with its token are rejected from the end on, whether or not the sweep has run.
pub async fn run(services: Arc<Services>) {
    let lifetime = Duration::from_secs(services.config.sessions.linked_session_lifetime_secs);
    let period = (lifetime / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let sweep_services = services.clone();
        let result = tokio::task::spawn_blocking(move || sweep(&sweep_services)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %error, "ending expired linked sessions failed")
            }
            Err(error) => tracing::error!(error = %error, "the linked-session sweep panicked"),
        }
    }
}

fn sweep(services: &Services) -> crate::error::Result<()> {
    for ended in services.accounts.end_expired_sessions()? {
        let subject = AuditSubject {
            user_id: Some(ended.user_id.as_str()),
            device_id: Some(ended.device_id.as_str()),
            address: None,
        };
        services.security.audit(
            "session_expired",
            &subject,
            serde_json::json!({ "kind": "linked" }),
        )?;
    }
    Ok(())
}
