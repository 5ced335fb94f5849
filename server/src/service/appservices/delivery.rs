//! Delivery of room events to application services with `PUT /_matrix/app/v1/transactions`.
//!
//! Durability: the rooms service records every PDU under its stream position in the same batch
//! that stores it (`event_positions`). Each application service has a record with the position
//! up to which its events are delivered. A delivery task reads the events after that position,
//! up to the stream's visible position, below which every event is committed. It keeps those
//! the service is interested in and stores them as the transaction in flight, with its ID,
//! before the first attempt. Only a 200 response with a JSON object moves the position on and
//! clears the transaction, in one synced write. A crash of either side therefore loses nothing: after a
//! restart the same transaction is sent again with the same ID, and later events follow it.
//! One transaction per service is in flight at a time, so events arrive in stream order.
//!
//! Services whose registration sets `receive_ephemeral` also get typing notifications and read
//! receipts in the `ephemeral` field, for the rooms they are interested in. These wait in
//! memory for the next transaction (at most [`MAX_EPHEMERAL_QUEUED`] per service, the oldest
//! dropped first) and are lost in a restart of the homeserver: typing notifications expire
//! within seconds, and receipts stay readable through `/sync`. A typing notification that runs
//! out without a stop is not reported. Once they are part of a transaction they are stored with
//! it and retried like its events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value};

use super::{without_url, Appservice, Appservices};
use crate::error::Result;
use crate::storage::tables::PduRecord;
use crate::storage::tables::{AppserviceQueueRecord, PendingTransaction, APPSERVICE_QUEUES};

/// Maximum number of stream positions one transaction covers, and so of events it carries.
const MAX_EVENTS_PER_TRANSACTION: usize = 100;

/// How long an idle delivery task waits for a new event before it looks again anyway.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Maximum number of typing notifications and receipts waiting for one service's next
/// transaction.
const MAX_EPHEMERAL_QUEUED: usize = 1000;

