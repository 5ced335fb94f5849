//! /_matrix/client/v3/user/{userId}/account_data/{type} and the per-room variant: private JSON
//! documents a client keeps on the server.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::config::{
    get_global_account_data::v3 as get_global_v3, get_room_account_data::v3 as get_room_v3,
    set_global_account_data::v3 as set_global_v3, set_room_account_data::v3 as set_room_v3,
};
use ruma::serde::Raw;
use ruma::UserId;
use serde_json::value::RawValue;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::{gating, Services};

/// Types the server maintains itself; clients change them through their own endpoints.
const SERVER_MANAGED_TYPES: &[&str] = &["m.fully_read", "m.push_rules"];

fn ensure_own_data(sender: &UserId, target: &UserId) -> Result<()> {
    if sender != target {
        return Err(Error::forbidden("You can only access your own account data"));
    }
    Ok(())
}

fn ensure_client_writable(event_type: &str) -> Result<()> {
    if SERVER_MANAGED_TYPES.contains(&event_type) {
        return Err(Error::with_status(
            ErrorCode::BadJson,
            http::StatusCode::METHOD_NOT_ALLOWED,
            format!("{event_type} is managed by the server and cannot be set directly"),
        ));
    }
    Ok(())
}

/// Account data must be a JSON object.
fn ensure_object(content: &RawValue) -> Result<()> {
    if !content.get().trim_start().starts_with('{') {
        return Err(Error::bad_json("Account data content must be a JSON object"));
    }
    Ok(())
}

fn not_found(event_type: &str) -> Error {
    Error::not_found(format!("No account data of type {event_type} is stored"))
}

pub async fn get_global(
    State(services): State<Arc<Services>>,
    request: Ruma<get_global_v3::Request>,
) -> Result<RumaResponse<get_global_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_own_data(&sender.user_id, &body.user_id)?;
    let event_type = body.event_type.to_string();
    let stored = services.account_data.get(&body.user_id, None, &event_type)?;
    let content = match stored {
        Some(content) => content,
        // Push rules are readable as account data even before the user changed any.
        None if event_type == crate::service::push_rules::EVENT_TYPE => {
            let rules = services.push_rules.get(&body.user_id)?;
            serde_json::value::to_raw_value(&serde_json::json!({ "global": rules }))
                .map_err(|error| anyhow::anyhow!("push rules do not serialise: {error}"))?
        }
        None => return Err(not_found(&event_type)),
    };
    Ok(get_global_v3::Response::new(Raw::from_json(content)).into())
}

pub async fn set_global(
    State(services): State<Arc<Services>>,
    request: Ruma<set_global_v3::Request>,
) -> Result<RumaResponse<set_global_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_own_data(&sender.user_id, &body.user_id)?;
    let event_type = body.event_type.to_string();
    ensure_client_writable(&event_type)?;
    ensure_object(body.data.json())?;
    if event_type == gating::INVITE_PERMISSION_TYPE {
        let content: serde_json::Value = serde_json::from_str(body.data.json().get())
            .map_err(|error| Error::bad_json(format!("The content is not valid JSON: {error}")))?;
        gating::parse_invite_permission(&content)?;
    }
    services.account_data.set(&body.user_id, None, &event_type, body.data.json())?;
    Ok(set_global_v3::Response::new().into())
}

pub async fn get_room(
    State(services): State<Arc<Services>>,
    request: Ruma<get_room_v3::Request>,
) -> Result<RumaResponse<get_room_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_own_data(&sender.user_id, &body.user_id)?;
    let event_type = body.event_type.to_string();
    let content = services
        .account_data
        .get(&body.user_id, Some(body.room_id.as_str()), &event_type)?
        .ok_or_else(|| not_found(&event_type))?;
    Ok(get_room_v3::Response::new(Raw::from_json(content)).into())
}

pub async fn set_room(
    State(services): State<Arc<Services>>,
    request: Ruma<set_room_v3::Request>,
) -> Result<RumaResponse<set_room_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_own_data(&sender.user_id, &body.user_id)?;
    let event_type = body.event_type.to_string();
    ensure_client_writable(&event_type)?;
    ensure_object(body.data.json())?;
    services.account_data.set(
        &body.user_id,
        Some(body.room_id.as_str()),
        &event_type,
        body.data.json(),
    )?;
    Ok(set_room_v3::Response::new().into())
}
