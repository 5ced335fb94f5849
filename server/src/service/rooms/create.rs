//! Room creation: the create event, then the creator's join, power levels, presets, initial
//! state, name, topic and invites, in the order the spec gives.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Map, Value};

use super::{to_object, version_rules, EventDraft, Rooms};
use crate::error::{Error, Result};
use crate::service::accounts::random_string;
use crate::service::now_ms;

/// The parsed options of a `/createRoom` request.
#[derive(Debug, Default)]
pub struct CreateRoomOptions {
    pub room_version: Option<String>,
    pub creation_content: Map<String, Value>,
    /// `private_chat`, `trusted_private_chat` or `public_chat`.
    pub preset: String,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub initial_state: Vec<(String, String, Value)>,
    pub power_level_override: Map<String, Value>,
    pub creator_displayname: Option<String>,
    pub creator_avatar_url: Option<String>,
}

impl Rooms {
    /// Creates a room and returns its ID. Events after the create event go through the normal
    /// append path, so each is checked against the authorization rules like any other.
    pub async fn create_room(
        &self,
        creator: &UserId,
        options: CreateRoomOptions,
        canonical_alias: Option<String>,
    ) -> Result<OwnedRoomId> {
        let version_text =
            options.room_version.clone().unwrap_or_else(|| self.default_room_version.to_string());
        let rules = version_rules(&version_text)?;
        let room_version = RoomVersionId::try_from(version_text.as_str())
            .map_err(|_| Error::invalid_param("Invalid room version"))?;

        let mut create_content = options.creation_content.clone();
        create_content.insert("room_version".to_owned(), json!(version_text));
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".to_owned(), json!(creator));
        } else {
            create_content.remove("creator");
        }

        let room_id_from_hash = rules.authorization.room_create_event_id_as_room_id;
        let legacy_room_id = format!("!{}:{}", random_string(18), self.server_name);
        let mut create = json!({
            "auth_events": [],
            "prev_events": [],
            "content": create_content,
            "depth": 1,
            "origin_server_ts": now_ms(),
            "sender": creator,
            "state_key": "",
            "type": "m.room.create",
        });
        if !room_id_from_hash {
            create["room_id"] = json!(legacy_room_id);
        }
        let mut object = to_object(create)?;
        let event_id = self.sign_event(&mut object, &rules)?;
        let room_id: OwnedRoomId = if room_id_from_hash {
            // From room version 12 the room ID is the create event's reference hash.
            let hash = event_id.as_str().trim_start_matches('$');
            RoomId::new_v2(hash).map_err(|error| anyhow::anyhow!("room ID from hash: {error}"))?
        } else {
            RoomId::parse(&legacy_room_id).map_err(|error| anyhow::anyhow!("room ID: {error}"))?
        };
        self.store_create_event(&room_id, object, event_id, &room_version, &rules)?;

        let mut member = json!({ "membership": "join" });
        if let Some(name) = &options.creator_displayname {
            member["displayname"] = json!(name);
        }
        if let Some(avatar_url) = &options.creator_avatar_url {
            member["avatar_url"] = json!(avatar_url);
        }
        self.append(
            &room_id,
            creator,
            EventDraft::state("m.room.member", creator.as_str(), member),
            None,
        )
        .await?;

        let power_levels = self.initial_power_levels(creator, &options, &rules);
        self.append(
            &room_id,
            creator,
            EventDraft::state("m.room.power_levels", "", power_levels),
            None,
        )
        .await?;

        if let Some(alias) = canonical_alias {
            let content = json!({ "alias": alias });
            self.append(
                &room_id,
                creator,
                EventDraft::state("m.room.canonical_alias", "", content),
                None,
            )
            .await?;
        }

        let (join_rule, history_visibility, guest_access) = match options.preset.as_str() {
            "public_chat" => ("public", "shared", "forbidden"),
            _ => ("invite", "shared", "can_join"),
        };
        for (event_type, content) in [
            ("m.room.join_rules", json!({ "join_rule": join_rule })),
            ("m.room.history_visibility", json!({ "history_visibility": history_visibility })),
            ("m.room.guest_access", json!({ "guest_access": guest_access })),
        ] {
            let overridden = options
                .initial_state
                .iter()
                .any(|(kind, state_key, _)| kind == event_type && state_key.is_empty());
            if !overridden {
                self.append(&room_id, creator, EventDraft::state(event_type, "", content), None)
                    .await?;
            }
        }

        for (event_type, state_key, content) in &options.initial_state {
            let draft = EventDraft::state(event_type, state_key, content.clone());
            self.append(&room_id, creator, draft, None).await?;
        }
        if let Some(name) = &options.name {
            let draft = EventDraft::state("m.room.name", "", json!({ "name": name }));
            self.append(&room_id, creator, draft, None).await?;
        }
        if let Some(topic) = &options.topic {
            let content = json!({
                "topic": topic,
                "m.topic": [{ "mimetype": "text/plain", "body": topic }],
            });
            self.append(&room_id, creator, EventDraft::state("m.room.topic", "", content), None)
                .await?;
        }
        for invitee in &options.invite {
            let mut content = json!({ "membership": "invite" });
            if options.is_direct {
                content["is_direct"] = json!(true);
            }
            let draft = EventDraft::state("m.room.member", invitee.as_str(), content);
            self.append(&room_id, creator, draft, None).await?;
        }
        Ok(room_id)
    }

    fn initial_power_levels(
        &self,
        creator: &UserId,
        options: &CreateRoomOptions,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Value {
        let mut users = Map::new();
        // From room version 12 creators hold unlimited power outside the power levels event,
        // which must not list them.
        if !rules.authorization.explicitly_privilege_room_creators {
            users.insert(creator.to_string(), json!(100));
        }
        if options.preset == "trusted_private_chat" {
            for invitee in &options.invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }

        let mut content = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": 100,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "historical": 100,
            "notifications": { "room": 50 },
        });
        if let Some(object) = content.as_object_mut() {
            for (key, value) in &options.power_level_override {
                match (object.get_mut(key), value) {
                    (Some(Value::Object(existing)), Value::Object(overrides)) => {
                        for (inner_key, inner_value) in overrides {
                            existing.insert(inner_key.clone(), inner_value.clone());
                        }
                    }
                    _ => {
                        object.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        content
    }
}
