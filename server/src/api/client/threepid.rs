//! Email addresses of accounts: `requestToken` for registration, adding an address and password
//! reset, the code submission endpoint `/_caduceus/client/v1/email/submit_token`, and
//! `/account/3pid` (list, add, delete; binding with identity servers is not supported).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ruma::api::client::account::add_3pid::v3 as add_3pid_v3;
use ruma::api::client::account::bind_3pid::v3 as bind_3pid_v3;
use ruma::api::client::account::delete_3pid::v3 as delete_3pid_v3;
use ruma::api::client::account::get_3pids::v3 as get_3pids_v3;
use ruma::api::client::account::request_3pid_management_token_via_email::v3 as add_token_v3;
use ruma::api::client::account::request_password_change_token_via_email::v3 as password_token_v3;
use ruma::api::client::account::request_registration_token_via_email::v3 as register_token_v3;
use ruma::api::client::account::unbind_3pid::v3 as unbind_3pid_v3;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;
use ruma::thirdparty::{Medium, ThirdPartyIdentifierInit};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedSessionId, UInt};
use serde::Deserialize;
use serde_json::json;

use crate::api::ruma::{JsonBody, Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::security::AuditSubject;
use crate::service::threepids::{TokenRequest, MEDIUM_EMAIL};
use crate::service::uia::confirm_password;
use crate::service::Services;
use crate::storage::tables::EmailPurpose;

/// Starts or repeats a validation session and returns its `sid` and `submit_url`.
async fn request_token(
    services: &Arc<Services>,
    request: TokenRequest<'_>,
) -> Result<(OwnedSessionId, String)> {
    let mail = services.clone();
    let sid = services
        .threepids
        .request_token(request, |to, subject, body| async move {
            mail.mail.send(&to, &subject, &body).await
        })
        .await?;
    let sid = OwnedSessionId::try_from(sid)
        .map_err(|error| Error::Internal(anyhow::anyhow!("generated an invalid sid: {error}")))?;
    Ok((sid, services.threepids.submit_url()))
}

fn send_attempt(value: UInt) -> u64 {
    u64::from(value)
}

pub async fn request_registration_token(
    State(services): State<Arc<Services>>,
    request: Ruma<register_token_v3::Request>,
) -> Result<RumaResponse<register_token_v3::Response>> {
    let body = &request.body;
    let (sid, submit_url) = request_token(
        &services,
        TokenRequest {
            purpose: EmailPurpose::Register,
            email: &body.email,
            client_secret: body.client_secret.as_str(),
            send_attempt: send_attempt(body.send_attempt),
            next_link: body.next_link.as_deref(),
        },
    )
    .await?;
    let mut response = register_token_v3::Response::new(sid);
    response.submit_url = Some(submit_url);
    Ok(response.into())
}

pub async fn request_add_token(
    State(services): State<Arc<Services>>,
    request: Ruma<add_token_v3::Request>,
) -> Result<RumaResponse<add_token_v3::Response>> {
    let body = &request.body;
    let (sid, submit_url) = request_token(
        &services,
        TokenRequest {
            purpose: EmailPurpose::AddThreepid,
            email: &body.email,
            client_secret: body.client_secret.as_str(),
            send_attempt: send_attempt(body.send_attempt),
            next_link: body.next_link.as_deref(),
        },
    )
    .await?;
    let mut response = add_token_v3::Response::new(sid);
    response.submit_url = Some(submit_url);
    Ok(response.into())
}

pub async fn request_password_token(
    State(services): State<Arc<Services>>,
    request: Ruma<password_token_v3::Request>,
) -> Result<RumaResponse<password_token_v3::Response>> {
    let body = &request.body;
    let (sid, submit_url) = request_token(
        &services,
        TokenRequest {
            purpose: EmailPurpose::ResetPassword,
            email: &body.email,
            client_secret: body.client_secret.as_str(),
            send_attempt: send_attempt(body.send_attempt),
            next_link: body.next_link.as_deref(),
        },
    )
    .await?;
    let mut response = password_token_v3::Response::new(sid);
    response.submit_url = Some(submit_url);
    Ok(response.into())
}

/// The body of `POST /_caduceus/client/v1/email/submit_token`, and the query of its `GET`.
#[derive(Debug, Deserialize)]
pub struct SubmitToken {
    sid: String,
    client_secret: String,
    token: String,
}

/// `POST /_caduceus/client/v1/email/submit_token`: a client submits the code the user typed.
pub async fn submit_token_post(
    State(services): State<Arc<Services>>,
    JsonBody(body): JsonBody,
) -> Result<Json<serde_json::Value>> {
    let body: SubmitToken = serde_json::from_value(body).map_err(|error| {
        Error::bad_json(format!(
            "Expected an object with the strings sid, client_secret and token: {error}"
        ))
    })?;
    services.threepids.submit_token(&body.sid, &body.client_secret, &body.token).await?;
    Ok(Json(json!({ "success": true })))
}

/// `GET /_caduceus/client/v1/email/submit_token`: the link in the mail, opened in a browser.
/// Redirects to the session's `next_link` when it has one, and otherwise shows a short page.
pub async fn submit_token_get(
    State(services): State<Arc<Services>>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let mut sid = None;
    let mut client_secret = None;
    let mut token = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sid" => sid = Some(value.into_owned()),
            "client_secret" => client_secret = Some(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let (Some(sid), Some(client_secret), Some(token)) = (sid, client_secret, token) else {
        return text_page(
            StatusCode::BAD_REQUEST,
            "This link is incomplete: it needs sid, client_secret and token. Open the link \
             from the mail as it is, or type the code into your app.",
        );
    };
    match services.threepids.submit_token(&sid, &client_secret, &token).await {
        Ok(Some(next_link)) => (StatusCode::FOUND, [(header::LOCATION, next_link)]).into_response(),
        Ok(None) => text_page(
            StatusCode::OK,
            "Your email address is confirmed. You can close this page and return to your app.",
        ),
        Err(Error::Matrix { code, message, .. }) => {
            let status = code.status();
            text_page(status, &message)
        }
        Err(error) => error.into_response(),
    }
}

fn text_page(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n"))
        .into_response()
}

pub async fn list(
    State(services): State<Arc<Services>>,
    request: Ruma<get_3pids_v3::Request>,
) -> Result<RumaResponse<get_3pids_v3::Response>> {
    let sender = request.sender()?;
    let mut threepids = Vec::new();
    for (medium, address, record) in services.threepids.list(&sender.user_id)? {
        let timestamp = |ms: u64| MilliSecondsSinceUnixEpoch(UInt::new(ms).unwrap_or(UInt::MAX));
        threepids.push(
            ThirdPartyIdentifierInit {
                address,
                medium: Medium::from(medium.as_str()),
                validated_at: timestamp(record.validated_at),
                added_at: timestamp(record.added_at),
            }
            .into(),
        );
    }
    Ok(get_3pids_v3::Response::new(threepids).into())
}

pub async fn add(
    State(services): State<Arc<Services>>,
    request: Ruma<add_3pid_v3::Request>,
) -> Result<RumaResponse<add_3pid_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    confirm_password(&services, &sender.user_id, body.auth.as_ref(), "add_threepid").await?;

    let validated = services.threepids.validated(
        body.sid.as_str(),
        body.client_secret.as_str(),
        EmailPurpose::AddThreepid,
    )?;
    services
        .threepids
        .add_email(&sender.user_id, &validated.address, validated.validated_ts)
        .await?;
    services.threepids.close_session(&validated.sid)?;
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: request.client_ip,
    };
    services.security.audit("email_added", &subject, json!({ "email": validated.address }))?;
    Ok(add_3pid_v3::Response::new().into())
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_3pid_v3::Request>,
) -> Result<RumaResponse<delete_3pid_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let medium = body.medium.as_str();
    if !services.threepids.remove(&sender.user_id, medium, &body.address).await? {
        return Err(Error::new(
            ErrorCode::ThreepidNotFound,
            format!("Your account has no {medium} address {:?}", body.address),
        ));
    }
    let subject = AuditSubject {
        user_id: Some(sender.user_id.as_str()),
        device_id: Some(sender.device_id.as_str()),
        address: request.client_ip,
    };
    if medium == MEDIUM_EMAIL {
        let email = body.address.trim().to_lowercase();
        services.security.audit("email_removed", &subject, json!({ "email": email }))?;
    }
    // No identity server is ever contacted, so there is nothing to unbind there.
    Ok(delete_3pid_v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

/// Binding with an identity server is not supported: this server validates addresses itself
/// and contacts no identity server.
pub async fn bind(
    request: Ruma<bind_3pid_v3::Request>,
) -> Result<RumaResponse<bind_3pid_v3::Response>> {
    request.sender()?;
    Err(Error::new(
        ErrorCode::ServerNotTrusted,
        "This server does not bind addresses with identity servers",
    ))
}

pub async fn unbind(
    request: Ruma<unbind_3pid_v3::Request>,
) -> Result<RumaResponse<unbind_3pid_v3::Response>> {
    request.sender()?;
    Ok(unbind_3pid_v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}
