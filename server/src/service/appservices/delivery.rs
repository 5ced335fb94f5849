//! Delivery of room events to application services with `PUT /_matrix/app/v1/transactions`.
//!
//! Durability: the rooms service records every PDU under its stream position in the same batch
//! that stores it (`event_positions`). Each application service has a record with the position
//! up to which its events are delivered. A delivery task reads the events after that position,
//! up to the stream's visible position (below which every event is committed), keeps those the
//! service is interested in and stores them as the transaction in flight, with its ID, before
//! the first attempt. Only a 200 answer with a JSON object moves the position on and clears the
//! transaction, in one synced write. A crash of either side therefore loses nothing: after a
//! restart the same transaction is sent again with the same ID, and later events follow it.
//! One transaction per service is in flight at a time, so events arrive in stream order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ruma::{EventId, OwnedRoomId, UserId};
use serde_json::{json, Value};

use super::{without_url, Appservice, Appservices};
use crate::error::Result;
use crate::storage::tables::PduRecord;
use crate::storage::tables::{AppserviceQueueRecord, PendingTransaction, APPSERVICE_QUEUES};

/// The most stream positions one transaction covers, and so the most events it carries.
const MAX_EVENTS_PER_TRANSACTION: usize = 100;

/// How long an idle delivery task waits for a new event before it looks again anyway.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// What one delivery step did.
enum Step {
    /// A transaction was delivered, or positions of no interest were passed over.
    Progress,
    /// Nothing new to deliver.
    Idle,
    /// The attempt failed; wait before the next one.
    Failed,
}

impl Appservices {
    /// Starts one delivery task for each application service with a URL. A service whose
    /// delivery record is missing, because it was registered since the last start, begins
    /// with the events after the current stream position.
    pub fn start_delivery(self: &Arc<Self>) -> Result<()> {
        for appservice in &self.list {
            if appservice.url().is_none() {
                continue;
            }
            let key = appservice.id().to_owned();
            if self.db.get(&APPSERVICE_QUEUES, &key)?.is_none() {
                let record = AppserviceQueueRecord {
                    delivered_up_to: self.stream.visible(),
                    ..AppserviceQueueRecord::default()
                };
                self.db.put(&APPSERVICE_QUEUES, &key, &record)?;
            }
            tokio::spawn(deliver(self.clone(), appservice.clone()));
        }
        Ok(())
    }

    async fn step(&self, appservice: &Appservice) -> Result<Step> {
        let key = appservice.id().to_owned();
        let mut record = self.db.get(&APPSERVICE_QUEUES, &key)?.unwrap_or_default();
        let pending = match record.in_flight.clone() {
            Some(pending) => pending,
            None => {
                let visible = self.stream.visible();
                if visible <= record.delivered_up_to {
                    return Ok(Step::Idle);
                }
                let pdus = self.rooms.events_after(
                    record.delivered_up_to,
                    visible,
                    MAX_EVENTS_PER_TRANSACTION,
                )?;
                let up_to = match pdus.last() {
                    Some(last) if pdus.len() == MAX_EVENTS_PER_TRANSACTION => last.position,
                    _ => visible,
                };
                let mut rooms = HashMap::new();
                let mut event_ids = Vec::new();
                for pdu in &pdus {
                    if self.is_interested(appservice, pdu, &mut rooms)? {
                        event_ids.push(pdu.event_id.to_string());
                    }
                }
                if event_ids.is_empty() {
                    record.delivered_up_to = up_to;
                    self.db.put(&APPSERVICE_QUEUES, &key, &record)?;
                    return Ok(Step::Progress);
                }
                let pending =
                    PendingTransaction { txn_id: record.next_txn.to_string(), up_to, event_ids };
                record.next_txn += 1;
                record.in_flight = Some(pending.clone());
                self.db.put(&APPSERVICE_QUEUES, &key, &record)?;
                pending
            }
        };

        if !self.send_transaction(appservice, &pending).await? {
            return Ok(Step::Failed);
        }
        record.delivered_up_to = pending.up_to;
        record.in_flight = None;
        self.db.put(&APPSERVICE_QUEUES, &key, &record)?;
        tracing::debug!(id = appservice.id(), txn_id = %pending.txn_id, events = pending.event_ids.len(), "transaction delivered");
        Ok(Step::Progress)
    }

