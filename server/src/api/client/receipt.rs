//! POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId} and
//! /read_markers: read receipts and the fully-read marker.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::read_marker::set_read_marker::v3 as read_markers_v3;
use ruma::api::client::receipt::create_receipt::v3 as receipt_v3;
use ruma::events::receipt::ReceiptThread;
use ruma::{EventId, RoomId, UserId};
use serde_json::json;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::Services;

fn check_event_in_room(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    event_id: &EventId,
) -> Result<()> {
    if !services.rooms.is_joined(room_id, user_id)? {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let in_room = services.rooms.get_pdu(event_id)?.is_some_and(|pdu| pdu.room_id == room_id);
    if !in_room {
        return Err(Error::not_found("The event is not in this room"));
    }
    Ok(())
}

fn store_receipt(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    receipt_type: &str,
    thread: Option<&str>,
    event_id: &EventId,
) -> Result<()> {
    let record =
        services.receipts.set(room_id, user_id, receipt_type, thread, event_id.as_str())?;
    let members = services.rooms.joined_members(room_id)?;
    services.stream.notify(members.iter().map(|user| user.as_ref()));

    let mut receipt = json!({ "ts": record.ts });
    if let Some(thread) = thread {
        receipt["thread_id"] = json!(thread);
    }
    let event = json!({
        "type": "m.receipt",
        "room_id": room_id,
        "content": { event_id.as_str(): { receipt_type: { user_id.as_str(): receipt } } },
    });
    let private_to = (receipt_type == "m.read.private").then_some(user_id);
    services.appservices.push_ephemeral(room_id, event, private_to)
}

fn set_fully_read(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    event_id: &EventId,
) -> Result<()> {
    let content = serde_json::value::to_raw_value(&json!({ "event_id": event_id }))
        .map_err(|error| anyhow::anyhow!("fully-read content: {error}"))?;
    services.account_data.set(user_id, Some(room_id.as_str()), "m.fully_read", &content)
}

pub async fn create_receipt(
    State(services): State<Arc<Services>>,
    request: Ruma<receipt_v3::Request>,
) -> Result<RumaResponse<receipt_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    check_event_in_room(&services, &body.room_id, &sender.user_id, &body.event_id)?;
    let thread = match &body.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(root) => Some(root.to_string()),
        _ => None,
    };
    let receipt_type = body.receipt_type.to_string();
    match receipt_type.as_str() {
        "m.fully_read" => {
            if thread.is_some() {
                return Err(Error::invalid_param("m.fully_read receipts cannot have a thread"));
            }
            set_fully_read(&services, &body.room_id, &sender.user_id, &body.event_id)?;
        }
        "m.read" | "m.read.private" => {
            store_receipt(
                &services,
                &body.room_id,
                &sender.user_id,
                &receipt_type,
                thread.as_deref(),
                &body.event_id,
            )?;
        }
        other => {
            return Err(Error::invalid_param(format!("Unknown receipt type {other:?}")));
        }
    }
    Ok(receipt_v3::Response::new().into())
}

pub async fn set_read_markers(
    State(services): State<Arc<Services>>,
    request: Ruma<read_markers_v3::Request>,
) -> Result<RumaResponse<read_markers_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let room_id = &body.room_id;
    if let Some(event_id) = &body.fully_read {
        check_event_in_room(&services, room_id, &sender.user_id, event_id)?;
        set_fully_read(&services, room_id, &sender.user_id, event_id)?;
    }
    if let Some(event_id) = &body.read_receipt {
        check_event_in_room(&services, room_id, &sender.user_id, event_id)?;
        store_receipt(&services, room_id, &sender.user_id, "m.read", None, event_id)?;
    }
    if let Some(event_id) = &body.private_read_receipt {
        check_event_in_room(&services, room_id, &sender.user_id, event_id)?;
        store_receipt(&services, room_id, &sender.user_id, "m.read.private", None, event_id)?;
    }
    Ok(read_markers_v3::Response::new().into())
}
