//! POST, GET and DELETE /_caduceus/client/v1/account/deletion_request: ask for the account to be
//! deleted, see the request, withdraw it. An administrator decides.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use http::Extensions;
use ruma::api::client::uiaa::AuthData;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::ruma::Authenticated;
use crate::error::{Error, ErrorCode, Result};
use crate::service::deletion_requests;
use crate::service::security::AuditSubject;
use crate::service::uia::confirm_password;
use crate::service::Services;
use crate::storage::tables::DeletionRequestRecord;

#[derive(Deserialize)]
struct RequestBody {
    #[serde(default)]
    auth: Option<AuthData>,
    #[serde(default)]
    reason: Option<String>,
}

/// Shapes a request for clients and administrators.
pub fn request_json(user_id: &str, record: &DeletionRequestRecord) -> Value {
    let mut body = json!({
        "user_id": user_id,
        "state": record.state.as_str(),
        "requested_ts": record.requested_ts,
    });
    if let Some(reason) = &record.reason {
        body["reason"] = json!(reason);
    }
    if let Some(decided_ts) = record.decided_ts {
        body["decided_ts"] = json!(decided_ts);
    }
    if let Some(reason) = &record.decision_reason {
        body["decision_reason"] = json!(reason);
    }
    body
}

fn client_ip(extensions: &Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip())
}

/// Parses the optional JSON body: empty, or an object with `auth` and `reason`.
fn parse_body(body: &[u8]) -> Result<RequestBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RequestBody { auth: None, reason: None });
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        Error::new(ErrorCode::NotJson, format!("The request body is not valid JSON: {error}"))
    })?;
    serde_json::from_value(value)
        .map_err(|error| Error::bad_json(format!("The request body is invalid: {error}")))
}

pub async fn create(
    State(services): State<Arc<Services>>,
    extensions: Extensions,
    Authenticated(sender): Authenticated,
    body: Bytes,
) -> Result<Json<Value>> {
    let body = parse_body(&body)?;
    confirm_password(&services, &sender.user_id, body.auth.as_ref(), "deletion_request").await?;
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: client_ip(&extensions),
    };
    let record = deletion_requests::request(&services, &subject, &sender.user_id, body.reason)?;
    Ok(Json(request_json(sender.user_id.as_str(), &record)))
}

pub async fn get(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>> {
    let record = services
        .deletion_requests
        .get(&sender.user_id)?
        .ok_or_else(|| Error::not_found("You have not asked for your account to be deleted"))?;
    Ok(Json(request_json(sender.user_id.as_str(), &record)))
}

pub async fn withdraw(
    State(services): State<Arc<Services>>,
    extensions: Extensions,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>> {
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: client_ip(&extensions),
    };
    let record = deletion_requests::withdraw(&services, &subject, &sender.user_id)?;
    Ok(Json(request_json(sender.user_id.as_str(), &record)))
}
