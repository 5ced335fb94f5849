//! Rooms: building, authorising and storing PDUs, room state, memberships and timelines.
//!
//! One writer per room: appending takes the room's lock, so `prev_events` is always the single
//! latest event and the room's history is a line. Every event is checked against the
//! authorization rules of its room version (`ruma-state-res`) before it is stored.

pub mod create;
pub mod membership;
pub mod pdu;
mod signing;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ruma::canonical_json::{to_canonical_value, CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::{json, Value};

use self::pdu::AuthEvent;
use super::now_ms;
use super::stream::Stream;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{
    MembershipRecord, PduRecord, RelationRecord, RoomRecord, StateMap, EVENT_POSITIONS,
    MEMBERSHIPS, PDUS, RELATIONS, ROOMS, ROOM_MEMBERS, STATE_GROUPS, TIMELINE, TRANSACTIONS,
};
use crate::storage::{Batch, Db};

/// Room versions this server creates.
pub const SUPPORTED_VERSIONS: &[&str] = &["10", "11", "12"];

/// How many state groups are kept decoded in memory.
const STATE_CACHE_SIZE: usize = 512;

/// An event to append, before it becomes a PDU.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub event_type: String,
    pub content: Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn state(event_type: &str, state_key: &str, content: Value) -> Self {
        Self {
            event_type: event_type.to_owned(),
            content,
            state_key: Some(state_key.to_owned()),
            redacts: None,
        }
    }

    pub fn message(event_type: &str, content: Value) -> Self {
        Self { event_type: event_type.to_owned(), content, state_key: None, redacts: None }
    }
}

pub struct Rooms {
    db: Arc<Db>,
    stream: Arc<Stream>,
    pub server_name: OwnedServerName,
    signing_key: Ed25519KeyPair,
    pub default_room_version: RoomVersionId,
    room_locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    state_cache: Mutex<HashMap<u64, Arc<StateMap>>>,
    /// Woken after every appended event, for readers that follow all rooms, such as
    /// application service delivery.
    appended: tokio::sync::Notify,
}

/// Looks up the rules of a room version this server supports.
pub fn version_rules(version: &str) -> Result<RoomVersionRules> {
    let version = RoomVersionId::try_from(version)
        .map_err(|_| Error::invalid_param(format!("{version:?} is not a room version")))?;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(Error::new(
            ErrorCode::UnsupportedRoomVersion,
            format!("Room version {version} is not supported; use one of 10, 11 or 12"),
        ));
    }
    version.rules().ok_or_else(|| {
        Error::new(ErrorCode::UnsupportedRoomVersion, format!("Room version {version} is unknown"))
    })
}

impl Rooms {
    pub fn new(
        db: Arc<Db>,
        stream: Arc<Stream>,
        server_name: OwnedServerName,
        data_dir: &std::path::Path,
        default_room_version: &str,
    ) -> anyhow::Result<Self> {
        let signing_key = signing::load_or_generate(data_dir)?;
        let default_room_version = RoomVersionId::try_from(default_room_version)?;
        Ok(Self {
            db,
            stream,
            server_name,
            signing_key,
            default_room_version,
            room_locks: Mutex::new(HashMap::new()),
            state_cache: Mutex::new(HashMap::new()),
            appended: tokio::sync::Notify::new(),
        })
    }

    fn room_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.room_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(room_id.to_owned()).or_default().clone()
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>> {
        Ok(self.db.get(&ROOMS, &room_id.to_string())?)
    }

    pub fn get_pdu(&self, event_id: &EventId) -> Result<Option<PduRecord>> {
        Ok(self.db.get(&PDUS, &event_id.to_string())?)
    }