    /// Sends one transaction. Returns whether the service acknowledged it.
    async fn send_transaction(
        &self,
        appservice: &Appservice,
        pending: &PendingTransaction,
    ) -> Result<bool> {
        let Some(url) = appservice.url() else { return Ok(false) };
        let mut events = Vec::with_capacity(pending.event_ids.len());
        for event_id in &pending.event_ids {
            let Ok(event_id) = EventId::parse(event_id) else { continue };
            if let Some(pdu) = self.rooms.get_pdu(&event_id)? {
                events.push(pdu.to_client_event(None));
            }
        }
        // TODO: typing notifications and receipts for services with `receive_ephemeral`.
        let body = json!({ "events": events });
        let response = self
            .http
            .put(format!(
                "{url}/_matrix/app/v1/transactions/{}",
                super::encode_segment(&pending.txn_id)
            ))
            .bearer_auth(&appservice.registration.hs_token)
            .json(&body)
            .send()
            .await;
        let failure = match response {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                match response.json::<Value>().await {
                    Ok(Value::Object(_)) => return Ok(true),
                    Ok(_) | Err(_) => "the answer is not a JSON object".to_owned(),
                }
            }
            Ok(response) => format!("status {}", response.status().as_u16()),
            Err(error) => without_url(error).to_string(),
        };
        tracing::warn!(
            id = appservice.id(),
            txn_id = %pending.txn_id,
            events = pending.event_ids.len(),
            failure,
            "application service transaction failed; it will be sent again"
        );
        Ok(false)
    }

    /// Whether an event concerns the application service: its sender or state key is a user
    /// of the service, or its room matches a room or alias namespace or has a joined member
    /// who is a user of the service. Room answers are cached per transaction in `rooms`.
    fn is_interested(
        &self,
        appservice: &Appservice,
        pdu: &PduRecord,
        rooms: &mut HashMap<OwnedRoomId, bool>,
    ) -> Result<bool> {
        let is_user =
            |id: &str| UserId::parse(id).is_ok_and(|user_id| appservice.owns_user(&user_id));
        if is_user(&pdu.sender()) || pdu.state_key().is_some_and(|key| is_user(&key)) {
            return Ok(true);
        }
        if appservice.matches_room(&pdu.room_id) {
            return Ok(true);
        }
        if let Some(known) = rooms.get(&pdu.room_id) {
            return Ok(*known);
        }
        let mut interested = self
            .rooms
            .joined_members(&pdu.room_id)?
            .iter()
            .any(|member| appservice.owns_user(member));
        if !interested && appservice.has_alias_namespaces() {
            interested = self.rooms.aliases_of_room(&pdu.room_id)?.iter().any(|alias| {
                ruma::RoomAliasId::parse(alias).is_ok_and(|alias| appservice.matches_alias(&alias))
            });
        }
        rooms.insert(pdu.room_id.clone(), interested);
        Ok(interested)
    }

    /// The wait after `failures` failed attempts in a row: the base doubled each time, capped.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u64 << failures.saturating_sub(1).min(32);
        let millis = self.config.retry_base_ms.saturating_mul(factor).min(self.config.retry_max_ms);
        Duration::from_millis(millis)
    }
}

/// The delivery task of one application service; it runs until the server stops.
async fn deliver(appservices: Arc<Appservices>, appservice: Arc<Appservice>) {
    let mut failures = 0u32;
    loop {
        // Registered before looking for events, so an event appended meanwhile still wakes us.
        let appended = appservices.rooms.appended().notified();
        tokio::pin!(appended);
        appended.as_mut().enable();

        let step = appservices.step(&appservice).await.unwrap_or_else(|error| {
            tracing::error!(id = appservice.id(), error = ?error, "application service delivery failed");
            Step::Failed
        });
        match step {
            Step::Progress => failures = 0,
            Step::Idle => {
                failures = 0;
                let _ = tokio::time::timeout(IDLE_POLL, appended).await;
            }
            Step::Failed => {
                failures = failures.saturating_add(1);
                tokio::time::sleep(appservices.backoff(failures)).await;
            }
        }
    }
}
