//! PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}: start or stop typing. Application
//! services with `receive_ephemeral` get the room's new typing list in their next transaction.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::typing::create_typing_event::v3 as typing_v3;
use serde_json::json;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::Services;

pub async fn set_typing(
    State(services): State<Arc<Services>>,
    request: Ruma<typing_v3::Request>,
) -> Result<RumaResponse<typing_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    if body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only set your own typing state"));
    }
    if !services.rooms.is_joined(&body.room_id, &sender.user_id)? {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let timeout = match &body.state {
        typing_v3::Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    services.typing.set(&body.room_id, &sender.user_id, timeout)?;
    let members = services.rooms.joined_members(&body.room_id)?;
    services.stream.notify(members.iter().map(|user| user.as_ref()));
    let (typing, _) = services.typing.current(&body.room_id)?;
    let event = json!({
        "type": "m.typing",
        "room_id": body.room_id,
        "content": { "user_ids": typing },
    });
    services.appservices.push_ephemeral(&body.room_id, event, None)?;
    Ok(typing_v3::Response::new().into())
}
