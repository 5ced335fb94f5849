//! GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}: an event with the events around it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::context::get_context::v3 as context_v3;
use serde_json::{json, Value};

use crate::api::ruma::Ruma;
use crate::error::{Error, Result};
use crate::service::sync::event_allowed;
use crate::service::Services;

pub async fn get_context(
    State(services): State<Arc<Services>>,
    request: Ruma<context_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    let not_found = || Error::not_found("Event not found, or you may not see it");
    let event = services.rooms.get_pdu(&body.event_id)?.ok_or_else(not_found)?;
    if event.room_id != body.room_id || !services.rooms.can_see_event(&sender.user_id, &event)? {
        return Err(not_found());
    }

    let limit = (u64::from(body.limit) as usize).min(100);
    let before_count = limit / 2;
    let after_count = limit - before_count;
    let viewer = Some((sender.user_id.as_ref(), sender.device_id.as_str()));
    let latest = services.rooms.latest_position(&body.room_id)?;

    let visible = |ids: Vec<String>, take: usize| -> Result<(Vec<Value>, Option<u64>)> {
        let mut events = Vec::new();
        let mut last = None;
        for id in ids {
            if events.len() == take {
                break;
            }
            let Ok(event_id) = ruma::EventId::parse(&id) else { continue };
            let Some(pdu) = services.rooms.get_pdu(&event_id)? else { continue };
            last = Some(pdu.position);
            if event_allowed(&body.filter, &pdu)
                && services.rooms.can_see_event(&sender.user_id, &pdu)?
            {
                events.push(pdu.to_client_event(viewer));
            }
        }
        Ok((events, last))
    };

    let mut before_ids =
        services.rooms.timeline_ids(&body.room_id, 0, event.position.saturating_sub(1))?;
    before_ids.reverse();
    let (events_before, first_position) = visible(before_ids, before_count)?;
    let after_ids = services.rooms.timeline_ids(&body.room_id, event.position, latest)?;
    let (events_after, last_position) = visible(after_ids, after_count)?;

    let state = services.rooms.state_group(event.state_before)?;
    let state_events: Vec<Value> =
        services.rooms.state_pdus(&state)?.iter().map(|pdu| pdu.to_client_event(viewer)).collect();

    Ok(Json(json!({
        "event": event.to_client_event(viewer),
        "events_before": events_before,
        "events_after": events_after,
        "start": first_position.unwrap_or(event.position).saturating_sub(1).to_string(),
        "end": last_position.unwrap_or(event.position).to_string(),
        "state": state_events,
    })))
}