    /// Returns the state map of a state group, from a small in-memory cache when possible.
    pub fn state_group(&self, group: u64) -> Result<Arc<StateMap>> {
        if let Some(state) = self.state_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&group)
        {
            return Ok(state.clone());
        }
        let state = Arc::new(self.db.get(&STATE_GROUPS, &group)?.unwrap_or_default());
        let mut cache = self.state_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= STATE_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(group, state.clone());
        Ok(state)
    }

    /// Returns the room's current state.
    pub fn current_state(&self, room_id: &RoomId) -> Result<Arc<StateMap>> {
        let room = self.room(room_id)?.ok_or_else(unknown_room)?;
        self.state_group(room.current_state_group)
    }

    /// Looks up one state event in a state map.
    pub fn state_pdu(
        &self,
        state: &StateMap,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<PduRecord>> {
        match state.get(event_type).and_then(|by_key| by_key.get(state_key)) {
            Some(event_id) => Ok(self.db.get(&PDUS, event_id)?),
            None => Ok(None),
        }
    }

    /// Loads every PDU of a state map.
    pub fn state_pdus(&self, state: &StateMap) -> Result<Vec<PduRecord>> {
        let mut pdus = Vec::new();
        for event_id in state.values().flat_map(|by_key| by_key.values()) {
            if let Some(pdu) = self.db.get(&PDUS, event_id)? {
                pdus.push(pdu);
            }
        }
        Ok(pdus)
    }

    /// Returns the content of a current state event.
    pub fn current_state_content(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>> {
        let state = self.current_state(room_id)?;
        Ok(self.state_pdu(&state, event_type, state_key)?.map(|pdu| pdu.content()))
    }

    pub fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<MembershipRecord>> {
        Ok(self.db.get(&ROOM_MEMBERS, &(room_id.to_string(), user_id.to_string()))?)
    }

    pub fn is_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        Ok(self.membership(room_id, user_id)?.is_some_and(|m| m.membership == "join"))
    }

    /// Lists every room the user has a membership in, with that membership.
    pub fn rooms_of_user(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, MembershipRecord)>> {
        let records = self.db.scan_prefix(&MEMBERSHIPS, &prefix(&[user_id.as_str()]))?;
        Ok(records
            .into_iter()
            .filter_map(|((_, room_id), record)| {
                RoomId::parse(&room_id).ok().map(|room_id| (room_id, record))
            })
            .collect())
    }

    /// Lists every member of the room with their latest membership.
    pub fn members(&self, room_id: &RoomId) -> Result<Vec<(OwnedUserId, MembershipRecord)>> {
        let records = self.db.scan_prefix(&ROOM_MEMBERS, &prefix(&[room_id.as_str()]))?;
        Ok(records
            .into_iter()
            .filter_map(|((_, user_id), record)| {
                UserId::parse(&user_id).ok().map(|user_id| (user_id, record))
            })
            .collect())
    }

    pub fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        Ok(self
            .members(room_id)?
            .into_iter()
            .filter(|(_, record)| record.membership == "join")
            .map(|(user_id, _)| user_id)
            .collect())
    }

    /// Events of a room's timeline with positions in `(after, up_to]`, oldest first; at most
    /// `limit`, taken from the newest end when `newest_first` is set.
    pub fn timeline(
        &self,
        room_id: &RoomId,
        after: u64,
        up_to: u64,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<PduRecord>> {
        let entries = self.timeline_ids(room_id, after, up_to)?;
        let selected: Vec<&String> = if newest_first {
            let mut newest: Vec<&String> = entries.iter().rev().take(limit).collect();
            newest.reverse();
            newest
        } else {
            entries.iter().take(limit).collect()
        };
        let mut pdus = Vec::with_capacity(selected.len());
        for event_id in selected {
            if let Some(pdu) = self.db.get(&PDUS, event_id)? {
                pdus.push(pdu);
            }
        }
        Ok(pdus)
    }

    /// Event IDs of the timeline with positions in `(after, up_to]`, oldest first.
    pub fn timeline_ids(&self, room_id: &RoomId, after: u64, up_to: u64) -> Result<Vec<String>> {
        let start = (room_id.to_string(), after.saturating_add(1));
        let records = self.db.scan_range(&TIMELINE, &start, &prefix(&[room_id.as_str()]))?;
        Ok(records
            .into_iter()
            .take_while(|((_, position), _)| *position <= up_to)
            .map(|(_, event_id)| event_id)
            .collect())
    }

    /// Children of an event by relation, oldest first.
    pub fn relations(&self, event_id: &EventId) -> Result<Vec<(u64, RelationRecord)>> {
        let records = self.db.scan_prefix(&RELATIONS, &prefix(&[event_id.as_str()]))?;
        Ok(records.into_iter().map(|((_, position), record)| (position, record)).collect())
    }

    /// Returns the event a transaction created, if the device already sent it.
    pub fn transaction_event(
        &self,
        user_id: &UserId,
        device_id: &str,
        txn_id: &str,
    ) -> Result<Option<OwnedEventId>> {
        let key = (user_id.to_string(), device_id.to_owned(), txn_id.to_owned());
        Ok(self.db.get(&TRANSACTIONS, &key)?.and_then(|id| EventId::parse(id).ok()))
    }

    /// Checks whether the user may see this event under the room's history visibility.
    pub fn can_see_event(&self, user_id: &UserId, pdu: &PduRecord) -> Result<bool> {
        let state = self.state_group(pdu.state_before)?;
        let visibility = self
            .state_pdu(&state, "m.room.history_visibility", "")?
            .and_then(|event| {
                event
                    .content()
                    .get("history_visibility")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".to_owned());
        if visibility == "world_readable" {
            return Ok(true);
        }
        // The sender's own membership event changes their membership at that point, so it is
        // judged by the state after it.
        let membership_state = if pdu.event_type() == "m.room.member"
            && pdu.state_key().as_deref() == Some(user_id.as_str())
        {
            self.state_group(pdu.state_after)?
        } else {
            state
        };
        let membership_then = self
            .state_pdu(&membership_state, "m.room.member", user_id.as_str())?
            .and_then(|event| event.membership());
        Ok(match (visibility.as_str(), membership_then.as_deref()) {
            (_, Some("join")) => true,
            ("invited", Some("invite")) => true,
            ("shared", _) => self.is_joined(&pdu.room_id, user_id)?,
            _ => false,
        })
    }

    /// Builds, signs, authorises and stores an event, then wakes the room's members.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        transaction: Option<(String, String)>,
    ) -> Result<OwnedEventId> {
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;

        if let Some((device_id, txn_id)) = &transaction {
            if let Some(event_id) = self.transaction_event(sender, device_id, txn_id)? {
                return Ok(event_id);
            }
        }

        let room = self.room(room_id)?.ok_or_else(unknown_room)?;
        let rules = version_rules(&room.room_version)?;
        let state = self.state_group(room.current_state_group)?;

        if let Some(target) = &draft.redacts {
            self.check_redaction(&state, &rules, sender, target)?;
        }
        let mut object = self.build_event(room_id, sender, &draft, &room, &rules, &state)?;
        let event_id = self.sign_event(&mut object, &rules)?;
        self.authorize(&rules, &event_id, &object, &state)?;

        let position = self.stream.next()?;
        let mut batch = self.db.batch();
        let (state_after, new_state) = match &draft.state_key {
            Some(state_key) => {
                let mut new_state = (*state).clone();
                new_state
                    .entry(draft.event_type.clone())
                    .or_default()
                    .insert(state_key.clone(), event_id.to_string());
                (position.get(), Some(new_state))
            }
            None => (room.current_state_group, None),
        };
        if let Some(new_state) = &new_state {
            batch.put(&STATE_GROUPS, &position.get(), new_state);
        }

        let record = PduRecord {
            event_id: event_id.clone(),
            room_id: room_id.to_owned(),
            pdu: object,
            position: position.get(),
            state_before: room.current_state_group,
            state_after,
            redacted_by: None,
            transaction: transaction.clone(),
        };
        self.stage_pdu(&mut batch, &record, &draft, &rules)?;
        if let Some((device_id, txn_id)) = &transaction {
            batch.put(
                &TRANSACTIONS,
                &(sender.to_string(), device_id.clone(), txn_id.clone()),
                &event_id.to_string(),
            );
        }
        batch.put(
            &ROOMS,
            &room_id.to_string(),
            &RoomRecord {
                latest_event_id: event_id.to_string(),
                depth: room.depth + 1,
                current_state_group: state_after,
                ..room
            },
        );
        self.db.commit(batch)?;
        drop(position);

        if let Some(new_state) = new_state {
            let mut cache = self.state_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(state_after, Arc::new(new_state));
        }
        self.notify_room(room_id, draft.state_key.as_deref(), &draft.event_type)?;
        tracing::debug!(room_id = %room_id, event_id = %event_id, "event appended");
        Ok(event_id)
    }

    /// A user's power level in a state: creators are unlimited from room version 12 on.
    pub fn power_level(
        &self,
        state: &StateMap,
        rules: &RoomVersionRules,
        user_id: &UserId,
    ) -> Result<i64> {
        if rules.authorization.explicitly_privilege_room_creators {
            if let Some(create) = self.state_pdu(state, "m.room.create", "")? {
                let additional = create.content().get("additional_creators").cloned();
                let is_additional = additional
                    .and_then(|list| list.as_array().cloned())
                    .is_some_and(|list| list.iter().any(|v| v.as_str() == Some(user_id.as_str())));
                if create.sender() == user_id.as_str() || is_additional {
                    return Ok(i64::MAX);
                }
            }
        }
        let Some(power_levels) = self.state_pdu(state, "m.room.power_levels", "")? else {
            // Without a power levels event the creator has 100 and everyone else 0.
            let creator = self.state_pdu(state, "m.room.create", "")?.map(|create| create.sender());
            return Ok(if creator.as_deref() == Some(user_id.as_str()) { 100 } else { 0 });
        };
        let content = power_levels.content();
        let level = content
            .get("users")
            .and_then(|users| users.get(user_id.as_str()))
            .or_else(|| content.get("users_default"))
            .and_then(as_level)
            .unwrap_or(0);
        Ok(level)
    }

    /// Checks a redaction: users may redact their own events, and redacting others' needs the
    /// `redact` power level.
    fn check_redaction(
        &self,
        state: &StateMap,
        rules: &RoomVersionRules,
        sender: &UserId,
        target: &EventId,
    ) -> Result<()> {
        let Some(target) = self.get_pdu(target)? else { return Ok(()) };
        if target.sender() == sender.as_str() {
            return Ok(());
        }
        let required = self
            .state_pdu(state, "m.room.power_levels", "")?
            .and_then(|pl| pl.content().get("redact").and_then(as_level))
            .unwrap_or(50);
        if self.power_level(state, rules, sender)? < required {
            return Err(Error::forbidden(
                "You can only redact your own messages; redacting others' needs a higher power level",
            ));
        }
        Ok(())
    }

    /// Wakes every joined member, and the target of a membership change.
    fn notify_room(
        &self,
        room_id: &RoomId,
        state_key: Option<&str>,
        event_type: &str,
    ) -> Result<()> {
        let mut users = self.joined_members(room_id)?;
        if event_type == "m.room.member" {
            if let Some(target) = state_key.and_then(|key| UserId::parse(key).ok()) {
                users.push(target);
            }
        }
        self.stream.notify(users.iter().map(|user| user.as_ref()));
        self.appended.notify_waiters();
        Ok(())
    }

    /// Woken after every appended event. Create the `notified()` future before checking for
    /// new events, so a wake-up between the check and the wait is not missed.
    pub fn appended(&self) -> &tokio::sync::Notify {
        &self.appended
    }

    /// Lists the PDUs of all rooms with positions in `after + 1..=up_to`, oldest first, at most
    /// `limit` of them. Callers pass a position no higher than `Stream::visible`, so no event
    /// committed later can appear below one already returned.
    pub fn events_after(&self, after: u64, up_to: u64, limit: usize) -> Result<Vec<PduRecord>> {
        use crate::storage::KeyCodec;
        let start = (after + 1).encode_key();
        let end = up_to.saturating_add(1).encode_key();
        let mut pdus = Vec::new();
        for (_, event_id) in self.db.scan_between(&EVENT_POSITIONS, &start, &end)? {
            if pdus.len() >= limit {
                break;
            }
            if let Some(pdu) = self.db.get(&PDUS, &event_id)? {
                pdus.push(pdu);
            }
        }
        Ok(pdus)
    }

    fn build_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
        room: &RoomRecord,
        rules: &RoomVersionRules,
        state: &StateMap,
    ) -> Result<CanonicalJsonObject> {
        let content_raw = serde_json::value::to_raw_value(&draft.content)
            .map_err(|error| Error::bad_json(format!("The content is not valid: {error}")))?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &TimelineEventType::from(draft.event_type.as_str()),
            sender,
            draft.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(|error| Error::bad_json(format!("The event content is invalid: {error}")))?;

        let mut auth_events: Vec<String> = Vec::new();
        for (event_type, state_key) in auth_types {
            if let Some(event_id) =
                state.get(&event_type.to_string()).and_then(|by_key| by_key.get(&state_key))
            {
                if !auth_events.contains(event_id) {
                    auth_events.push(event_id.clone());
                }
            }
        }

        let mut event = json!({
            "auth_events": auth_events,
            "prev_events": [room.latest_event_id],
            "content": draft.content,
            "depth": room.depth + 1,
            "origin_server_ts": now_ms(),
            "room_id": room_id,
            "sender": sender,
            "type": draft.event_type,
        });
        if let Some(state_key) = &draft.state_key {
            event["state_key"] = json!(state_key);
        }
        if let Some(redacts) = &draft.redacts {
            // Room versions before 11 carry `redacts` at the top level; from 11 on it lives in
            // the content, which the caller already set. Both are accepted by clients.
            event["redacts"] = json!(redacts);
        }
        to_object(event)
    }

    /// Adds the content hash and the server's signature, and returns the reference-hash event ID.
    fn sign_event(
        &self,
        object: &mut CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<OwnedEventId> {
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            &self.signing_key,
            object,
            &rules.redaction,
        )
        .map_err(|error| Error::bad_json(format!("The event cannot be signed: {error}")))?;
        let hash = ruma::signatures::reference_hash(object, rules).map_err(|error| {
            Error::bad_json(format!("The event is too large or invalid: {error}"))
        })?;
        EventId::parse(format!("${hash}")).map_err(|error| {
            Error::Internal(anyhow::anyhow!("the reference hash is not a valid event ID: {error}"))
        })
    }

    /// Runs the authorization rules of the room version against the current state.
    fn authorize(
        &self,
        rules: &RoomVersionRules,
        event_id: &EventId,
        object: &CanonicalJsonObject,
        state: &StateMap,
    ) -> Result<()> {
        ruma::state_res::check_pdu_format(object, &rules.event_format)
            .map_err(|error| Error::bad_json(format!("The event is malformed: {error}")))?;
        let event = AuthEvent::from_pdu(event_id.to_owned(), object)
            .map_err(|error| Error::bad_json(format!("The event is malformed: {error}")))?;

        let fetch_event = |id: &EventId| -> Option<AuthEvent> {
            let record = self.db.get(&PDUS, &id.to_string()).ok().flatten()?;
            AuthEvent::from_pdu(record.event_id.clone(), &record.pdu).ok()
        };
        ruma::state_res::check_state_independent_auth_rules(
            &rules.authorization,
            &event,
            fetch_event,
        )
        .map_err(forbidden_by_rules)?;

        let fetch_state = |event_type: &ruma::events::StateEventType, state_key: &str| {
            let event_id = state.get(&event_type.to_string())?.get(state_key)?;
            let record = self.db.get(&PDUS, event_id).ok().flatten()?;
            AuthEvent::from_pdu(record.event_id.clone(), &record.pdu).ok()
        };
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &event, fetch_state)
            .map_err(forbidden_by_rules)
    }

    /// Adds a PDU and everything derived from it to a batch: the event itself, its timeline
    /// entry, membership indexes, relations and the effect of a redaction.
    fn stage_pdu(
        &self,
        batch: &mut Batch<'_>,
        record: &PduRecord,
        draft: &EventDraft,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        let room_id = record.room_id.to_string();
        batch.put(&PDUS, &record.event_id.to_string(), record);
        batch.put(&TIMELINE, &(room_id.clone(), record.position), &record.event_id.to_string());
        batch.put(&EVENT_POSITIONS, &record.position, &record.event_id.to_string());

        if draft.event_type == "m.room.member" {
            if let (Some(target), Some(membership)) = (&draft.state_key, record.membership()) {
                let membership = MembershipRecord {
                    membership,
                    event_id: record.event_id.to_string(),
                    position: record.position,
                    forgotten: false,
                };
                batch.put(&MEMBERSHIPS, &(target.clone(), room_id.clone()), &membership);
                batch.put(&ROOM_MEMBERS, &(room_id.clone(), target.clone()), &membership);
            }
        }

        if let Some(relates_to) = draft.content.get("m.relates_to") {
            let parent = relates_to.get("event_id").and_then(|v| v.as_str());
            let rel_type = relates_to.get("rel_type").and_then(|v| v.as_str());
            if let (Some(parent), Some(rel_type)) = (parent, rel_type) {
                batch.put(
                    &RELATIONS,
                    &(parent.to_owned(), record.position),
                    &RelationRecord {
                        event_id: record.event_id.to_string(),
                        rel_type: rel_type.to_owned(),
                        event_type: draft.event_type.clone(),
                    },
                );
            }
        }

        if let Some(redacts) = &draft.redacts {
            if let Some(mut target) = self.get_pdu(redacts)? {
                if target.room_id == record.room_id && target.redacted_by.is_none() {
                    // The content is erased, not just hidden: clinicians redact to remove
                    // patient details, so the server keeps only what the redaction algorithm
                    // of the room version keeps.
                    target.pdu = ruma::canonical_json::redact(target.pdu, &rules.redaction, None)
                        .map_err(|error| anyhow::anyhow!("redaction failed: {error}"))?;
                    target.redacted_by = Some(record.event_id.clone());
                    batch.put(&PDUS, &target.event_id.to_string(), &target);
                }
            }
        }
        Ok(())
    }

    /// Stores the first event of a new room, whose checks and IDs differ from all others.
    fn store_create_event(
        &self,
        room_id: &RoomId,
        object: CanonicalJsonObject,
        event_id: OwnedEventId,
        room_version: &RoomVersionId,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        self.authorize(rules, &event_id, &object, &StateMap::new())?;
        let creator = object
            .get("sender")
            .and_then(|value| match value {
                CanonicalJsonValue::String(sender) => Some(sender.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let position = self.stream.next()?;
        let mut state = StateMap::new();
        state
            .entry("m.room.create".to_owned())
            .or_default()
            .insert(String::new(), event_id.to_string());

        let record = PduRecord {
            event_id: event_id.clone(),
            room_id: room_id.to_owned(),
            pdu: object,
            position: position.get(),
            state_before: 0,
            state_after: position.get(),
            redacted_by: None,
            transaction: None,
        };
        let draft = EventDraft::state("m.room.create", "", record.content());
        let mut batch = self.db.batch();
        batch.put(&STATE_GROUPS, &position.get(), &state);
        self.stage_pdu(&mut batch, &record, &draft, rules)?;
        batch.put(
            &ROOMS,
            &room_id.to_string(),
            &RoomRecord {
                room_version: room_version.to_string(),
                latest_event_id: event_id.to_string(),
                depth: 1,
                current_state_group: position.get(),
                created_ts: now_ms(),
            },
        );
        self.db.commit(batch)?;
        tracing::info!(room_id = %room_id, creator, version = %room_version, "room created");
        Ok(())
    }

    /// Returns the stream position of the room's latest event.
    pub fn latest_position(&self, room_id: &RoomId) -> Result<u64> {
        let room = self.room(room_id)?.ok_or_else(unknown_room)?;
        Ok(self
            .get_pdu(&EventId::parse(&room.latest_event_id).map_err(|e| anyhow::anyhow!("{e}"))?)?
            .map_or(0, |pdu| pdu.position))
    }

    /// Marks a left room as forgotten for the user.
    pub fn forget(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        let key = (user_id.to_string(), room_id.to_string());
        let Some(mut record) = self.db.get(&MEMBERSHIPS, &key)? else {
            return Err(Error::not_found("You have never been in this room"));
        };
        if record.membership == "join" || record.membership == "invite" {
            return Err(Error::bad_json("Leave the room before forgetting it"));
        }
        record.forgotten = true;
        self.db.put(&MEMBERSHIPS, &key, &record)?;
        Ok(())
    }

    /// Lists the users who share at least one joined room with `user_id`, including the user.
    pub fn users_sharing_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedUserId>> {
        let mut users = BTreeMap::new();
        users.insert(user_id.to_owned(), ());
        for (room_id, record) in self.rooms_of_user(user_id)? {
            if record.membership == "join" {
                for member in self.joined_members(&room_id)? {
                    users.insert(member, ());
                }
            }
        }
        Ok(users.into_keys().collect())
    }
}

fn to_object(value: Value) -> Result<CanonicalJsonObject> {
    match to_canonical_value(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(Error::bad_json("The event must be a JSON object")),
        Err(error) => Err(Error::bad_json(format!(
            "The event is not valid canonical JSON (floats and integers beyond 2^53 are not allowed): {error}"
        ))),
    }
}

/// Reads a power level, which older clients send as a string.
fn as_level(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

fn forbidden_by_rules(reason: String) -> Error {
    Error::forbidden(format!("The event is not allowed by the room's rules: {reason}"))
}

pub fn unknown_room() -> Error {
    Error::not_found("This room does not exist on this server")
}
