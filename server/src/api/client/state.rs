//! GET /_matrix/client/v3/rooms/{roomId}/state and GET/PUT /state/{eventType}/{stateKey}: read
//! and change room state.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::state::{
    get_state_event_for_key::v3 as get_state_v3, get_state_events::v3 as get_all_state_v3,
    send_state_event::v3 as send_state_v3,
};
use serde_json::Value;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::rooms::{unknown_room, EventDraft};
use crate::service::{gating, Services};

/// The state a user may read: the current state while joined, the state when they left after
/// leaving. Returns the state group.
fn readable_state_group(
    services: &Services,
    room_id: &ruma::RoomId,
    user_id: &ruma::UserId,
) -> Result<u64> {
    let room = services.rooms.room(room_id)?.ok_or_else(unknown_room)?;
    match services.rooms.membership(room_id, user_id)? {
        Some(record) if record.membership == "join" => Ok(room.current_state_group),
        Some(record) if record.membership == "leave" || record.membership == "ban" => {
            let event_id = ruma::EventId::parse(&record.event_id)
                .map_err(|error| anyhow::anyhow!("stored event ID: {error}"))?;
            let pdu = services.rooms.get_pdu(&event_id)?.ok_or_else(unknown_room)?;
            Ok(pdu.state_after)
        }
        _ => Err(Error::forbidden("You are not a member of this room")),
    }
}

pub async fn get_all(
    State(services): State<Arc<Services>>,
    request: Ruma<get_all_state_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let group = readable_state_group(&services, &request.body.room_id, &sender.user_id)?;
    let state = services.rooms.state_group(group)?;
    let viewer = Some((sender.user_id.as_ref(), sender.device_id.as_str()));
    let events: Vec<Value> =
        services.rooms.state_pdus(&state)?.iter().map(|pdu| pdu.to_client_event(viewer)).collect();
    Ok(Json(Value::Array(events)))
}

pub async fn get_one(
    State(services): State<Arc<Services>>,
    request: Ruma<get_state_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    let group = readable_state_group(&services, &body.room_id, &sender.user_id)?;
    let state = services.rooms.state_group(group)?;
    let pdu = services
        .rooms
        .state_pdu(&state, &body.event_type.to_string(), &body.state_key)?
        .ok_or_else(|| Error::not_found("The room has no such state event"))?;
    if body.format == ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event
    {
        return Ok(Json(pdu.to_client_event(Some((&sender.user_id, sender.device_id.as_str())))));
    }
    Ok(Json(pdu.content()))
}

pub async fn send(
    State(services): State<Arc<Services>>,
    request: Ruma<send_state_v3::Request>,
) -> Result<RumaResponse<send_state_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let content: Value = serde_json::from_str(body.body.json().get())
        .map_err(|error| Error::bad_json(format!("The content is not valid JSON: {error}")))?;
    if !content.is_object() {
        return Err(Error::bad_json("State event content must be a JSON object"));
    }
    let event_type = body.event_type.to_string();
    if event_type == "m.room.create" {
        return Err(Error::forbidden("The create event cannot be replaced"));
    }
    if event_type == "m.room.member" {
        gating::check_member_event(
            &services,
            &sender.user_id,
            &body.room_id,
            &body.state_key,
            &content,
        )?;
    }
    let draft = EventDraft::state(&event_type, &body.state_key, content);
    let event_id = services.rooms.append(&body.room_id, &sender.user_id, draft, None).await?;
    Ok(send_state_v3::Response::new(event_id).into())
}
