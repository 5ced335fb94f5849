//! POST /_caduceus/client/v1/invitations: a verified member invites a colleague by email; the
//! colleague receives a single-use registration token.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::api::ruma::{Authenticated, JsonBody};
use crate::error::{Error, Result};
use crate::service::{invitations, Services};

pub async fn create(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>> {
    let email = match body.get("email") {
        Some(Value::String(email)) => email,
        Some(_) => return Err(Error::bad_json("`email` must be a string")),
        None => {
            return Err(Error::new(
                crate::error::ErrorCode::MissingParam,
                "The body needs the `email` to send the invitation to",
            ))
        }
    };
    let record = invitations::invite(&services, &sender.user_id, email).await?;
    Ok(Json(json!({ "email": record.email, "expires_ts": record.expiry_ts })))
}
