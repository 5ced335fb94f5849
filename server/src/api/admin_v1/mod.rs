//! /_caduceus/admin/v1: the privileged admin API, for server administrators and the
//! verification gatekeeper application service.

pub mod verification;

use axum::http::HeaderMap;
use ruma::OwnedUserId;

use crate::error::{Error, ErrorCode, Result};
use crate::service::Services;

/// Who called the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user with the `admin` flag, by access token.
    ServerAdmin(OwnedUserId),
    /// The application service whose registration has `org.caduceus.gatekeeper: true`, by its
    /// `as_token`.
    Gatekeeper { appservice_id: String },
}

impl Actor {
    /// Names the actor in the audit log.
    pub fn audit_name(&self) -> String {
        match self {
            Self::ServerAdmin(user_id) => user_id.to_string(),
            Self::Gatekeeper { appservice_id } => format!("appservice:{appservice_id}"),
        }
    }
}

/// Checks the `Authorization: Bearer` credential of an admin API request. A missing token is
/// `M_MISSING_TOKEN`, an unknown one `M_UNKNOWN_TOKEN` (both 401), and a user without the admin
/// flag `M_FORBIDDEN`.
pub fn authorize(services: &Services, headers: &HeaderMap) -> Result<Actor> {
    let Some(token) = super::directory_v1::bearer(headers)? else {
        return Err(Error::new(
            ErrorCode::MissingToken,
            "The admin API requires an access token as Authorization: Bearer",
        ));
    };
    if let Some(actor) = gatekeeper_actor(services, token) {
        return Ok(actor);
    }
    let Some(sender) = services.accounts.authenticate(token)? else {
        return Err(Error::new(
            ErrorCode::UnknownToken { soft_logout: false },
            "The access token is not recognised",
        ));
    };
    let is_admin = services.accounts.get_user(&sender.user_id)?.is_some_and(|user| user.admin);
    if !is_admin {
        return Err(Error::forbidden("Only server administrators can use the admin API"));
    }
    tracing::Span::current().record("user_id", sender.user_id.as_str());
    Ok(Actor::ServerAdmin(sender.user_id))
}

/// Returns the gatekeeper's actor when `token` is the `as_token` of the application service
/// whose registration has `org.caduceus.gatekeeper: true`. The application service registry
/// provides this lookup; without it no token belongs to the gatekeeper, so this returns `None`.
fn gatekeeper_actor(_services: &Services, _token: &str) -> Option<Actor> {
    None
}
