//! PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}: send messages straight to devices,
//! outside any room.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::to_device::send_event_to_device::v3 as send_event_to_device_v3;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::Result;
use crate::service::{gating, Services};

pub async fn send_event_to_device(
    State(services): State<Arc<Services>>,
    request: Ruma<send_event_to_device_v3::Request>,
) -> Result<RumaResponse<send_event_to_device_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    for target in body.messages.keys() {
        gating::check_to_device(&services, &sender.user_id, target)?;
    }
    services.to_device.send(
        &services.accounts,
        sender,
        &body.event_type.to_string(),
        body.txn_id.as_str(),
        &body.messages,
    )?;
    Ok(send_event_to_device_v3::Response::new().into())
}
