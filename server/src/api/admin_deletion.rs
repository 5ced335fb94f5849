//! GET /_caduceus/admin/v1/deletion_requests and POST
//! /_caduceus/admin/v1/deletion_requests/{userId}/approve and /reject: a server administrator
//! decides on account deletion requests.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::client::deletion_request::request_json;
use crate::api::ruma::Authenticated;
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::Sender;
use crate::service::{deletion_requests, Services};

/// Accepts the access token of a server administrator (the `admin` flag of the account).
/// The extractor has already answered a missing or unknown token with 401.
fn require_server_admin(services: &Services, sender: &Sender) -> Result<()> {
    let user = services.accounts.get_user(&sender.user_id)?;
    if user.is_some_and(|user| user.admin && !user.deactivated) {
        return Ok(());
    }
    Err(Error::forbidden("Only server administrators can decide on deletion requests"))
}

/// Parses the `{userId}` path segment as a user of this server that exists.
fn existing_user(services: &Services, user_id: &str) -> Result<ruma::OwnedUserId> {
    let user_id = services.local_user_id(user_id)?;
    if services.accounts.get_user(&user_id)?.is_none() {
        return Err(Error::not_found(format!("No user {user_id} exists")));
    }
    Ok(user_id)
}

pub async fn list(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>> {
    require_server_admin(&services, &sender)?;
    let requests: Vec<Value> = services
        .deletion_requests
        .list()?
        .iter()
        .map(|(user_id, record)| request_json(user_id, record))
        .collect();
    Ok(Json(json!({ "deletion_requests": requests })))
}

pub async fn approve(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    require_server_admin(&services, &sender)?;
    let user_id = existing_user(&services, &user_id)?;
    let record = deletion_requests::approve(&services, &user_id, Some(&sender.user_id)).await?;
    Ok(Json(request_json(user_id.as_str(), &record)))
}

pub async fn reject(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    require_server_admin(&services, &sender)?;
    let user_id = existing_user(&services, &user_id)?;
    let reason = parse_reason(&body)?;
    let record = deletion_requests::reject(&services, &user_id, Some(&sender.user_id), reason)?;
    Ok(Json(request_json(user_id.as_str(), &record)))
}

/// Reads the optional `{"reason": "..."}` body of a rejection.
fn parse_reason(body: &[u8]) -> Result<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        Error::new(ErrorCode::NotJson, format!("The request body is not valid JSON: {error}"))
    })?;
    let Value::Object(object) = value else {
        return Err(Error::bad_json("The body must be a JSON object"));
    };
    match object.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(reason)) => Ok(Some(reason.clone())),
        Some(_) => Err(Error::bad_json("`reason` must be a string")),
    }
}
