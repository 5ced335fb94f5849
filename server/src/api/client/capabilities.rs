//! GET /_matrix/client/v3/capabilities: what this server lets the user change.

use axum::Json;
use ruma::api::client::discovery::get_capabilities::v3 as get_capabilities_v3;
use serde_json::{json, Value};

use crate::api::ruma::Ruma;
use crate::error::Result;
use crate::service::profiles::SERVER_NAMESPACE;

pub async fn get_capabilities(request: Ruma<get_capabilities_v3::Request>) -> Result<Json<Value>> {
    request.sender()?;
    Ok(Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": true },
            "m.get_login_token": { "enabled": false },
            "m.profile_fields": {
                "enabled": true,
                "disallowed": [format!("{SERVER_NAMESPACE}verification")],
            },
        }
    })))
}
