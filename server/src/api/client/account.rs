//! GET /_matrix/client/v3/account/whoami, POST /account/password and /account/deactivate:
//! who the token belongs to, changing or (by email) resetting the password, closing the account.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::account::change_password::v3 as change_password_v3;
use ruma::api::client::account::deactivate::v3 as deactivate_v3;
use ruma::api::client::account::whoami::v3 as whoami_v3;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;

use ruma::api::client::uiaa::AuthData;
use ruma::UserId;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::check_new_password;
use crate::service::security::AuditSubject;
use crate::service::uia::{confirm_password, Scope, StageResult, STAGE_EMAIL_IDENTITY};
use crate::service::Services;
use crate::storage::tables::EmailPurpose;

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
    let body = &request.body;
    check_new_password(&body.new_password)?;
    let Some(sender) = request.sender.as_ref() else {
        return reset_password(&services, &request).await;
    };
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

/// Resets the password of a user who is not signed in, after they proved with the
/// `m.login.email.identity` stage that they read the mail of one of the account's addresses.
async fn reset_password(
    services: &Services,
    request: &Ruma<change_password_v3::Request>,
) -> Result<RumaResponse<change_password_v3::Response>> {
    let body = &request.body;
    let scope = Scope { action: "reset_password", user_id: None };
    let flows = vec![vec![STAGE_EMAIL_IDENTITY.to_owned()]];
    let stage = match &body.auth {
        None => return Err(services.uia.challenge(scope, flows)?),
        Some(AuthData::EmailIdentity(stage)) => stage,
        Some(other) => {
            let stage = other.auth_type().map(|kind| kind.to_string()).unwrap_or_default();
            let message = format!(
                "Without an access token the password can only be reset with {STAGE_EMAIL_IDENTITY}"
            );
            let failed = StageResult::Failed(ErrorCode::Forbidden, message.clone());
            services.uia.submit(other.session(), scope, flows, &stage, failed, None)?;
            return Err(Error::forbidden(message));
        }
    };

    let checked =
        services.threepids.check_stage(&stage.thirdparty_id_creds, EmailPurpose::ResetPassword)?;
    let (result, validated) = match checked {
        Ok(email) => match services.threepids.find_user(&email.address)? {
            Some(owner) => (StageResult::Passed, Some((email, owner))),
            None => {
                let message = "No account on this server has that email address any more";
                (StageResult::Failed(ErrorCode::ThreepidNotFound, message.to_owned()), None)
            }
        },
        Err(failed) => (failed, None),
    };
    services.uia.submit(
        stage.session.as_deref(),
        scope,
        flows,
        STAGE_EMAIL_IDENTITY,
        result,
        None,
    )?;
    let Some((email, owner)) = validated else {
        return Err(Error::Internal(anyhow::anyhow!("a failed stage completed the flow")));
    };
    let user_id = UserId::parse(owner.as_str())
        .map_err(|error| Error::Internal(anyhow::anyhow!("stored user ID {owner:?}: {error}")))?;

    services.accounts.set_password(&user_id, &body.new_password).await?;
    // A user who proved control of the mailbox may sign in at once, even after a lockout.
    services.security.record_success(&user_id)?;
    if body.logout_devices {
        services.accounts.delete_other_devices(&user_id, None)?;
    }
    services.threepids.close_session(&email.sid)?;
    tracing::info!(user_id = %user_id, "password reset by email");
    let subject = AuditSubject {
        user_id: Some(user_id.as_str()),
        device_id: None,
        address: request.client_ip,
    };
    let detail = serde_json::json!({
        "email": email.address,
        "other_devices_logged_out": body.logout_devices,
    });
    services.security.audit("password_reset", &subject, detail)?;
    Ok(change_password_v3::Response::new().into())
}

pub async fn deactivate(
    State(services): State<Arc<Services>>,
    request: Ruma<deactivate_v3::Request>,
) -> Result<RumaResponse<deactivate_v3::Response>> {
    let sender = request.sender()?;
    confirm_password(&services, &sender.user_id, request.body.auth.as_ref(), "deactivate").await?;

    services.profiles.clear(&sender.user_id)?;
    services.accounts.deactivate(&sender.user_id)?;
    let removed_emails = services.threepids.remove_all(&sender.user_id).await?;
    let directory_services = services.clone();
    let user_id = sender.user_id.clone();
    tokio::task::spawn_blocking(move || directory_services.directory.remove_user(&user_id))
        .await??;
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: request.client_ip,
    };
    services.security.audit("deactivated", &subject, serde_json::Value::Null)?;
    for email in removed_emails {
        services.security.audit(
            "email_removed",
            &subject,
            serde_json::json!({ "email": email }),
        )?;
    }
    // No identity server is ever contacted, so there is nothing to unbind.
    Ok(deactivate_v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}
