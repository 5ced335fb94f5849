//! PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}: redact an event.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::redact::redact_event::v3 as redact_v3;
use serde_json::json;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::rooms::EventDraft;
use crate::service::Services;

pub async fn redact(
    State(services): State<Arc<Services>>,
    request: Ruma<redact_v3::Request>,
) -> Result<RumaResponse<redact_v3::Response>> {
    let sender = request.sender()?;
    services.rate_limits.check_message(&sender.user_id, sender.is_rate_limit_exempt())?;
    let body = &request.body;
    let target = services
        .rooms
        .get_pdu(&body.event_id)?
        .filter(|pdu| pdu.room_id == body.room_id)
        .ok_or_else(|| Error::not_found("The event to redact is not in this room"))?;

    let mut content = json!({ "redacts": body.event_id });
    if let Some(reason) = &body.reason {
        content["reason"] = json!(reason);
    }
    let draft = EventDraft {
        event_type: "m.room.redaction".to_owned(),
        content,
        state_key: None,
        redacts: Some(target.event_id.clone()),
    };
    let transaction = Some((sender.device_id.to_string(), format!("redact:{}", body.txn_id)));
    let event_id =
        services.rooms.append(&body.room_id, &sender.user_id, draft, transaction).await?;
    Ok(redact_v3::Response::new(event_id).into())
}
