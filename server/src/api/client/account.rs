//! GET /_matrix/client/v3/account/whoami, POST /account/password and /account/deactivate:
//! who the token belongs to, changing the password, closing the account.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::account::change_password::v3 as change_password_v3;
use ruma::api::client::account::deactivate::v3 as deactivate_v3;
use ruma::api::client::account::whoami::v3 as whoami_v3;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::Result;
use crate::service::accounts::check_new_password;
use crate::service::deletion_requests;
use crate::service::security::AuditSubject;
use crate::service::uia::confirm_password;
use crate::service::Services;

pub async fn whoami(
    request: Ruma<whoami_v3::Request>,
) -> Result<RumaResponse<whoami_v3::Response>> {
    let sender = request.sender()?;
    let mut response = whoami_v3::Response::new(sender.user_id.clone(), false);
    response.device_id = Some(sender.device_id.clone());
    Ok(response.into())
}

pub async fn change_password(
    State(services): State<Arc<Services>>,
    request: Ruma<change_password_v3::Request>,
) -> Result<RumaResponse<change_password_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    check_new_password(&body.new_password)?;
    confirm_password(&services, &sender.user_id, body.auth.as_ref(), "change_password").await?;

    services.accounts.set_password(&sender.user_id, &body.new_password).await?;
    if body.logout_devices {
        services.accounts.delete_other_devices(&sender.user_id, Some(sender.device_id.as_str()))?;
    }
    tracing::info!(user_id = %sender.user_id, "password changed");
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: request.client_ip,
    };
    let detail = serde_json::json!({ "other_devices_logged_out": body.logout_devices });
    services.security.audit("password_changed", &subject, detail)?;
    Ok(change_password_v3::Response::new().into())
}

pub async fn deactivate(
    State(services): State<Arc<Services>>,
    request: Ruma<deactivate_v3::Request>,
) -> Result<RumaResponse<deactivate_v3::Response>> {
    let sender = request.sender()?;
    confirm_password(&services, &sender.user_id, request.body.auth.as_ref(), "deactivate").await?;

    deletion_requests::deactivate(&services, &sender.user_id).await?;
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: request.client_ip,
    };
    services.security.audit("deactivated", &subject, serde_json::Value::Null)?;
    // No identity server is ever contacted, so there is nothing to unbind.
    Ok(deactivate_v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}
