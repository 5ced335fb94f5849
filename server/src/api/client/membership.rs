//! /_matrix/client/v3/join, /rooms/{roomId}/{join,invite,leave,forget,kick,ban,unban},
//! /joined_rooms, /rooms/{roomId}/members and /joined_members.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::knock::knock_room::v3 as knock_v3;
use ruma::api::client::membership::{
    ban_user::v3 as ban_v3, forget_room::v3 as forget_v3, get_member_events::v3 as members_v3,
    invite_user::v3 as invite_v3, join_room_by_id::v3 as join_by_id_v3,
    join_room_by_id_or_alias::v3 as join_v3, joined_members::v3 as joined_members_v3,
    joined_rooms::v3 as joined_rooms_v3, kick_user::v3 as kick_v3, leave_room::v3 as leave_v3,
    unban_user::v3 as unban_v3,
};
use ruma::{OwnedRoomId, RoomId, RoomOrAliasId, UserId};
use serde_json::{json, Value};

use super::room::member_profile;
use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::{gating, Services};

fn check_local_user(services: &Services, user_id: &UserId) -> Result<()> {
    if user_id.server_name() != services.server_name {
        return Err(Error::forbidden("Only users of this server can take part; federation is off"));
    }
    if !services.accounts.is_active(user_id)? {
        return Err(Error::not_found(format!("The user {user_id} does not exist")));
    }
    Ok(())
}

async fn join_room(
    services: &Services,
    user_id: &UserId,
    room: &RoomOrAliasId,
    reason: Option<&str>,
) -> Result<OwnedRoomId> {
    let room_id = match <&RoomId>::try_from(room) {
        Ok(room_id) => room_id.to_owned(),
        Err(alias) => services
            .rooms
            .resolve_alias(alias.as_str())?
            .ok_or_else(|| Error::not_found(format!("The room alias {alias} does not exist")))?,
    };
    gating::check_join(services, user_id, &room_id)?;
    let profile = member_profile(services, user_id)?;
    services.rooms.join(&room_id, user_id, &profile, reason).await?;
    Ok(room_id)
}

pub async fn join_by_id_or_alias(
    State(services): State<Arc<Services>>,
    request: Ruma<join_v3::Request>,
) -> Result<RumaResponse<join_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let room_id =
        join_room(&services, &sender.user_id, &body.room_id_or_alias, body.reason.as_deref())
            .await?;
    Ok(join_v3::Response::new(room_id).into())
}

pub async fn join_by_id(
    State(services): State<Arc<Services>>,
    request: Ruma<join_by_id_v3::Request>,
) -> Result<RumaResponse<join_by_id_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let room: &RoomOrAliasId = <&RoomOrAliasId>::from(body.room_id.as_ref() as &RoomId);
    let room_id = join_room(&services, &sender.user_id, room, body.reason.as_deref()).await?;
    Ok(join_by_id_v3::Response::new(room_id).into())
}

pub async fn knock(
    State(services): State<Arc<Services>>,
    request: Ruma<knock_v3::Request>,
) -> Result<RumaResponse<knock_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let target: &RoomOrAliasId = &body.room_id_or_alias;
    let room_id = match <&RoomId>::try_from(target) {
        Ok(room_id) => room_id.to_owned(),
        Err(alias) => services
            .rooms
            .resolve_alias(alias.as_str())?
            .ok_or_else(|| Error::not_found(format!("The room alias {alias} does not exist")))?,
    };
    gating::check_join(&services, &sender.user_id, &room_id)?;
    services.rooms.knock(&room_id, &sender.user_id, body.reason.as_deref()).await?;
    Ok(knock_v3::Response::new(room_id).into())
}

pub async fn invite(
    State(services): State<Arc<Services>>,
    request: Ruma<invite_v3::Request>,
) -> Result<RumaResponse<invite_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let invite_v3::InvitationRecipient::UserId(recipient) = &body.recipient else {
        return Err(Error::forbidden("Third-party invites are not supported on this server"));
    };
    check_local_user(&services, &recipient.user_id)?;
    gating::check_invite(&services, &sender.user_id, &recipient.user_id)?;
    services
        .rooms
        .invite(
            &body.room_id,
            &sender.user_id,
            &recipient.user_id,
            false,
            recipient.reason.as_deref(),
        )
        .await?;
    Ok(invite_v3::Response::new().into())
}

pub async fn leave(
    State(services): State<Arc<Services>>,
    request: Ruma<leave_v3::Request>,
) -> Result<RumaResponse<leave_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    services.rooms.leave(&body.room_id, &sender.user_id, body.reason.as_deref()).await?;
    Ok(leave_v3::Response::new().into())
}

pub async fn forget(
    State(services): State<Arc<Services>>,
    request: Ruma<forget_v3::Request>,
) -> Result<RumaResponse<forget_v3::Response>> {
    let sender = request.sender()?;
    services.rooms.forget(&request.body.room_id, &sender.user_id)?;
    Ok(forget_v3::Response::new().into())
}

