//! POST /_matrix/client/v3/createRoom and GET /rooms/{roomId}/event/{eventId}: create a room,
//! read one event.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::room::create_room::v3 as create_room_v3;
use ruma::api::client::room::get_room_event::v3 as get_room_event_v3;
use ruma::api::client::room::Visibility;
use serde_json::{Map, Value};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::rooms::create::CreateRoomOptions;
use crate::service::rooms::membership::MemberProfile;
use crate::service::{gating, Services};

/// The sender's display name and avatar, copied into their member events.
pub fn member_profile(services: &Services, user_id: &ruma::UserId) -> Result<MemberProfile> {
    let profile = services.profiles.get(user_id)?;
    let text = |key: &str| profile.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(MemberProfile { displayname: text("displayname"), avatar_url: text("avatar_url") })
}

fn json_object<T: serde::Serialize>(value: &T, what: &str) -> Result<Map<String, Value>> {
    match serde_json::to_value(value) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(Error::bad_json(format!("{what} must be a JSON object"))),
    }
}

pub async fn create_room(
    State(services): State<Arc<Services>>,
    request: Ruma<create_room_v3::Request>,
) -> Result<RumaResponse<create_room_v3::Response>> {
    let sender = request.sender()?.clone();
    let body = request.body;

    let canonical_alias = match &body.room_alias_name {
        Some(name) => {
            if name.contains(':') || name.is_empty() {
                return Err(Error::invalid_param("room_alias_name must be a bare localpart"));
            }
            let alias = format!("#{name}:{}", services.server_name);
            let parsed = ruma::RoomAliasId::parse(&alias).map_err(|_| {
                Error::invalid_param(format!("{alias:?} is not a valid room alias"))
            })?;
            services.appservices.check_alias_free(&parsed, sender.appservice_id.as_deref())?;
            if services.rooms.resolve_alias(&alias)?.is_some() {
                return Err(Error::new(ErrorCode::RoomInUse, "That room alias is already taken"));
            }
            Some(alias)
        }
        None => None,
    };

    for invitee in &body.invite {
        if invitee.server_name() != services.server_name {
            return Err(Error::forbidden("Only users of this server can be invited"));
        }
        if !services.accounts.is_active(invitee)? {
            return Err(Error::not_found(format!("The user {invitee} does not exist")));
        }
    }
    gating::check_create_room(&services, &sender.user_id, &body.invite)?;

    let preset = match &body.preset {
        Some(preset) => preset.to_string(),
        None if body.visibility == Visibility::Public => "public_chat".to_owned(),
        None => "private_chat".to_owned(),
    };
    let mut initial_state = Vec::new();
    for event in &body.initial_state {
        let value: Value = serde_json::from_str(event.json().get())
            .map_err(|error| Error::bad_json(format!("initial_state is invalid: {error}")))?;
        let event_type = value.get("type").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        if event_type.is_empty() || event_type == "m.room.create" || event_type == "m.room.member" {
            return Err(Error::bad_json(format!(
                "initial_state cannot contain {event_type:?}; use creation_content or invite"
            )));
        }
        let state_key =
            value.get("state_key").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let content = value.get("content").cloned().unwrap_or_else(|| Value::Object(Map::new()));
        initial_state.push((event_type, state_key, content));
    }

    let profile = super::room::member_profile(&services, &sender.user_id)?;
    let options = CreateRoomOptions {
        room_version: body.room_version.as_ref().map(|v| v.to_string()),
        creation_content: match &body.creation_content {
            Some(raw) => json_object(&raw.json(), "creation_content")?,
            None => Map::new(),
        },
        preset,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite: body.invite.clone(),
        is_direct: body.is_direct,
        initial_state,
        power_level_override: match &body.power_level_content_override {
            Some(raw) => json_object(&raw.json(), "power_level_content_override")?,
            None => Map::new(),
        },
        creator_displayname: profile.displayname,
        creator_avatar_url: profile.avatar_url,
    };
    let room_id =
        services.rooms.create_room(&sender.user_id, options, canonical_alias.clone()).await?;
    if let Some(alias) = canonical_alias {
        services.rooms.create_alias(&alias, &room_id, &sender.user_id)?;
    }
    if body.visibility == Visibility::Public {
        services.rooms.set_published(&room_id, true)?;
    }
    Ok(create_room_v3::Response::new(room_id).into())
}

pub async fn get_event(
    State(services): State<Arc<Services>>,
    request: Ruma<get_room_event_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    let not_found = || Error::not_found("Event not found, or you may not see it");
    let pdu = services.rooms.get_pdu(&body.event_id)?.ok_or_else(not_found)?;
    if pdu.room_id != body.room_id || !services.rooms.can_see_event(&sender.user_id, &pdu)? {
        return Err(not_found());
    }
    Ok(Json(pdu.to_client_event(Some((&sender.user_id, sender.device_id.as_str())))))
}
