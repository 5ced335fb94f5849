//! GET/POST /_matrix/client/v3/login and POST /logout, /logout/all: start and end sessions.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::session::get_login_types::v3 as login_types_v3;
use ruma::api::client::session::login::v3 as login_v3;
use ruma::api::client::session::{logout::v3 as logout_v3, logout_all::v3 as logout_all_v3};
use ruma::api::client::uiaa::UserIdentifier;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::security::AuditSubject;
use crate::service::Services;

pub async fn login_types(
    _request: Ruma<login_types_v3::Request>,
) -> Result<RumaResponse<login_types_v3::Response>> {
    let password = login_types_v3::LoginType::Password(Default::default());
    Ok(login_types_v3::Response::new(vec![password]).into())
}

pub async fn login(
    State(services): State<Arc<Services>>,
    request: Ruma<login_v3::Request>,
) -> Result<RumaResponse<login_v3::Response>> {
    let body = request.body;
    let login_v3::LoginInfo::Password(password) = &body.login_info else {
        return Err(Error::new(
            ErrorCode::Unknown,
            "Only m.login.password is supported on this server",
        ));
    };

    #[allow(deprecated)]
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(identifier)), _) => identifier.user.clone(),
        (Some(_), _) => {
            return Err(Error::new(
                ErrorCode::Unknown,
                "Only the m.id.user identifier is supported on this server",
            ))
        }
        (None, Some(user)) => user.clone(),
        (None, None) => {
            return Err(Error::new(ErrorCode::MissingParam, "The identifier is missing"))
        }
    };

    let invalid = || Error::forbidden("Invalid username or password");
    let address = request.client_ip;
    services.rate_limits.check_login_address(address)?;
    services.security.check_address(address)?;
    let Ok(user_id) = services.local_user_id(&user) else {
        return Err(invalid());
    };
    services.rate_limits.check_login_user(&user_id)?;
    services.security.check_locked(&user_id)?;
    if !services.accounts.verify_password(&user_id, &password.password).await? {
        tracing::info!(user_id = %user_id, "login failed: wrong user or password");
        if let Some(locked_for) = services.security.record_failure(&user_id, address)? {
            return Err(services.security.locked_error(locked_for));
        }
        return Err(invalid());
    }
    if !services.accounts.is_active(&user_id)? {
        return Err(Error::new(ErrorCode::UserDeactivated, "This account has been deactivated"));
    }
    services.security.record_success(&user_id)?;

    let session = services.accounts.create_session(
        &user_id,
        body.device_id,
        body.initial_device_display_name,
    )?;
    // `well_known` is left out: ruma would send its unset `m.identity_server` as null, which
    // the spec's schema does not allow, and clients discover the base URL anyway.
    let response =
        login_v3::Response::new(session.user_id, session.access_token, session.device_id);
    let subject = AuditSubject {
        user_id: Some(response.user_id.as_str()),
        device_id: Some(response.device_id.as_str()),
        address,
    };
    services.security.audit("login", &subject, serde_json::Value::Null)?;
    Ok(response.into())
}

pub async fn logout(
    State(services): State<Arc<Services>>,
    request: Ruma<logout_v3::Request>,
) -> Result<RumaResponse<logout_v3::Response>> {
    let sender = request.sender()?;
    services.accounts.delete_devices(&sender.user_id, &[sender.device_id.to_string()])?;
    Ok(logout_v3::Response::new().into())
}

pub async fn logout_all(
    State(services): State<Arc<Services>>,
    request: Ruma<logout_all_v3::Request>,
) -> Result<RumaResponse<logout_all_v3::Response>> {
    let sender = request.sender()?;
    services.accounts.delete_other_devices(&sender.user_id, None)?;
    Ok(logout_all_v3::Response::new().into())
}
