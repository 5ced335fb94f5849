//! Stored PDUs, their view for the authorization rules, and their client format.

use ruma::canonical_json::CanonicalJsonObject;
use ruma::events::TimelineEventType;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::service::now_ms;
use crate::storage::tables::PduRecord;

impl PduRecord {
    fn field(&self, name: &str) -> Option<Value> {
        self.pdu.get(name).map(|value| value.clone().into())
    }

    pub fn event_type(&self) -> String {
        self.field("type").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    pub fn state_key(&self) -> Option<String> {
        self.field("state_key").and_then(|v| v.as_str().map(str::to_owned))
    }

    pub fn sender(&self) -> String {
        self.field("sender").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    pub fn content(&self) -> Value {
        self.field("content").unwrap_or_else(|| json!({}))
    }

    pub fn origin_server_ts(&self) -> u64 {
        self.field("origin_server_ts").and_then(|v| v.as_u64()).unwrap_or(0)
    }

    /// Returns the `membership` of an `m.room.member` event.
    pub fn membership(&self) -> Option<String> {
        self.content().get("membership").and_then(|v| v.as_str()).map(str::to_owned)
    }

    /// Formats the event for the Client-Server API.
    ///
    /// `viewer` is the user and device reading it: the sender's own device gets its `transaction_id`
    /// back in `unsigned`, so it can match the echo to its local copy.
    pub fn to_client_event(&self, viewer: Option<(&UserId, &str)>) -> Value {
        let mut event = Map::new();
        for key in ["content", "origin_server_ts", "sender", "type", "state_key", "redacts"] {
            if let Some(value) = self.field(key) {
                event.insert(key.to_owned(), value);
            }
        }
        event.insert("event_id".to_owned(), json!(self.event_id));
        event.insert("room_id".to_owned(), json!(self.room_id));

        let mut unsigned = Map::new();
        unsigned.insert("age".to_owned(), json!(now_ms().saturating_sub(self.origin_server_ts())));
        if let (Some((device_id, txn_id)), Some((user_id, viewer_device))) =
            (&self.transaction, viewer)
        {
            if user_id.as_str() == self.sender() && device_id == viewer_device {
                unsigned.insert("transaction_id".to_owned(), json!(txn_id));
            }
        }
        if let Some(redacted_by) = &self.redacted_by {
            unsigned.insert("redacted_because".to_owned(), json!({ "event_id": redacted_by }));
        }
        event.insert("unsigned".to_owned(), Value::Object(unsigned));
        Value::Object(event)
    }

    /// Formats the event without `room_id`, as `/sync` nests it under its room.
    pub fn to_sync_event(&self, viewer: Option<(&UserId, &str)>) -> Value {
        let mut event = self.to_client_event(viewer);
        if let Some(object) = event.as_object_mut() {
            object.remove("room_id");
        }
        event
    }

    /// Formats the stripped state used in invite state: type, state key, sender and content.
    pub fn to_stripped_state(&self) -> Value {
        json!({
            "type": self.event_type(),
            "state_key": self.state_key().unwrap_or_default(),
            "sender": self.sender(),
            "content": self.content(),
        })
    }
}

/// A PDU in the shape the authorization rules of `ruma-state-res` read.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthEvent {
    #[serde(skip_deserializing, default = "placeholder_event_id")]
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub event_type: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    #[serde(default)]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
}

fn placeholder_event_id() -> OwnedEventId {
    ruma::owned_event_id!("$placeholder")
}

impl AuthEvent {
    pub fn from_pdu(event_id: OwnedEventId, pdu: &CanonicalJsonObject) -> Result<Self, String> {
        let value = serde_json::to_value(pdu).map_err(|e| e.to_string())?;
        let mut event: AuthEvent = serde_json::from_value(value).map_err(|e| e.to_string())?;
        event.event_id = event_id;
        Ok(event)
    }
}

impl ruma::state_res::Event for AuthEvent {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}
