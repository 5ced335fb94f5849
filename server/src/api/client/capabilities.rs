//! GET /_matrix/client/v3/capabilities: what this server lets the user change.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::discovery::get_capabilities::v3 as get_capabilities_v3;
use serde_json::{json, Value};

use crate::api::ruma::Ruma;
use crate::error::Result;
use crate::service::profiles::SERVER_NAMESPACE;
use crate::service::Services;

pub async fn get_capabilities(
    State(services): State<Arc<Services>>,
    request: Ruma<get_capabilities_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    // Per user and device, as the spec allows: only a primary device may link sessions.
    let can_link = services.accounts.can_link_sessions(sender)?;
    Ok(Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": true },
            "m.get_login_token": { "enabled": can_link },
            "m.profile_fields": {
                "enabled": true,
                "disallowed": [format!("{SERVER_NAMESPACE}verification")],
            },
        }
    })))
}
