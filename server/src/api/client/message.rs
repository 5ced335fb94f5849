//! PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId} and GET /messages: send an
//! event, page through the timeline.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::message::{
    get_message_events::v3 as messages_v3, send_message_event::v3 as send_v3,
};
use ruma::api::Direction;
use serde_json::{json, Value};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::rooms::EventDraft;
use crate::service::sync::{event_allowed, parse_token};
use crate::service::Services;

/// The maximum number of events in one `/messages` page, whatever limit the client requests.
const MAX_PAGE: usize = 1000;

pub async fn send(
    State(services): State<Arc<Services>>,
    request: Ruma<send_v3::Request>,
) -> Result<RumaResponse<send_v3::Response>> {
    let sender = request.sender()?;
    services.rate_limits.check_message(&sender.user_id, sender.is_rate_limit_exempt())?;
    let body = &request.body;
    let content: Value = serde_json::from_str(body.body.json().get())
        .map_err(|error| Error::bad_json(format!("The content is not valid JSON: {error}")))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    let event_type = body.event_type.to_string();
    if event_type == "m.room.redaction" {
        return Err(Error::bad_json("Use the /redact endpoint to redact events"));
    }
    let transaction = Some((sender.device_id.to_string(), body.txn_id.to_string()));
    let event_id = services
        .rooms
        .append(
            &body.room_id,
            &sender.user_id,
            EventDraft::message(&event_type, content),
            transaction,
        )
        .await?;
    Ok(send_v3::Response::new(event_id).into())
}

pub async fn messages(
    State(services): State<Arc<Services>>,
    request: Ruma<messages_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    let room_id = &body.room_id;
    let membership = services
        .rooms
        .membership(room_id, &sender.user_id)?
        .ok_or_else(|| Error::forbidden("You are not a member of this room"))?;
    // A former member pages only up to the moment they left.
    let ceiling = if membership.membership == "join" {
        services.rooms.latest_position(room_id)?
    } else {
        membership.position
    };

    let limit = (u64::from(body.limit) as usize).clamp(1, MAX_PAGE);
    let backwards = body.dir == Direction::Backward;
    let from = match &body.from {
        Some(token) => parse_token(token)?,
        None if backwards => ceiling,
        None => 0,
    };
    let to = body.to.as_deref().map(parse_token).transpose()?;

    let (after, up_to) = if backwards {
        (to.unwrap_or(0), from.min(ceiling))
    } else {
        (from, to.unwrap_or(ceiling).min(ceiling))
    };
    let ids = services.rooms.timeline_ids(room_id, after, up_to)?;
    let ordered: Box<dyn Iterator<Item = &String>> =
        if backwards { Box::new(ids.iter().rev()) } else { Box::new(ids.iter()) };

    let viewer = Some((sender.user_id.as_ref(), sender.device_id.as_str()));
    let mut chunk = Vec::new();
    let mut last_position = None;
    let mut exhausted = true;
    for event_id in ordered {
        if chunk.len() == limit {
            exhausted = false;
            break;
        }
        let Ok(event_id) = ruma::EventId::parse(event_id) else { continue };
        let Some(pdu) = services.rooms.get_pdu(&event_id)? else { continue };
        last_position = Some(pdu.position);
        if event_allowed(&body.filter, &pdu)
            && services.rooms.can_see_event(&sender.user_id, &pdu)?
        {
            chunk.push(pdu);
        }
    }

    let mut response = json!({
        "chunk": chunk.iter().map(|pdu| pdu.to_client_event(viewer)).collect::<Vec<_>>(),
        "start": from.to_string(),
    });
    if !exhausted {
        if let Some(position) = last_position {
            let end = if backwards { position.saturating_sub(1) } else { position };
            response["end"] = json!(end.to_string());
        }
    }
    if !body.filter.lazy_load_options.is_disabled() {
        let senders: std::collections::BTreeSet<String> =
            chunk.iter().map(|pdu| pdu.sender()).collect();
        let state = services.rooms.current_state(room_id)?;
        let mut members = Vec::new();
        for sender_id in senders {
            if let Some(member) = services.rooms.state_pdu(&state, "m.room.member", &sender_id)? {
                members.push(member.to_client_event(viewer));
            }
        }
        response["state"] = json!(members);
    }
    Ok(Json(response))
}
