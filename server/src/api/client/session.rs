//! GET/POST /_matrix/client/v3/login, POST /logout, /logout/all, /refresh and
//! /v1/login/get_token: start, refresh, link and end sessions.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::session::get_login_token::v1 as get_login_token_v1;
use ruma::api::client::session::get_login_types::v3 as login_types_v3;
use ruma::api::client::session::login::v3 as login_v3;
use ruma::api::client::session::refresh_token::v3 as refresh_v3;
use ruma::api::client::session::{logout::v3 as logout_v3, logout_all::v3 as logout_all_v3};
use ruma::api::client::uiaa::UserIdentifier;
use ruma::OwnedUserId;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::{Sender, Session, SessionRequest};
use crate::service::security::AuditSubject;
use crate::service::uia::confirm_password;
use crate::service::Services;
use crate::storage::tables::DeviceKind;

pub async fn login_types(
    _request: Ruma<login_types_v3::Request>,
) -> Result<RumaResponse<login_types_v3::Response>> {
    let password = login_types_v3::LoginType::Password(Default::default());
    let mut token = login_types_v3::TokenLoginType::new();
    token.get_login_token = true;
    let token = login_types_v3::LoginType::Token(token);
    let appservice = login_types_v3::LoginType::ApplicationService(Default::default());
    Ok(login_types_v3::Response::new(vec![password, token, appservice]).into())
}

pub async fn login(
    State(services): State<Arc<Services>>,
    request: Ruma<login_v3::Request>,
) -> Result<RumaResponse<login_v3::Response>> {
    let address = request.client_ip;
    let body = request.body;
    let (user_id, kind, method) = match &body.login_info {
        login_v3::LoginInfo::Password(password) => {
            let user_id = check_password_login(&services, password, address).await?;
            (user_id, DeviceKind::Primary, "password")
        }
        login_v3::LoginInfo::Token(token) => {
            let user_id = services.accounts.consume_login_token(&token.token)?;
            if !services.accounts.is_active(&user_id)? {
                return Err(deactivated());
            }
            (user_id, DeviceKind::Linked, "token")
        }
        login_v3::LoginInfo::ApplicationService(info) => {
            let user = identified_user(info.identifier.as_ref(), deprecated_user(info))?;
            return login_for_appservice(&services, request.sender.as_ref(), &user, body).await;
        }
        _ => {
            return Err(Error::new(
                ErrorCode::Unknown,
                "Only m.login.password, m.login.token and m.login.application_service are \
                 supported on this server",
            ))
        }
    };

    let session = services.accounts.start_session(
        &user_id,
        SessionRequest {
            device_id: body.device_id,
            display_name: body.initial_device_display_name,
            kind,
            refresh_token: body.refresh_token,
        },
    )?;
    audit_login(&services, &session, method, address)?;

    // `well_known` is left out: ruma would send its unset `m.identity_server` as null, which
    // the spec's schema does not allow, and clients discover the base URL anyway.
    let mut response =
        login_v3::Response::new(session.user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    Ok(response.into())
}

/// Checks an `m.login.password` login against the lockout rules and the stored password, and
/// returns the user it signs in.
async fn check_password_login(
    services: &Services,
    password: &login_v3::Password,
    address: Option<IpAddr>,
) -> Result<OwnedUserId> {
    #[allow(deprecated)]
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(identifier)), _) => identifier.user.clone(),
        // An unknown address becomes an empty user, which fails like a wrong password below
        // without naming an account.
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
    services.rate_limits.check_login_address(address)?;
    services.security.check_address(address)?;
    let Ok(user_id) = services.local_user_id(&user) else {
        services.security.record_unknown_failure(address)?;
        return Err(invalid());
    };
    services.rate_limits.check_login_user(&user_id)?;
    if let Err(locked) = services.security.check_locked(&user_id) {
        services.security.record_locked_attempt(&user_id, address)?;
        return Err(locked);
    }
    if !services.accounts.verify_password(&user_id, &password.password).await? {
        tracing::info!(user_id = %user_id, "login failed: wrong user or password");
        if let Some(locked_for) = services.security.record_failure(&user_id, address)? {
            return Err(services.security.locked_error(locked_for));
        }
        return Err(invalid());
    }
    if !services.accounts.is_active(&user_id)? {
        return Err(deactivated());
    }
    services.security.record_success(&user_id)?;
    Ok(user_id)
}

fn deactivated() -> Error {
    Error::new(ErrorCode::UserDeactivated, "This account has been deactivated")
}

/// Records a login in the audit log, and the primary devices it signed out.
fn audit_login(
    services: &Services,
    session: &Session,
    method: &str,
    address: Option<IpAddr>,
) -> Result<()> {
    let subject = AuditSubject {
        user_id: Some(session.user_id.as_str()),
        device_id: Some(session.device_id.as_str()),
        address,
    };
    let detail = serde_json::json!({
        "method": method,
        "device_kind": device_kind_name(session.kind),
        "refresh_token": session.refresh_token.is_some(),
    });
    services.security.audit("login", &subject, detail)?;
    if !session.replaced_device_ids.is_empty() {
        let detail = serde_json::json!({ "signed_out_device_ids": session.replaced_device_ids });
        services.security.audit("primary_device_replaced", &subject, detail)?;
    }
    Ok(())
}

fn device_kind_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Primary => "primary",
        DeviceKind::Linked => "linked",
    }
}

pub async fn refresh(
    State(services): State<Arc<Services>>,
    request: Ruma<refresh_v3::Request>,
) -> Result<RumaResponse<refresh_v3::Response>> {
    let tokens = services.accounts.refresh(&request.body.refresh_token)?;
    let mut response = refresh_v3::Response::new(tokens.access_token);
    response.refresh_token = Some(tokens.refresh_token);
    response.expires_in_ms = Some(tokens.expires_in);
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
    let appservice = services.appservices.of_sender(sender, "Logging in")?;
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

/// Issues a login token that signs a new linked session in, after the user confirms their
/// password. The spec requires a fresh confirmation for every token.
pub async fn get_login_token(
    State(services): State<Arc<Services>>,
    request: Ruma<get_login_token_v1::Request>,
) -> Result<RumaResponse<get_login_token_v1::Response>> {
    let sender = request.sender()?;
    // Checked before the password prompt, so a linked session gets the rejection at once.
    services.accounts.check_can_link_sessions(sender)?;
    confirm_password(&services, &sender.user_id, request.body.auth.as_ref(), "get_login_token")
        .await?;
    let (login_token, lifetime) = services.accounts.issue_login_token(sender)?;
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: request.client_ip,
    };
    let detail = serde_json::json!({ "expires_in_ms": lifetime.as_millis() as u64 });
    services.security.audit("login_token_issued", &subject, detail)?;
    Ok(get_login_token_v1::Response::new(lifetime, login_token).into())
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
