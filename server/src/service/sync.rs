//! `/sync`: what changed for a user between two stream positions, waiting for news when there
//! is none.
//!
//! `since` and `next_batch` are stream positions. A response covers `(since, next_batch]`, where
//! `next_batch` is the stream's visible position when the request started computing, so a
//! record committed late with a lower position is never skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use ruma::push::{Action, PushConditionRoomCtx, Tweak};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use serde_json::{json, Map, Value};

use super::accounts::Sender;
use super::Services;
use crate::error::{Error, Result};
use crate::storage::tables::{MembershipRecord, PduRecord};

/// How many timeline events a room gets when the filter sets no limit.
const DEFAULT_TIMELINE_LIMIT: usize = 10;

/// The maximum time a request waits for news.
const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How many recent events are read to count unread notifications.
const UNREAD_SCAN_LIMIT: usize = 1000;

pub struct SyncRequest {
    pub since: Option<u64>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: FilterDefinition,
}

/// Parses a `since` or pagination token: a stream position in decimal.
pub fn parse_token(token: &str) -> Result<u64> {
    token.trim_start_matches(['s', 't']).parse().map_err(|_| {
        Error::invalid_param(format!("{token:?} is not a valid sync or pagination token"))
    })
}

pub async fn sync(services: &Services, sender: &Sender, request: SyncRequest) -> Result<Value> {
    let deadline = Instant::now() + request.timeout.min(MAX_TIMEOUT);
    let notify = services.stream.subscribe(&sender.user_id);
    if let Some(since) = request.since {
        // Syncing from `since` acknowledges the to-device messages delivered up to it.
        services.to_device.delete_to_device_up_to(&sender.user_id, &sender.device_id, since)?;
    }
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let up_to = services.stream.visible();
        let (response, has_news) = build_response(services, sender, &request, up_to).await?;
        let now = Instant::now();
        if has_news || request.since.is_none() || request.full_state || now >= deadline {
            return Ok(response);
        }

        // Wake for news, for the deadline, or when a typing notification expires.
        let room_ids: Vec<OwnedRoomId> = services
            .rooms
            .rooms_of_user(&sender.user_id)?
            .into_iter()
            .filter(|(_, record)| record.membership == "join")
            .map(|(room_id, _)| room_id)
            .collect();
        let mut wake_at = deadline;
        if let Some(expiry) = services.typing.next_expiry(room_ids.iter().map(|id| id.as_ref())) {
            wake_at = wake_at.min(expiry.max(now) + Duration::from_millis(5));
        }
        let _ = tokio::time::timeout_at(wake_at.into(), notified).await;
    }
}