/// The outcome of one delivery step.
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
                let (event_ids, up_to) = if visible > record.delivered_up_to {
                    self.interesting_events(appservice, record.delivered_up_to, visible)?
                } else {
                    (Vec::new(), record.delivered_up_to)
                };
                let ephemeral = self.take_ephemeral(appservice.id());
                if event_ids.is_empty() && ephemeral.is_empty() {
                    if up_to == record.delivered_up_to {
                        return Ok(Step::Idle);
                    }
                    record.delivered_up_to = up_to;
                    self.db.put(&APPSERVICE_QUEUES, &key, &record)?;
                    return Ok(Step::Progress);
                }
                let pending = PendingTransaction {
                    txn_id: record.next_txn.to_string(),
                    up_to,
                    event_ids,
                    ephemeral,
                };
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
        tracing::debug!(id = appservice.id(), txn_id = %pending.txn_id, events = pending.event_ids.len(), ephemeral = pending.ephemeral.len(), "transaction delivered");
        Ok(Step::Progress)
    }

    /// Returns the IDs of the events after stream position `after`, up to `visible`, that
    /// interest the service, with the position the transaction covers up to.
    fn interesting_events(
        &self,
        appservice: &Appservice,
        after: u64,
        visible: u64,
    ) -> Result<(Vec<String>, u64)> {
        let pdus = self.rooms.events_after(after, visible, MAX_EVENTS_PER_TRANSACTION)?;
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
        Ok((event_ids, up_to))
    }

    /// Queues a typing notification or a receipt of `room_id` for every service with
    /// `receive_ephemeral` interested in the room. `private_to` is the owner of a private
    /// receipt: only services whose namespace covers that user get it. `event` has `type`,
    /// `room_id` and `content`; a newer `m.typing` of a room replaces the waiting one.
    pub fn push_ephemeral(
        &self,
        room_id: &RoomId,
        event: Value,
        private_to: Option<&UserId>,
    ) -> Result<()> {
        let mut targets = Vec::new();
        for appservice in &self.list {
            if !appservice.receive_ephemeral || appservice.url().is_none() {
                continue;
            }
            if private_to.is_some_and(|owner| !appservice.owns_user(owner)) {
                continue;
            }
            if self.is_interested_in_room(appservice, room_id)? {
                targets.push(appservice.id().to_owned());
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let is_typing = event["type"] == "m.typing";
        let mut queues = self.ephemeral.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in targets {
            let queue = queues.entry(id).or_default();
            if is_typing {
                queue.retain(|queued| {
                    queued["type"] != "m.typing" || queued["room_id"] != room_id.as_str()
                });
            }
            queue.push_back(event.clone());
            while queue.len() > MAX_EPHEMERAL_QUEUED {
                queue.pop_front();
            }
        }
        drop(queues);
        self.ephemeral_added.notify_waiters();
        Ok(())
    }

    /// Takes the ephemeral events waiting for a service, oldest first.
    fn take_ephemeral(&self, id: &str) -> Vec<Value> {
        let mut queues = self.ephemeral.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.remove(id).map(Vec::from).unwrap_or_default()
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
        let mut body = json!({ "events": events });
        if !pending.ephemeral.is_empty() {
            body["ephemeral"] = Value::Array(pending.ephemeral.clone());
        }
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
                    Ok(_) | Err(_) => "the response is not a JSON object".to_owned(),
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
    /// who is a user of the service. Results per room are cached per transaction in `rooms`.
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
        if let Some(known) = rooms.get(&pdu.room_id) {
            return Ok(*known);
        }
        let interested = self.is_interested_in_room(appservice, &pdu.room_id)?;
        rooms.insert(pdu.room_id.clone(), interested);
        Ok(interested)
    }

    /// Checks whether the room matches a room or alias namespace of the service or has a
    /// joined member who is a user of the service.
    fn is_interested_in_room(&self, appservice: &Appservice, room_id: &RoomId) -> Result<bool> {
        if appservice.matches_room(room_id) {
            return Ok(true);
        }
        let has_member =
            self.rooms.joined_members(room_id)?.iter().any(|member| appservice.owns_user(member));
        if has_member || !appservice.has_alias_namespaces() {
            return Ok(has_member);
        }
        Ok(self.rooms.aliases_of_room(room_id)?.iter().any(|alias| {
            ruma::RoomAliasId::parse(alias).is_ok_and(|alias| appservice.matches_alias(&alias))
        }))
    }

    /// Returns the wait after `failures` failed attempts in a row: the base doubled each time,
    /// capped.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u64 << failures.saturating_sub(1).min(32);
        let millis = self.config.retry_base_ms.saturating_mul(factor).min(self.config.retry_max_ms);
        Duration::from_millis(millis)
    }
}

/// Runs the delivery task of one application service until the server stops.
async fn deliver(appservices: Arc<Appservices>, appservice: Arc<Appservice>) {
    let mut failures = 0u32;
    loop {
        // Registered before looking for events, so an event appended or a typing notification
        // queued meanwhile still wakes us.
        let appended = appservices.rooms.appended().notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let ephemeral = appservices.ephemeral_added.notified();
        tokio::pin!(ephemeral);
        ephemeral.as_mut().enable();

        let step = appservices.step(&appservice).await.unwrap_or_else(|error| {
            tracing::error!(id = appservice.id(), error = ?error, "application service delivery failed");
            Step::Failed
        });
        match step {
            Step::Progress => failures = 0,
            Step::Idle => {
                failures = 0;
                let woken = async {
                    tokio::select! {
                        () = appended => {}
                        () = ephemeral => {}
                    }
                };
                let _ = tokio::time::timeout(IDLE_POLL, woken).await;
            }
            Step::Failed => {
                failures = failures.saturating_add(1);
                tokio::time::sleep(appservices.backoff(failures)).await;
            }
        }
    }
}
