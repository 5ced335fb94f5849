//! /_matrix/client/v3/profile/{userId} and /profile/{userId}/{keyName}: display name, avatar and
//! extensible profile fields.

use std::sync::Arc;

use axum::extract::{Path, State};
use ruma::api::client::profile::{
    delete_profile_field::v3 as delete_field_v3, get_profile::v3 as get_profile_v3,
    get_profile_field::v3 as get_field_v3, set_profile_field::v3 as set_field_v3,
};
use ruma::profile::ProfileFieldValue;
use ruma::UserId;

use crate::api::ruma::{Authenticated, JsonBody, MaybeAuthenticated, Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::Sender;
use crate::service::{gating, Services};

/// Profiles of unknown users are answered with 404, as the spec asks. A user in an
/// application service's namespace may exist there first: the service is asked, and may
/// register the user, before the answer is given.
async fn ensure_user_exists(services: &Services, user_id: &UserId) -> Result<()> {
    if services.accounts.get_user(user_id)?.is_some() {
        return Ok(());
    }
    if user_id.server_name() == services.server_name
        && services.appservices.query_user(user_id).await
        && services.accounts.get_user(user_id)?.is_some()
    {
        return Ok(());
    }
    Err(Error::not_found("There is no such user on this server"))
}

fn ensure_own_profile(sender: &UserId, target: &UserId) -> Result<()> {
    if sender != target {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    Ok(())
}

/// Lookups of other people follow the gating rules, so a token is needed; the spec allows a
/// 403 when the server does not disclose profiles.
fn ensure_may_look_up(services: &Services, viewer: Option<&Sender>, target: &UserId) -> Result<()> {
    let Some(viewer) = viewer else {
        return Err(Error::forbidden("Log in to look up people's profiles"));
    };
    gating::check_lookup(services, &viewer.user_id, target)
}

pub async fn get_profile(
    State(services): State<Arc<Services>>,
    MaybeAuthenticated(viewer): MaybeAuthenticated,
    request: Ruma<get_profile_v3::Request>,
) -> Result<RumaResponse<get_profile_v3::Response>> {
    let user_id = &request.body.user_id;
    ensure_may_look_up(&services, viewer.as_ref(), user_id)?;
    ensure_user_exists(&services, user_id).await?;
    let mut response = get_profile_v3::Response::new();
    for (key, value) in services.profiles.get(user_id)? {
        response.set(key, value);
    }
    Ok(response.into())
}

pub async fn get_field(
    State(services): State<Arc<Services>>,
    MaybeAuthenticated(viewer): MaybeAuthenticated,
    request: Ruma<get_field_v3::Request>,
) -> Result<RumaResponse<get_field_v3::Response>> {
    let body = &request.body;
    ensure_may_look_up(&services, viewer.as_ref(), &body.user_id)?;
    ensure_user_exists(&services, &body.user_id).await?;
    let key = body.field.as_str();
    let value = services
        .profiles
        .get_field(&body.user_id, key)?
        .ok_or_else(|| Error::not_found(format!("The profile field {key} is not set")))?;
    let value = ProfileFieldValue::new(key, value)
        .map_err(|error| anyhow::anyhow!("stored profile field {key} is invalid: {error}"))?;
    Ok(get_field_v3::Response::new(value).into())
}

/// Sets one field. The body is read as plain JSON rather than ruma's type so that a body without
/// the key named in the path gets the spec's `M_MISSING_PARAM`.
pub async fn set_field(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Path((user_id, key)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<RumaResponse<set_field_v3::Response>> {
    let user_id = UserId::parse(&user_id)
        .map_err(|_| Error::invalid_param(format!("{user_id:?} is not a valid user ID")))?;
    ensure_own_profile(&sender.user_id, &user_id)?;
    let Some(object) = body.as_object() else {
        return Err(Error::bad_json("The request body must be a JSON object"));
    };
    let Some(value) = object.get(&key) else {
        return Err(Error::new(
            ErrorCode::MissingParam,
            format!("The request body must contain the key {key:?} named in the path"),
        ));
    };
    services.profiles.set_field_by_user(&user_id, &key, Some(value.clone()))?;
    Ok(set_field_v3::Response::new().into())
}

pub async fn delete_field(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_field_v3::Request>,
) -> Result<RumaResponse<delete_field_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_own_profile(&sender.user_id, &body.user_id)?;
    services.profiles.set_field_by_user(&body.user_id, body.field.as_str(), None)?;
    Ok(delete_field_v3::Response::new().into())
}