async fn build_response(
    services: &Services,
    sender: &Sender,
    request: &SyncRequest,
    up_to: u64,
) -> Result<(Value, bool)> {
    let user_id = &sender.user_id;
    let since = request.since.unwrap_or(0);
    let initial = request.since.is_none();
    let mut has_news = false;

    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    let mut knock = Map::new();
    let room_filter = &request.filter.room;
    let include_leave = room_filter.include_leave;

    for (room_id, membership) in services.rooms.rooms_of_user(user_id)? {
        if membership.forgotten
            || !room_allowed(&room_filter.rooms, &room_filter.not_rooms, &room_id)
        {
            continue;
        }
        // A membership newer than this response is judged by what it was at `up_to`.
        let membership = membership_at(services, user_id, membership, up_to)?;
        let Some(membership) = membership else { continue };
        let changed = membership.position > since;

        match membership.membership.as_str() {
            "join" => {
                let joined_since = !initial && changed;
                let room =
                    joined_room(services, sender, request, &room_id, since, up_to, joined_since)
                        .await?;
                if let Some((room, news)) = room {
                    has_news |= news;
                    join.insert(room_id.to_string(), room);
                }
            }
            "knock" if initial || changed => {
                has_news = true;
                let stripped = invited_room(services, &membership)?;
                knock.insert(
                    room_id.to_string(),
                    json!({ "knock_state": stripped["invite_state"].clone() }),
                );
            }
            "invite" if initial || changed => {
                has_news = true;
                invite.insert(room_id.to_string(), invited_room(services, &membership)?);
            }
            "leave" | "ban" if (initial && include_leave) || (!initial && changed) => {
                has_news = true;
                leave.insert(
                    room_id.to_string(),
                    left_room(services, sender, request, &room_id, since, &membership)?,
                );
            }
            _ => {}
        }
    }

    let mut global_account_data = Vec::new();
    let account_data = if initial {
        services.account_data.all(user_id)?
    } else {
        services.account_data.changes(user_id, since, up_to)?
    };
    let mut room_account_data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (room_id, event_type, content) in account_data {
        let content: Value = serde_json::from_str(content.get()).unwrap_or_else(|_| json!({}));
        let event = json!({ "type": event_type, "content": content });
        match room_id {
            Some(room_id) => room_account_data.entry(room_id).or_default().push(event),
            None => global_account_data.push(event),
        }
    }
    if initial && !global_account_data.iter().any(|event| event["type"] == "m.push_rules") {
        let rules = services.push_rules.get(user_id)?;
        global_account_data.push(json!({ "type": "m.push_rules", "content": { "global": rules } }));
    }
    has_news |= !global_account_data.is_empty();
    for (room_id, events) in room_account_data {
        if let Some(room) = join.get_mut(&room_id) {
            room["account_data"]["events"] = json!(events);
            has_news = true;
        } else if !initial {
            // The room had no other news, but its account data changed.
            let membership = RoomId::parse(&room_id)
                .ok()
                .map(|id| services.rooms.is_joined(&id, user_id))
                .transpose()?
                .unwrap_or(false);
            if membership {
                join.insert(room_id, json!({ "account_data": { "events": events } }));
                has_news = true;
            }
        }
    }

    let device_id = &sender.device_id;
    let to_device = services.to_device.to_device_events(user_id, device_id, since, up_to)?;
    let device_lists = if initial {
        Default::default()
    } else {
        services.keys.device_list_changes(user_id, since, up_to)?
    };
    has_news |= !to_device.is_empty();
    has_news |= !device_lists.changed.is_empty() || !device_lists.left.is_empty();
    let one_time_key_counts = services.keys.one_time_key_counts(user_id, device_id)?;
    let unused_fallback_key_types = services.keys.unused_fallback_key_types(user_id, device_id)?;

    let response = json!({
        "next_batch": up_to.to_string(),
        "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
        "account_data": { "events": global_account_data },
        "presence": { "events": [] },
        "to_device": { "events": to_device },
        "device_lists": { "changed": device_lists.changed, "left": device_lists.left },
        "device_one_time_keys_count": one_time_key_counts,
        "device_unused_fallback_key_types": unused_fallback_key_types,
    });
    Ok((response, has_news))
}

/// Returns the user's membership as of `up_to`: the stored one if it is not newer, else the one in the
/// room state before it.
fn membership_at(
    services: &Services,
    user_id: &UserId,
    membership: MembershipRecord,
    up_to: u64,
) -> Result<Option<MembershipRecord>> {
    if membership.position <= up_to {
        return Ok(Some(membership));
    }
    let Some(event) = services.rooms.get_pdu(
        &ruma::EventId::parse(&membership.event_id).map_err(|e| anyhow::anyhow!("{e}"))?,
    )?
    else {
        return Ok(None);
    };
    let state = services.rooms.state_group(event.state_before)?;
    Ok(services.rooms.state_pdu(&state, "m.room.member", user_id.as_str())?.map(|previous| {
        MembershipRecord {
            membership: previous.membership().unwrap_or_default(),
            event_id: previous.event_id.to_string(),
            position: previous.position,
            forgotten: false,
        }
    }))
}

fn room_allowed(
    rooms: &Option<Vec<OwnedRoomId>>,
    not_rooms: &[OwnedRoomId],
    room_id: &RoomId,
) -> bool {
    rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|id| id == room_id))
        && !not_rooms.iter().any(|id| id == room_id)
}

