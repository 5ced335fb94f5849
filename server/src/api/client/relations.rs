//! GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]: the
//! events that relate to an event (thread replies, reactions, edits).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::ruma::Authenticated;
use crate::error::{Error, Result};
use crate::service::sync::parse_token;
use crate::service::Services;

#[derive(Debug, Deserialize)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    dir: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RelationsPath {
    #[serde(rename = "roomId")]
    room_id: String,
    #[serde(rename = "eventId")]
    event_id: String,
    #[serde(rename = "relType")]
    rel_type: Option<String>,
    #[serde(rename = "eventType")]
    event_type: Option<String>,
}

/// The most relations one page returns.
const MAX_PAGE: usize = 100;

pub async fn get_relations(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Path(path): Path<RelationsPath>,
    Query(query): Query<RelationsQuery>,
) -> Result<Json<Value>> {
    let room_id = ruma::RoomId::parse(&path.room_id)
        .map_err(|_| Error::invalid_param("The room ID is invalid"))?;
    let event_id = ruma::EventId::parse(&path.event_id)
        .map_err(|_| Error::invalid_param("The event ID is invalid"))?;
    let not_found = || Error::not_found("Event not found, or you may not see it");
    let parent = services.rooms.get_pdu(&event_id)?.ok_or_else(not_found)?;
    if parent.room_id != room_id || !services.rooms.can_see_event(&sender.user_id, &parent)? {
        return Err(not_found());
    }

    let backwards = query.dir.as_deref() != Some("f");
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let from = query.from.as_deref().map(parse_token).transpose()?;
    let to = query.to.as_deref().map(parse_token).transpose()?;

    let mut relations = services.rooms.relations(&event_id)?;
    relations.retain(|(position, record)| {
        path.rel_type.as_ref().is_none_or(|rel_type| *rel_type == record.rel_type)
            && path.event_type.as_ref().is_none_or(|event_type| *event_type == record.event_type)
            && match (backwards, from) {
                (true, Some(from)) => *position <= from,
                (false, Some(from)) => *position > from,
                _ => true,
            }
            && match (backwards, to) {
                (true, Some(to)) => *position > to,
                (false, Some(to)) => *position <= to,
                _ => true,
            }
    });
    if backwards {
        relations.reverse();
    }

    let viewer = Some((sender.user_id.as_ref(), sender.device_id.as_str()));
    let mut chunk = Vec::new();
    let mut next = None;
    for (index, (_, record)) in relations.iter().enumerate() {
        if chunk.len() == limit {
            let last = relations[index - 1].0;
            next = Some(if backwards { last.saturating_sub(1) } else { last });
            break;
        }
        let Ok(child_id) = ruma::EventId::parse(&record.event_id) else { continue };
        if let Some(pdu) = services.rooms.get_pdu(&child_id)? {
            if pdu.redacted_by.is_none() && services.rooms.can_see_event(&sender.user_id, &pdu)? {
                chunk.push(pdu.to_client_event(viewer));
            }
        }
    }

    let mut response = json!({ "chunk": chunk });
    if let Some(next) = next {
        response["next_batch"] = json!(next.to_string());
    }
    Ok(Json(response))
}
