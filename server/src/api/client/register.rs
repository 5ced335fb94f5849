//! POST /_matrix/client/v3/register and its helpers: create an account behind user-interactive
//! authentication, check a username, check a registration token.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::account::check_registration_token_validity::v1 as token_validity_v1;
use ruma::api::client::account::get_username_availability::v3 as availability_v3;
use ruma::api::client::account::register::{v3 as register_v3, RegistrationKind};
use ruma::api::client::uiaa::AuthData;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::{check_new_password, random_string};
use crate::service::security::AuditSubject;
use crate::service::uia::{Scope, StageResult, STAGE_DUMMY, STAGE_REGISTRATION_TOKEN};
use crate::service::Services;

const ACTION: &str = "register";

/// The stage lists that complete registration, as configured.
fn registration_flows(services: &Services) -> Vec<Vec<String>> {
    let mut flows = Vec::new();
    if services.config.registration.token {
        flows.push(vec![STAGE_REGISTRATION_TOKEN.to_owned()]);
    }
    if services.config.registration.open {
        flows.push(vec![STAGE_DUMMY.to_owned()]);
    }
    flows
}

pub async fn register(
    State(services): State<Arc<Services>>,
    request: Ruma<register_v3::Request>,
) -> Result<RumaResponse<register_v3::Response>> {
    let address = request.client_ip;
    services.rate_limits.check_registration(address)?;
    let body = request.body;
    if body.kind == RegistrationKind::Guest {
        return Err(Error::new(
            ErrorCode::GuestAccessForbidden,
            "Guest accounts are not available on this server",
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
    services.accounts.check_available(&localpart)?;
    let Some(password) = body.password.as_deref() else {
        return Err(Error::new(ErrorCode::MissingParam, "A password is required to register"));
    };
    check_new_password(password)?;

    let scope = Scope { action: ACTION, user_id: None };
    let completed = match &body.auth {
        None => return Err(services.uia.challenge(scope, flows)?),
        Some(AuthData::RegistrationToken(stage)) => {
            let valid = services.registration_tokens.is_valid(&stage.token)?;
            let result = if valid {
                StageResult::Passed
            } else {
                StageResult::Failed(
                    ErrorCode::Forbidden,
                    "The registration token is invalid, used up or expired".to_owned(),
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
        Some(AuthData::Dummy(stage)) => services.uia.submit(
            stage.session.as_deref(),
            scope,
            flows,
            STAGE_DUMMY,
            StageResult::Passed,
            None,
        )?,
        Some(other) => {
            let stage = other.auth_type().map(|kind| kind.to_string()).unwrap_or_default();
            let failed = StageResult::Failed(
                ErrorCode::Forbidden,
                format!("The stage {stage} is not offered for registration"),
            );
            // A failed stage never completes a flow, so this returns the next challenge.
            services.uia.submit(other.session(), scope, flows, &stage, failed, None)?;
            return Err(Error::forbidden(format!("The stage {stage} is not offered")));
        }
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
    let invited_by = match &completed.registration_token {
        Some(token) => services.invitations.accept(token, &user_id)?,
        None => None,
    };
    let detail = match (&completed.registration_token, invited_by) {
        (Some(_), Some(inviter)) => {
            serde_json::json!({ "method": "invitation", "invited_by": inviter })
        }
        (Some(_), None) => serde_json::json!({ "method": "registration_token" }),
        (None, _) => serde_json::json!({ "method": "open" }),
    };
    services.security.audit("registration", &subject, detail)?;
    if body.inhibit_login {
        let mut response = register_v3::Response::new(user_id);
        response.device_id = None;
        return Ok(response.into());
    }
    let session = services.accounts.create_session(
        &user_id,
        body.device_id,
        body.initial_device_display_name,
    )?;
    let mut response = register_v3::Response::new(user_id);
    response.access_token = Some(session.access_token);
    response.device_id = Some(session.device_id);
    Ok(response.into())
}

pub async fn available(
    State(services): State<Arc<Services>>,
    request: Ruma<availability_v3::Request>,
) -> Result<RumaResponse<availability_v3::Response>> {
    services.accounts.check_available(&request.body.username)?;
    Ok(availability_v3::Response::new(true).into())
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