/// Checks whether an event passes a room event filter's type and sender lists.
pub fn event_allowed(filter: &RoomEventFilter, pdu: &PduRecord) -> bool {
    let event_type = pdu.event_type();
    let sender = pdu.sender();
    let type_matches = |pattern: &String| match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => *pattern == event_type,
    };
    filter.types.as_ref().is_none_or(|types| types.iter().any(type_matches))
        && !filter.not_types.iter().any(type_matches)
        && filter
            .senders
            .as_ref()
            .is_none_or(|senders| senders.iter().any(|s| s.as_str() == sender))
        && !filter.not_senders.iter().any(|s| s.as_str() == sender)
}

#[allow(clippy::too_many_arguments)]
async fn joined_room(
    services: &Services,
    sender: &Sender,
    request: &SyncRequest,
    room_id: &RoomId,
    since: u64,
    up_to: u64,
    joined_since: bool,
) -> Result<Option<(Value, bool)>> {
    let user_id = &sender.user_id;
    let viewer = Some((user_id.as_ref(), sender.device_id.as_str()));
    let filter = &request.filter.room;
    let initial = request.since.is_none();
    let full = initial || request.full_state || joined_since;

    let limit = filter
        .timeline
        .limit
        .map(|limit| u64::from(limit) as usize)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .max(1);
    // A room the user joined since the last sync shows its recent history, like an initial sync.
    let timeline_from = if joined_since || initial { 0 } else { since };
    let candidate_ids = services.rooms.timeline_ids(room_id, timeline_from, up_to)?;
    let mut timeline = Vec::new();
    let mut limited = false;
    for event_id in candidate_ids.iter().rev() {
        let Some(pdu) = services
            .rooms
            .get_pdu(&ruma::EventId::parse(event_id).map_err(|e| anyhow::anyhow!("{e}"))?)?
        else {
            continue;
        };
        if !event_allowed(&filter.timeline, &pdu) || !services.rooms.can_see_event(user_id, &pdu)? {
            continue;
        }
        if timeline.len() == limit {
            limited = true;
            break;
        }
        timeline.push(pdu);
    }
    timeline.reverse();

    let room = services.rooms.room(room_id)?.ok_or_else(super::rooms::unknown_room)?;
    let state_at_start = match timeline.first() {
        Some(first) => services.rooms.state_group(first.state_before)?,
        None => services.rooms.state_group(room.current_state_group)?,
    };
    let lazy_members = !filter.state.lazy_load_options.is_disabled();
    let timeline_senders: BTreeSet<String> = timeline.iter().map(|pdu| pdu.sender()).collect();

    let mut state_events = Vec::new();
    if full {
        for pdu in services.rooms.state_pdus(&state_at_start)? {
            if lazy_members
                && pdu.event_type() == "m.room.member"
                && !pdu
                    .state_key()
                    .is_some_and(|key| timeline_senders.contains(&key) || key == user_id.as_str())
            {
                continue;
            }
            if event_allowed(&filter.state, &pdu) {
                state_events.push(pdu.to_sync_event(viewer));
            }
        }
    } else if limited {
        // State that changed in the gap between `since` and the start of the timeline.
        let state_at_since = state_at_position(services, room_id, since)?;
        for (event_type, by_key) in state_at_start.iter() {
            for (state_key, event_id) in by_key {
                let unchanged = state_at_since
                    .get(event_type)
                    .and_then(|keys| keys.get(state_key))
                    .is_some_and(|old| old == event_id);
                if unchanged {
                    continue;
                }
                if let Some(pdu) = services
                    .rooms
                    .get_pdu(&ruma::EventId::parse(event_id).map_err(|e| anyhow::anyhow!("{e}"))?)?
                {
                    if event_allowed(&filter.state, &pdu) {
                        state_events.push(pdu.to_sync_event(viewer));
                    }
                }
            }
        }
    }

    let (ephemeral, ephemeral_news) = ephemeral_events(services, user_id, room_id, since, initial)?;
    let has_news =
        !timeline.is_empty() || !state_events.is_empty() || ephemeral_news || joined_since;
    if !initial && !has_news && !request.full_state {
        return Ok(None);
    }

    let prev_batch =
        timeline.first().map(|first| first.position.saturating_sub(1)).unwrap_or(up_to);
    let split_threads = filter.timeline.unread_thread_notifications;
    let unread = unread_counts(services, room_id, user_id, split_threads).await?;
    let thread_counts: Map<String, Value> = unread
        .threads
        .iter()
        .map(|(root, (notifications, highlights))| {
            (
                root.clone(),
                json!({ "notification_count": notifications, "highlight_count": highlights }),
            )
        })
        .collect();
    let summary = room_summary(services, room_id, user_id)?;

    let room = json!({
        "timeline": {
            "events": timeline.iter().map(|pdu| pdu.to_sync_event(viewer)).collect::<Vec<_>>(),
            "limited": limited,
            "prev_batch": prev_batch.to_string(),
        },
        "state": { "events": state_events },
        "ephemeral": { "events": ephemeral },
        "account_data": { "events": [] },
        "unread_notifications": {
            "notification_count": unread.notifications,
            "highlight_count": unread.highlights,
        },
        "unread_thread_notifications": thread_counts,
        "summary": summary,
    });
    Ok(Some((room, has_news)))
}

