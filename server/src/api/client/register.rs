//! POST /_matrix/client/v3/register and its helpers: create an account behind user-interactive
//! authentication, check a username, check a registration token.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ruma::api::client::account::check_registration_token_validity::v1 as token_validity_v1;
use ruma::api::client::account::get_username_availability::v3 as availability_v3;
use ruma::api::client::account::register::{v3 as register_v3, LoginType, RegistrationKind};
use ruma::api::client::uiaa::AuthData;
use ruma::UserId;
use serde_json::json;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::{check_new_password, random_string, Sender, SessionRequest};
use crate::service::security::AuditSubject;
use crate::service::threepids::ACCESS_HELP;
use crate::service::uia::{
    Scope, StageResult, STAGE_DUMMY, STAGE_EMAIL_IDENTITY, STAGE_REGISTRATION_TOKEN,
};
use crate::service::Services;
use crate::storage::tables::{DeviceKind, EmailPurpose};

const ACTION: &str = "register";

/// The stage lists that complete registration, as configured.
fn registration_flows(services: &Services) -> Vec<Vec<String>> {
    let mut flows = Vec::new();
    if services.config.registration.token {
        flows.push(vec![STAGE_REGISTRATION_TOKEN.to_owned()]);
    }
    if services.threepids.email_registration_enabled() {
        flows.push(vec![STAGE_EMAIL_IDENTITY.to_owned()]);
    }
    if services.config.registration.open {
        flows.push(vec![STAGE_DUMMY.to_owned()]);
    }
    flows
}

