//! One receiver: a user that long-polls `/sync` and records when each message arrives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::client::{Homeserver, Session, SyncResponse};

/// How long a receiver waits before it repeats a failed `/sync`.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// The event IDs every sender had acknowledged, published once all senders have finished.
pub type Acknowledged = watch::Receiver<Option<Arc<HashSet<String>>>>;

pub struct ReceiverConfig {
    pub server: Homeserver,
    pub session: Session,
    pub filter: String,
    pub since: String,
    pub sync_timeout: Duration,
    pub deadline: tokio::time::Instant,
    pub acknowledged: Acknowledged,
}

#[derive(Default)]
pub struct ReceiverOutcome {
    /// When each event first arrived, by event ID.
    pub arrivals: HashMap<String, Instant>,
    /// Events that arrived again in a later response.
    pub duplicates: usize,
    pub sync_responses: usize,
    /// Responses whose timeline for the room was `limited`, which means events were skipped.
    pub limited_responses: usize,
    /// Failed `/sync` requests by kind.
    pub failures: BTreeMap<String, usize>,
}

/// A `/sync` filter that returns only `m.room.message` timeline events of `room_id`, at most
/// `timeline_limit` per response, and nothing else.
pub fn sync_filter(room_id: &str, timeline_limit: u64) -> String {
    json!({
        "room": {
            "rooms": [room_id],
            "timeline": { "limit": timeline_limit.max(1), "types": ["m.room.message"] },
            "state": { "types": [] },
            "ephemeral": { "types": [] },
            "account_data": { "types": [] },
        },
        "presence": { "types": [] },
        "account_data": { "types": [] },
    })
    .to_string()
}

impl ReceiverOutcome {
    /// Records the messages in `response`, received at `received`, and removes them from
    /// `pending`.
    fn record(
        &mut self,
        response: &SyncResponse,
        received: Instant,
        mut pending: Option<&mut HashSet<String>>,
    ) {
        self.sync_responses += 1;
        for room in response.rooms.join.values() {
            if room.timeline.limited {
                self.limited_responses += 1;
            }
            for event in &room.timeline.events {
                if event.event_type != "m.room.message" {
                    continue;
                }
                if self.arrivals.contains_key(&event.event_id) {
                    self.duplicates += 1;
                    continue;
                }
                self.arrivals.insert(event.event_id.clone(), received);
                if let Some(pending) = pending.as_deref_mut() {
                    pending.remove(&event.event_id);
                }
            }
        }
    }
}

enum Wait {
    Response(Result<(SyncResponse, Instant), super::client::RequestFailure>),
    Complete,
    Deadline,
}

/// Long-polls `/sync` until every acknowledged message has arrived or the deadline passes.
pub async fn receive(config: ReceiverConfig) -> ReceiverOutcome {
    let ReceiverConfig {
        server,
        session,
        filter,
        mut since,
        sync_timeout,
        deadline,
        mut acknowledged,
    } = config;
    let mut outcome = ReceiverOutcome::default();
    // The acknowledged events not seen yet, known once the senders have finished.
    let mut pending: Option<HashSet<String>> = None;
    let mut channel_open = true;

    loop {
        if pending.as_ref().is_some_and(HashSet::is_empty) {
            break;
        }
        let wait = {
            let request = server.sync(&session, Some(&since), &filter, sync_timeout);
            tokio::pin!(request);

            // The request stays in flight when the acknowledged set arrives, so no response is
            // dropped. Only a completed set or the deadline ends the wait early.
            loop {
                tokio::select! {
                    result = &mut request => break Wait::Response(result),
                    _ = tokio::time::sleep_until(deadline) => break Wait::Deadline,
                    changed = acknowledged.changed(), if pending.is_none() && channel_open => {
                        if changed.is_err() {
                            // The run ended without publishing: wait for the deadline.
                            channel_open = false;
                            continue;
                        }
                        let Some(event_ids) = acknowledged.borrow_and_update().clone() else {
                            continue;
                        };
                        let unseen: HashSet<String> = event_ids
                            .iter()
                            .filter(|event_id| !outcome.arrivals.contains_key(*event_id))
                            .cloned()
                            .collect();
                        let complete = unseen.is_empty();
                        pending = Some(unseen);
                        if complete {
                            break Wait::Complete;
                        }
                    }
                }
            }
        };

        match wait {
            Wait::Complete | Wait::Deadline => break,
            Wait::Response(Ok((response, received))) => {
                outcome.record(&response, received, pending.as_mut());
                since = response.next_batch;
            }
            Wait::Response(Err(failure)) => {
                let count = outcome.failures.entry(failure.to_string()).or_default();
                *count += 1;
                if *count == 1 {
                    tracing::warn!(user_id = session.user_id, %failure, "/sync failed");
                }
                let retry_at = tokio::time::Instant::now() + RETRY_DELAY;
                tokio::time::sleep_until(retry_at.min(deadline)).await;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    outcome
}