/// Returns the room state as of a stream position: the state after the last event at or before it.
fn state_at_position(
    services: &Services,
    room_id: &RoomId,
    position: u64,
) -> Result<std::sync::Arc<crate::storage::tables::StateMap>> {
    let ids = services.rooms.timeline_ids(room_id, 0, position)?;
    match ids.last() {
        Some(event_id) => {
            let pdu = services
                .rooms
                .get_pdu(&ruma::EventId::parse(event_id).map_err(|e| anyhow::anyhow!("{e}"))?)?;
            match pdu {
                Some(pdu) => services.rooms.state_group(pdu.state_after),
                None => Ok(Default::default()),
            }
        }
        None => Ok(Default::default()),
    }
}

fn ephemeral_events(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    since: u64,
    initial: bool,
) -> Result<(Vec<Value>, bool)> {
    let mut events = Vec::new();
    let mut news = false;

    let (typing, typing_position) = services.typing.current(room_id)?;
    if typing_position > since || (initial && !typing.is_empty()) {
        events.push(json!({ "type": "m.typing", "content": { "user_ids": typing } }));
        news |= typing_position > since;
    }

    let mut content: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>> = BTreeMap::new();
    for (receipt_user, receipt) in services.receipts.in_room(room_id)? {
        if receipt.position <= since && !initial {
            continue;
        }
        // Private receipts go only to their owner.
        if receipt.receipt_type == "m.read.private" && user_id.as_str() != receipt_user {
            continue;
        }
        let mut entry = json!({ "ts": receipt.ts });
        if let Some(thread_id) = &receipt.thread_id {
            entry["thread_id"] = json!(thread_id);
        }
        content
            .entry(receipt.event_id.clone())
            .or_default()
            .entry(receipt.receipt_type.clone())
            .or_default()
            .insert(receipt_user, entry);
        news |= receipt.position > since;
    }
    if !content.is_empty() {
        events.push(json!({ "type": "m.receipt", "content": content }));
    }
    Ok((events, news))
}

/// Notifying events per (room, user), evaluated once and kept between syncs, so a `/sync` only
/// evaluates the push rules on events it has not seen before.
#[derive(Default)]
pub struct UnreadCache {
    entries: Mutex<HashMap<(OwnedRoomId, OwnedUserId), UnreadState>>,
}

#[derive(Clone, Default)]
struct UnreadState {
    /// The push rules generation the entries were evaluated with.
    rules_generation: u64,
    /// Every event up to this position has been evaluated.
    evaluated_up_to: u64,
    /// The newest notifying events since the user joined, oldest first.
    notifying: Vec<NotifyingEvent>,
}

#[derive(Clone)]
struct NotifyingEvent {
    position: u64,
    highlight: bool,
    /// The thread root, for events in a thread.
    thread_root: Option<String>,
}