pub async fn register(
    State(services): State<Arc<Services>>,
    request: Ruma<register_v3::Request>,
) -> Result<Response> {
    let address = request.client_ip;
    services.rate_limits.check_registration(address)?;
    let body = request.body;
    if body.kind == RegistrationKind::Guest {
        return Err(Error::new(
            ErrorCode::GuestAccessForbidden,
            "Guest accounts are not available on this server",
        ));
    }
    if body.login_type == Some(LoginType::ApplicationService) {
        return register_for_appservice(&services, request.sender.as_ref(), body, address).await;
    }
    if request.sender.as_ref().is_some_and(|sender| sender.appservice_id.is_some()) {
        return Err(Error::invalid_param(
            "Application services register users with the type m.login.application_service",
        ));
    }
    let flows = registration_flows(&services);
    if flows.is_empty() {
        return Err(Error::forbidden(
            "Registration is closed on this server. Ask your hospital's IT team for an account.",
        ));
    }

    // Check what can be checked before authentication, so the client learns about a taken
    // username or a weak password before the user spends a token.
    let localpart = match &body.username {
        Some(username) => username.clone(),
        None => random_string(12).to_lowercase(),
    };
    let user_id = services.accounts.check_available(&localpart)?;
    services.appservices.check_user_free(&user_id, None)?;
    let Some(password) = body.password.as_deref() else {
        return Err(Error::new(ErrorCode::MissingParam, "A password is required to register"));
    };
    check_new_password(password)?;

    let scope = Scope { action: ACTION, user_id: None };
    if let Some(auth) = &body.auth {
        let stage = auth.auth_type().map(|kind| kind.to_string()).unwrap_or_default();
        if !flows.iter().flatten().any(|offered| *offered == stage) {
            return Err(reject_stage(&services, auth, scope, flows));
        }
    }
    let mut email = None;
    let completed = match &body.auth {
        None => return Err(services.uia.challenge(scope, flows)?),
        Some(AuthData::RegistrationToken(stage)) => {
            let valid = services.registration_tokens.is_valid(&stage.token)?;
            let result = if valid {
                StageResult::Passed
            } else {
                StageResult::Failed(
                    ErrorCode::Forbidden,
                    format!("The registration token is invalid, used up or expired. {ACCESS_HELP}"),
                )
            };
            let token = valid.then(|| stage.token.clone());
            services.uia.submit(
                stage.session.as_deref(),
                scope,
                flows,
                STAGE_REGISTRATION_TOKEN,
                result,
                token,
            )?
        }
        Some(AuthData::EmailIdentity(stage)) => {
            let checked = services
                .threepids
                .check_stage(&stage.thirdparty_id_creds, EmailPurpose::Register)?;
            let (result, validated) = match checked {
                Ok(email) if !services.threepids.is_trusted(&email.address) => {
                    let message =
                        format!("{} is not at a trusted domain. {ACCESS_HELP}", email.address);
                    (StageResult::Failed(ErrorCode::Forbidden, message), None)
                }
                Ok(email) if services.threepids.find_user(&email.address)?.is_some() => {
                    let message = "That email address is already used by an account".to_owned();
                    (StageResult::Failed(ErrorCode::ThreepidInUse, message), None)
                }
                Ok(email) => (StageResult::Passed, Some(email)),
                Err(failed) => (failed, None),
            };
            let completed = services.uia.submit(
                stage.session.as_deref(),
                scope,
                flows,
                STAGE_EMAIL_IDENTITY,
                result,
                None,
            )?;
            email = validated;
            completed
        }
        Some(AuthData::Dummy(stage)) => services.uia.submit(
            stage.session.as_deref(),
            scope,
            flows,
            STAGE_DUMMY,
            StageResult::Passed,
            None,
        )?,
        Some(other) => return Err(reject_stage(&services, other, scope, flows)),
    };

    if let Some(token) = &completed.registration_token {
        if !services.registration_tokens.spend(token)? {
            return Err(services.uia.challenge(
                Scope { action: ACTION, user_id: None },
                registration_flows(&services),
            )?);
        }
    }

    let user_id = services.accounts.create_user(&localpart, Some(password), false).await?;
    let subject = AuditSubject { user_id: Some(user_id.as_str()), device_id: None, address };
    if let Some(email) = &email {
        // Another registration may have claimed the address since the stage was checked. The
        // account created here is then deactivated again, so no address has two accounts.
        if let Err(error) =
            services.threepids.add_email(&user_id, &email.address, email.validated_ts).await
        {
            services.accounts.deactivate(&user_id)?;
            return Err(error);
        }
        services.threepids.close_session(&email.sid)?;
        let detail = serde_json::json!({ "email": email.address });
        services.security.audit("email_added", &subject, detail)?;
    }
    let invited_by = match &completed.registration_token {
        Some(token) => services.invitations.accept(token, &user_id)?,
        None => None,
    };
    let detail = match (&completed.registration_token, invited_by, &email) {
        (Some(_), Some(inviter), _) => {
            serde_json::json!({ "method": "invitation", "invited_by": inviter })
        }
        (Some(_), None, _) => serde_json::json!({ "method": "registration_token" }),
        (None, _, Some(_)) => serde_json::json!({ "method": "email" }),
        (None, _, None) => serde_json::json!({ "method": "open" }),
    };
    services.security.audit("registration", &subject, detail)?;
    if body.inhibit_login {
        // Written by hand because ruma's response type sends `device_id` as null, which the
        // spec's schema does not allow.
        return Ok(Json(json!({ "user_id": user_id })).into_response());
    }
    let session = services.accounts.start_session(
        &user_id,
        SessionRequest {
            device_id: body.device_id,
            display_name: body.initial_device_display_name,
            kind: DeviceKind::Primary,
            refresh_token: body.refresh_token,
        },
    )?;
    let mut response = register_v3::Response::new(user_id);
    response.access_token = Some(session.access_token);
    response.device_id = Some(session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    Ok(RumaResponse(response).into_response())
}

/// Rejects a stage that registration does not offer here, with a message that explains how to
/// get access. A failed stage never completes a flow, so the session's next challenge carries it.
fn reject_stage(
    services: &Services,
    auth: &AuthData,
    scope: Scope,
    flows: Vec<Vec<String>>,
) -> Error {
    let stage = auth.auth_type().map(|kind| kind.to_string()).unwrap_or_default();
    let message = format!("The stage {stage} is not offered for registration. {ACCESS_HELP}");
    let failed = StageResult::Failed(ErrorCode::Forbidden, message.clone());
    // The UIA service rejects an unexpected stage with a generic error, replaced here.
    match services.uia.submit(auth.session(), scope, flows, &stage, failed, None) {
        Err(Error::Uia(mut challenge)) => {
            challenge.stage_error = Some((ErrorCode::Forbidden, message));
            Error::Uia(challenge)
        }
        Err(error) => error,
        Ok(_) => Error::forbidden(message),
    }
}

pub async fn available(
    State(services): State<Arc<Services>>,
    request: Ruma<availability_v3::Request>,
) -> Result<RumaResponse<availability_v3::Response>> {
    let user_id = services.accounts.check_available(&request.body.username)?;
    services.appservices.check_user_free(&user_id, None)?;
    Ok(availability_v3::Response::new(true).into())
}

/// Registers a user in an application service's user namespace, authorised by its `as_token`
/// instead of user-interactive authentication. The account has no password.
async fn register_for_appservice(
    services: &Services,
    sender: Option<&Sender>,
    body: register_v3::Request,
    address: Option<std::net::IpAddr>,
) -> Result<Response> {
    let appservice = services.appservices.of_sender(sender, "Registering")?;
    let Some(localpart) = body.username.as_deref() else {
        return Err(Error::new(
            ErrorCode::MissingParam,
            "An application service must give the username to register",
        ));
    };
    let user_id = UserId::parse_with_server_name(localpart, &services.server_name)
        .map_err(|_| Error::new(ErrorCode::InvalidUsername, "The username is not valid"))?;
    if !appservice.owns_user(&user_id) {
        return Err(Error::new(
            ErrorCode::Exclusive,
            "The username is outside the application service's user namespaces",
        ));
    }
    services.appservices.check_user_free(&user_id, Some(appservice.id()))?;
    let user_id = services.accounts.create_user(localpart, None, false).await?;
    let subject = AuditSubject { user_id: Some(user_id.as_str()), device_id: None, address };
    let detail =
        serde_json::json!({ "method": "application_service", "appservice": appservice.id() });
    services.security.audit("registration", &subject, detail)?;
    let mut response = register_v3::Response::new(user_id.clone());
    if body.inhibit_login {
        return Ok(Json(json!({ "user_id": response.user_id })).into_response());
    }
    let session = services.accounts.create_session(
        &user_id,
        body.device_id,
        body.initial_device_display_name,
    )?;
    response.access_token = Some(session.access_token);
    response.device_id = Some(session.device_id);
    Ok(RumaResponse(response).into_response())
}

pub async fn token_validity(
    State(services): State<Arc<Services>>,
    request: Ruma<token_validity_v1::Request>,
) -> Result<RumaResponse<token_validity_v1::Response>> {
    if !services.config.registration.token {
        return Err(Error::forbidden("Registration tokens are not used on this server"));
    }
    let valid = services.registration_tokens.is_valid(&request.body.token)?;
    Ok(token_validity_v1::Response::new(valid).into())
}