/// Sets another user's membership: `leave` for a kick, `ban`, or `unban`.
async fn change_membership_of(
    services: &Services,
    sender: &crate::service::accounts::Sender,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<&str>,
    membership: &str,
) -> Result<()> {
    services.rooms.set_membership_of(room_id, &sender.user_id, user_id, membership, reason).await?;
    Ok(())
}

pub async fn kick(
    State(services): State<Arc<Services>>,
    request: Ruma<kick_v3::Request>,
) -> Result<RumaResponse<kick_v3::Response>> {
    let body = &request.body;
    let sender = request.sender()?;
    let reason = body.reason.as_deref();
    change_membership_of(&services, sender, &body.room_id, &body.user_id, reason, "leave").await?;
    Ok(kick_v3::Response::new().into())
}

pub async fn ban(
    State(services): State<Arc<Services>>,
    request: Ruma<ban_v3::Request>,
) -> Result<RumaResponse<ban_v3::Response>> {
    let body = &request.body;
    let sender = request.sender()?;
    let reason = body.reason.as_deref();
    change_membership_of(&services, sender, &body.room_id, &body.user_id, reason, "ban").await?;
    Ok(ban_v3::Response::new().into())
}

pub async fn unban(
    State(services): State<Arc<Services>>,
    request: Ruma<unban_v3::Request>,
) -> Result<RumaResponse<unban_v3::Response>> {
    let body = &request.body;
    let sender = request.sender()?;
    let reason = body.reason.as_deref();
    change_membership_of(&services, sender, &body.room_id, &body.user_id, reason, "unban").await?;
    Ok(unban_v3::Response::new().into())
}

pub async fn joined_rooms(
    State(services): State<Arc<Services>>,
    request: Ruma<joined_rooms_v3::Request>,
) -> Result<RumaResponse<joined_rooms_v3::Response>> {
    let sender = request.sender()?;
    let rooms = services
        .rooms
        .rooms_of_user(&sender.user_id)?
        .into_iter()
        .filter(|(_, record)| record.membership == "join")
        .map(|(room_id, _)| room_id)
        .collect();
    Ok(joined_rooms_v3::Response::new(rooms).into())
}

/// Members may read the member list; so may former members, as of when they left.
fn member_list_position(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<u64>> {
    match services.rooms.membership(room_id, user_id)? {
        Some(record) if record.membership == "join" => Ok(None),
        Some(record) if record.membership == "leave" || record.membership == "ban" => {
            Ok(Some(record.position))
        }
        _ => Err(Error::forbidden("You are not a member of this room")),
    }
}

pub async fn members(
    State(services): State<Arc<Services>>,
    request: Ruma<members_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    if services.rooms.room(&body.room_id)?.is_none() {
        return Err(crate::service::rooms::unknown_room());
    }
    let left_at = member_list_position(&services, &body.room_id, &sender.user_id)?;
    let at = match &body.at {
        Some(token) => Some(crate::service::sync::parse_token(token)?),
        None => None,
    };
    let position = match (at, left_at) {
        (Some(at), Some(left)) => Some(at.min(left)),
        (at, left) => at.or(left),
    };
    let state = match position {
        Some(position) => {
            let ids = services.rooms.timeline_ids(&body.room_id, 0, position)?;
            match ids.last().and_then(|id| ruma::EventId::parse(id).ok()) {
                Some(event_id) => match services.rooms.get_pdu(&event_id)? {
                    Some(pdu) => services.rooms.state_group(pdu.state_after)?,
                    None => Default::default(),
                },
                None => Default::default(),
            }
        }
        None => services.rooms.current_state(&body.room_id)?,
    };

    let viewer = Some((sender.user_id.as_ref(), sender.device_id.as_str()));
    let mut chunk = Vec::new();
    for pdu in services.rooms.state_pdus(&state)? {
        if pdu.event_type() != "m.room.member" {
            continue;
        }
        let membership = pdu.membership().unwrap_or_default();
        if body.membership.as_ref().is_some_and(|wanted| wanted.as_str() != membership) {
            continue;
        }
        if body.not_membership.as_ref().is_some_and(|excluded| excluded.as_str() == membership) {
            continue;
        }
        chunk.push(pdu.to_client_event(viewer));
    }
    Ok(Json(json!({ "chunk": chunk })))
}

pub async fn joined_members(
    State(services): State<Arc<Services>>,
    request: Ruma<joined_members_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    if services.rooms.room(room_id)?.is_none() {
        return Err(crate::service::rooms::unknown_room());
    }
    if !services.rooms.is_joined(room_id, &sender.user_id)? {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let state = services.rooms.current_state(room_id)?;
    let mut joined = serde_json::Map::new();
    for pdu in services.rooms.state_pdus(&state)? {
        if pdu.event_type() == "m.room.member" && pdu.membership().as_deref() == Some("join") {
            let content = pdu.content();
            let mut member = serde_json::Map::new();
            for key in ["display_name", "avatar_url"] {
                let source = if key == "display_name" { "displayname" } else { key };
                if let Some(value) = content.get(source).filter(|v| v.is_string()) {
                    member.insert(key.to_owned(), value.clone());
                }
            }
            joined.insert(pdu.state_key().unwrap_or_default(), Value::Object(member));
        }
    }
    Ok(Json(json!({ "joined": joined })))
}