/// Notification and highlight counts of a room, and of each thread when asked for separately.
pub struct UnreadCounts {
    pub notifications: u64,
    pub highlights: u64,
    pub threads: BTreeMap<String, (u64, u64)>,
}

/// Counts the events after the user's read receipts that notify or highlight, by their push
/// rules. With `split_threads`, events in threads are counted per thread against that thread's
/// receipt instead of in the room's counts.
///
/// NOTE: `@room` mentions are evaluated without the room's power levels, so the rule that needs
/// the sender's notification power level never matches. A display name change does not
/// re-evaluate events already counted.
async fn unread_counts(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    split_threads: bool,
) -> Result<UnreadCounts> {
    let joined_position = services.rooms.membership(room_id, user_id)?.map_or(0, |m| m.position);
    let latest = services.rooms.latest_position(room_id)?;
    let generation = services.push_rules.generation();
    let key = (room_id.to_owned(), user_id.to_owned());

    let cached =
        services.unread.entries.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    let mut state = match cached {
        Some(state)
            if state.rules_generation == generation && state.evaluated_up_to >= joined_position =>
        {
            state
        }
        _ => UnreadState {
            rules_generation: generation,
            evaluated_up_to: joined_position,
            notifying: Vec::new(),
        },
    };

    if latest > state.evaluated_up_to {
        let events = services.rooms.timeline(
            room_id,
            state.evaluated_up_to,
            latest,
            UNREAD_SCAN_LIMIT,
            true,
        )?;
        if !events.is_empty() {
            let rules = services.push_rules.get(user_id)?;
            let member_count = services.rooms.joined_members(room_id)?.len() as u64;
            let display_name = services
                .profiles
                .get_field(user_id, super::profiles::DISPLAYNAME)?
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_else(|| user_id.localpart().to_owned());
            let context = PushConditionRoomCtx::new(
                room_id.to_owned(),
                UInt::new(member_count).unwrap_or_default(),
                user_id.to_owned(),
                display_name,
            );
            for pdu in events {
                if pdu.sender() == user_id.as_str() {
                    continue;
                }
                let Ok(raw) = serde_json::value::to_raw_value(&pdu.to_sync_event(None)) else {
                    continue;
                };
                let event: Raw<ruma::events::AnySyncTimelineEvent> = Raw::from_json(raw);
                let actions = rules.get_actions(&event, &context).await;
                if actions.iter().any(|action| matches!(action, Action::Notify)) {
                    let highlight = actions.iter().any(|action| {
                        matches!(
                            action,
                            Action::SetTweak(Tweak::Highlight(
                                ruma::push::HighlightTweakValue::Yes
                            ))
                        )
                    });
                    let relates_to = pdu.content().get("m.relates_to").cloned();
                    let thread_root = relates_to
                        .filter(|relation| {
                            relation.get("rel_type").and_then(|v| v.as_str()) == Some("m.thread")
                        })
                        .and_then(|relation| {
                            relation.get("event_id").and_then(|v| v.as_str()).map(str::to_owned)
                        });
                    state.notifying.push(NotifyingEvent {
                        position: pdu.position,
                        highlight,
                        thread_root,
                    });
                }
            }
        }
        state.evaluated_up_to = latest;
    }
    if state.notifying.len() > UNREAD_SCAN_LIMIT {
        let excess = state.notifying.len() - UNREAD_SCAN_LIMIT;
        state.notifying.drain(..excess);
    }

    // Read positions: unthreaded receipts cover everything, `main` the main timeline, and a
    // thread receipt its thread.
    let mut unthreaded = joined_position;
    let mut main = joined_position;
    let mut per_thread: BTreeMap<String, u64> = BTreeMap::new();
    for (thread, event_id) in services.receipts.read_receipts(room_id, user_id)? {
        let Ok(event_id) = ruma::EventId::parse(&event_id) else { continue };
        let Some(position) = services.rooms.get_pdu(&event_id)?.map(|pdu| pdu.position) else {
            continue;
        };
        match thread.as_deref() {
            None => unthreaded = unthreaded.max(position),
            Some("main") => main = main.max(position),
            Some(root) => {
                let entry = per_thread.entry(root.to_owned()).or_default();
                *entry = (*entry).max(position);
            }
        }
    }
    let main = main.max(unthreaded);

    let mut counts = UnreadCounts { notifications: 0, highlights: 0, threads: BTreeMap::new() };
    for event in &state.notifying {
        match (&event.thread_root, split_threads) {
            (Some(root), true) => {
                let read = per_thread.get(root).copied().unwrap_or(0).max(unthreaded);
                if event.position > read {
                    let entry = counts.threads.entry(root.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += u64::from(event.highlight);
                }
            }
            _ => {
                // Without thread receipts split out, any receipt covering the event counts.
                let thread_read = event
                    .thread_root
                    .as_ref()
                    .and_then(|root| per_thread.get(root))
                    .copied()
                    .unwrap_or(0);
                if event.position > main.max(thread_read) {
                    counts.notifications += 1;
                    counts.highlights += u64::from(event.highlight);
                }
            }
        }
    }
    services.unread.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(key, state);
    Ok(counts)
}

/// Heroes and member counts, for clients that name rooms without an `m.room.name`.
fn room_summary(services: &Services, room_id: &RoomId, user_id: &UserId) -> Result<Value> {
    let members = services.rooms.members(room_id)?;
    let joined = members.iter().filter(|(_, m)| m.membership == "join").count();
    let invited = members.iter().filter(|(_, m)| m.membership == "invite").count();
    let heroes: Vec<String> = members
        .iter()
        .filter(|(member, m)| {
            member != user_id && (m.membership == "join" || m.membership == "invite")
        })
        .map(|(member, _)| member.to_string())
        .take(5)
        .collect();
    Ok(json!({
        "m.heroes": heroes,
        "m.joined_member_count": joined,
        "m.invited_member_count": invited,
    }))
}

fn invited_room(services: &Services, membership: &MembershipRecord) -> Result<Value> {
    let mut events = Vec::new();
    let invite = services.rooms.get_pdu(
        &ruma::EventId::parse(&membership.event_id).map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    if let Some(invite) = &invite {
        let state = services.rooms.state_group(invite.state_before)?;
        for (event_type, state_key) in [
            ("m.room.create", ""),
            ("m.room.join_rules", ""),
            ("m.room.name", ""),
            ("m.room.avatar", ""),
            ("m.room.canonical_alias", ""),
            ("m.room.encryption", ""),
            ("m.room.topic", ""),
        ] {
            if let Some(pdu) = services.rooms.state_pdu(&state, event_type, state_key)? {
                events.push(pdu.to_stripped_state());
            }
        }
        if let Some(inviter) =
            services.rooms.state_pdu(&state, "m.room.member", &invite.sender())?
        {
            events.push(inviter.to_stripped_state());
        }
        events.push(invite.to_stripped_state());
    }
    Ok(json!({ "invite_state": { "events": events } }))
}

fn left_room(
    services: &Services,
    sender: &Sender,
    request: &SyncRequest,
    room_id: &RoomId,
    since: u64,
    membership: &MembershipRecord,
) -> Result<Value> {
    let viewer = Some((sender.user_id.as_ref(), sender.device_id.as_str()));
    let limit = request
        .filter
        .room
        .timeline
        .limit
        .map(|limit| u64::from(limit) as usize)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .max(1);
    // The timeline runs up to and including the leave, and nothing after it.
    let events = services.rooms.timeline(room_id, since, membership.position, limit, true)?;
    let mut visible = Vec::new();
    for pdu in events {
        if services.rooms.can_see_event(&sender.user_id, &pdu)?
            || pdu.position == membership.position
        {
            visible.push(pdu);
        }
    }
    let prev_batch =
        visible.first().map_or(membership.position, |pdu| pdu.position.saturating_sub(1));
    Ok(json!({
        "timeline": {
            "events": visible.iter().map(|pdu| pdu.to_sync_event(viewer)).collect::<Vec<_>>(),
            "limited": false,
            "prev_batch": prev_batch.to_string(),
        },
        "state": { "events": [] },
        "account_data": { "events": [] },
    }))
}
