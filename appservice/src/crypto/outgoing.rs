//! Sending the requests the Olm machine queues, and handing their responses back to it.

use matrix_sdk_crypto::types::requests::{
    AnyOutgoingRequest, OutgoingRequest, RoomMessageRequest, ToDeviceRequest,
};
use matrix_sdk_crypto::OlmMachine;
use ruma::api::client::keys::get_keys;
use ruma::api::client::message::send_message_event;
use ruma::api::client::to_device::send_event_to_device;
use ruma::events::{AnyMessageLikeEventContent, MessageLikeEventContent};
use ruma::serde::Raw;
use tracing::{debug, warn};

use super::error::Result;
use super::homeserver::Homeserver;

/// Sends every request in `requests` and marks each as sent.
///
/// A failed request does not stop the others, because they are independent (a failed key
/// query must not hold back the upload of one-time keys). The machine returns a request
/// again from `outgoing_requests` until it is marked as sent, so a failure is retried on the
/// next call. Returns the first error.
pub(super) async fn send_all(
    homeserver: &Homeserver,
    machine: &OlmMachine,
    requests: Vec<OutgoingRequest>,
) -> Result<()> {
    let mut first_error = None;
    for request in requests {
        if let Err(error) = send_one(homeserver, machine, &request).await {
            warn!(request_id = %request.request_id(), %error, "an encryption request failed");
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn send_one(
    homeserver: &Homeserver,
    machine: &OlmMachine,
    request: &OutgoingRequest,
) -> Result<()> {
    let request_id = request.request_id();
    match request.request() {
        AnyOutgoingRequest::KeysUpload(upload) => {
            debug!(
                one_time_keys = upload.one_time_keys.len(),
                device_keys = upload.device_keys.is_some(),
                "uploading keys"
            );
            let response = homeserver.send(upload.clone()).await?;
            machine.mark_request_as_sent(request_id, &response).await?;
        }
        AnyOutgoingRequest::KeysQuery(query) => {
            debug!(users = query.device_keys.len(), "querying device keys");
            let mut http_request = get_keys::v3::Request::new();
            http_request.device_keys = query.device_keys.clone();
            http_request.timeout = query.timeout;
            let response = homeserver.send(http_request).await?;
            machine.mark_request_as_sent(request_id, &response).await?;
        }
        AnyOutgoingRequest::KeysClaim(claim) => {
            debug!(users = claim.one_time_keys.len(), "claiming one-time keys");
            let response = homeserver.send(claim.clone()).await?;
            machine.mark_request_as_sent(request_id, &response).await?;
        }
        AnyOutgoingRequest::ToDeviceRequest(to_device) => {
            send_to_device(homeserver, machine, to_device).await?;
        }
        AnyOutgoingRequest::SignatureUpload(signatures) => {
            let response = homeserver.send(signatures.clone()).await?;
            machine.mark_request_as_sent(request_id, &response).await?;
        }
        AnyOutgoingRequest::RoomMessage(message) => {
            let response = send_room_message(homeserver, message).await?;
            machine.mark_request_as_sent(request_id, &response).await?;
        }
    }
    Ok(())
}

/// Sends one to-device request and marks it as sent under its transaction ID, which is the
/// request ID the machine expects for to-device requests.
pub(super) async fn send_to_device(
    homeserver: &Homeserver,
    machine: &OlmMachine,
    request: &ToDeviceRequest,
) -> Result<()> {
    debug!(event_type = %request.event_type, recipients = request.message_count(), "sending to-device messages");
    let http_request = send_event_to_device::v3::Request::new_raw(
        request.event_type.clone(),
        request.txn_id.clone(),
        request.messages.clone(),
    );
    let response = homeserver.send(http_request).await?;
    machine.mark_request_as_sent(&request.txn_id, &response).await?;
    Ok(())
}

/// Sends an unencrypted room message that the machine produced (in-room verification).
async fn send_room_message(
    homeserver: &Homeserver,
    message: &RoomMessageRequest,
) -> Result<send_message_event::v3::Response> {
    let content: Raw<AnyMessageLikeEventContent> = Raw::new(&*message.content)?;
    let http_request = send_message_event::v3::Request::new_raw(
        message.room_id.clone(),
        message.txn_id.clone(),
        message.content.event_type(),
        content,
    );
    homeserver.send(http_request).await
}
