//! One sender: a user that sends its messages one after another, timing each request.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;

use super::client::{Homeserver, RequestFailure, Session};

pub struct SenderConfig {
    pub server: Homeserver,
    pub session: Session,
    pub room_id: String,
    pub run_id: String,
    pub sender_index: usize,
    pub messages: u32,
    pub deadline: tokio::time::Instant,
}

/// A message the server acknowledged with an event ID.
pub struct SentMessage {
    pub event_id: String,
    /// When the request was started.
    pub started: Instant,
    /// When the response was received.
    pub returned: Instant,
}

#[derive(Default)]
pub struct SenderOutcome {
    pub sent: Vec<SentMessage>,
    /// Failed requests by kind, such as `HTTP 500 M_UNKNOWN` or `timed out`.
    pub failures: BTreeMap<String, usize>,
    /// Requests still in flight at the deadline. The server may or may not have stored them.
    pub cut_off: usize,
    /// Messages not sent because the deadline came first.
    pub not_attempted: usize,
}

/// Sends `config.messages` messages, stopping early at the deadline.
pub async fn send_all(config: SenderConfig) -> SenderOutcome {
    let mut outcome = SenderOutcome::default();
    for index in 0..config.messages {
        if tokio::time::Instant::now() >= config.deadline {
            outcome.not_attempted = (config.messages - index) as usize;
            break;
        }
        let txn_id = format!("{}-{}-{index}", config.run_id, config.sender_index);
        let content = json!({
            "msgtype": "m.text",
            "body": format!(
                "Load test message {index} from sender {} in run {}",
                config.sender_index, config.run_id
            ),
        });

        let started = Instant::now();
        let request =
            config.server.send_message(&config.session, &config.room_id, &txn_id, &content);
        let result = tokio::time::timeout_at(config.deadline, request).await;
        let returned = Instant::now();
        match result {
            Ok(Ok(event_id)) => outcome.sent.push(SentMessage { event_id, started, returned }),
            Ok(Err(failure)) => record_failure(&mut outcome.failures, &config.session, failure),
            Err(_) => {
                outcome.cut_off += 1;
                outcome.not_attempted = (config.messages - index - 1) as usize;
                break;
            }
        }
    }
    outcome
}

/// Counts `failure` and logs the first failure of each kind for this sender.
fn record_failure(
    failures: &mut BTreeMap<String, usize>,
    session: &Session,
    failure: RequestFailure,
) {
    let count = failures.entry(failure.to_string()).or_default();
    *count += 1;
    if *count == 1 {
        tracing::warn!(user_id = session.user_id, %failure, "sending a message failed");
    }
}
