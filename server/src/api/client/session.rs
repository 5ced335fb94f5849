//! GET/POST /_matrix/client/v3/login and POST /logout, /logout/all: start and end sessions.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::session::get_login_types::v3 as login_types_v3;
use ruma::api::client::session::login::v3 as login_v3;
use ruma::api::client::session::{logout::v3 as logout_v3, logout_all::v3 as logout_all_v3};
use ruma::api::client::uiaa::UserIdentifier;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::Sender;
use crate::service::security::AuditSubject;
use crate::service::Services;

pub async fn login_types(
    _request: Ruma<login_types_v3::Request>,
) -> Result<RumaResponse<login_types_v3::Response>> {
    let password = login_types_v3::LoginType::Password(Default::default());
    let appservice = login_types_v3::LoginType::ApplicationService(Default::default());
    Ok(login_types_v3::Response::new(vec![password, appservice]).into())
}

pub async fn login(
    State(services): State<Arc<Services>>,
    request: Ruma<login_v3::Request>,
) -> Result<RumaResponse<login_v3::Response>> {
    let body = request.body;
    let password = match &body.login_info {
        login_v3::LoginInfo::Password(password) => password,
        login_v3::LoginInfo::ApplicationService(info) => {
            let user = identified_user(info.identifier.as_ref(), deprecated_user(info))?;
            return login_for_appservice(&services, request.sender.as_ref(), &user, body).await;
        }
        _ => return Err(Error::new(
            ErrorCode::Unknown,
            "Only m.login.password and m.login.application_service are supported on this server",
        )),
    };

    #[allow(deprecated)]
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(identifier)), _) => identifier.user.clone(),
        // An unknown address becomes an empty user, which fails like a wrong password below.
        (Some(UserIdentifier::Email(identifier)), _) => {
            services.threepids.find_user(&identifier.address)?.unwrap_or_default()
        }
        (Some(_), _) => {
            return Err(Error::new(
                ErrorCode::Unknown,
                "Only the m.id.user and m.id.thirdparty (email) identifiers are supported on \
                 this server",
            ))
        }
        (None, Some(user)) => user.clone(),
        (None, None) => {
            return Err(Error::new(ErrorCode::MissingParam, "The identifier is missing"))
        }
    };

    let invalid = || Error::forbidden("Invalid username or password");
    let address = request.client_ip;
    services.security.check_address(address)?;
    let Ok(user_id) = services.local_user_id(&user) else {
        return Err(invalid());
    };
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

/// The user named by a login's `identifier`, or by the older `user` field.
fn identified_user(identifier: Option<&UserIdentifier>, user: Option<&String>) -> Result<String> {
    match (identifier, user) {
        (Some(UserIdentifier::Matrix(identifier)), _) => Ok(identifier.user.clone()),
        (Some(_), _) => Err(Error::new(
            ErrorCode::Unknown,
            "Only the m.id.user identifier is supported on this server",
        )),
        (None, Some(user)) => Ok(user.clone()),
        (None, None) => Err(Error::new(ErrorCode::MissingParam, "The identifier is missing")),
    }
}

#[allow(deprecated)]
fn deprecated_user(info: &login_v3::ApplicationService) -> Option<&String> {
    info.user.as_ref()
}

/// Logs in a user of an application service's namespace, authorised by its `as_token`.
async fn login_for_appservice(
    services: &Services,
    sender: Option<&Sender>,
    user: &str,
    body: login_v3::Request,
) -> Result<RumaResponse<login_v3::Response>> {
    let Some(sender) = sender else {
        return Err(Error::new(
            ErrorCode::MissingToken,
            "Logging in with m.login.application_service needs the application service's token",
        ));
    };
    let appservice =
        sender.appservice_id.as_deref().and_then(|id| services.appservices.by_id(id)).ok_or_else(
            || {
                Error::new(
                    ErrorCode::UnknownToken { soft_logout: false },
                    "The access token is not an application service's token",
                )
            },
        )?;
    let user_id = services.local_user_id(user)?;
    if !appservice.owns_user(&user_id) {
        return Err(Error::forbidden(
            "The user is outside the application service's user namespaces",
        ));
    }
    if !services.accounts.is_active(&user_id)? {
        return Err(Error::forbidden("There is no active account with this user ID"));
    }
    let session = services.accounts.create_session(
        &user_id,
        body.device_id,
        body.initial_device_display_name,
    )?;
    let response =
        login_v3::Response::new(session.user_id, session.access_token, session.device_id);
    let subject = AuditSubject {
        user_id: Some(response.user_id.as_str()),
        device_id: Some(response.device_id.as_str()),
        address: None,
    };
    let detail =
        serde_json::json!({ "method": "application_service", "appservice": appservice.id() });
    services.security.audit("login", &subject, detail)?;
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
