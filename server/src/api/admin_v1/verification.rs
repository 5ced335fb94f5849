//! GET /_caduceus/admin/v1/users and GET/PUT/DELETE /users/{userId}/verification: list
//! accounts for the verification gatekeeper, and read, set and revoke verification levels.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use caduceus_directory::{Area, VerificationLevel};
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::authorize;
use crate::api::ruma::OptionalJsonBody;
use crate::error::{Error, Result};
use crate::service::verification::{self, VerificationUpdate};
use crate::service::{now_ms, profiles, Services};
use crate::storage::tables::{DirectoryProfileRecord, EvidenceSource, VerificationEvidence};

/// Page size of the user list when the request gives none.
const DEFAULT_LIMIT: usize = 100;

/// The largest page of the user list.
const MAX_LIMIT: usize = 1000;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/_caduceus/admin/v1/users", get(list_users)).route(
        "/_caduceus/admin/v1/users/{userId}/verification",
        get(get_verification).put(put_verification).delete(delete_verification),
    )
}

/// Lists accounts oldest first, `limit` at a time, after the `from` cursor.
pub async fn list_users(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    authorize(&services, &headers)?;
    let mut limit = DEFAULT_LIMIT;
    let mut after = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => {
                limit =
                    value.parse().ok().filter(|limit| (1..=MAX_LIMIT).contains(limit)).ok_or_else(
                        || {
                            Error::invalid_param(format!(
                                "Invalid limit {value:?}; use a number from 1 to {MAX_LIMIT}"
                            ))
                        },
                    )?;
            }
            "from" => after = Some(decode_cursor(&value)?),
            _ => {}
        }
    }

    let (page, more) = services.accounts.users_created_after(after.as_ref(), limit)?;
    let mut users = Vec::with_capacity(page.len());
    for (user_id, record) in &page {
        let mut user = json!({
            "user_id": user_id,
            "created_ts": record.created_ts,
            "deactivated": record.deactivated,
            "level": services.directory.level(user_id)?.as_str(),
            "emails": services.threepids.emails(user_id)?,
        });
        let displayname = services.profiles.get_field(user_id, profiles::DISPLAYNAME)?;
        if let Some(Value::String(displayname)) = displayname {
            user["displayname"] = json!(displayname);
        }
        if let Some(appservice) = services.appservices.owner_of(user_id) {
            user["appservice"] = json!(appservice);
        }
        users.push(user);
    }
    let mut body = json!({ "users": users });
    if more {
        if let Some((user_id, record)) = page.last() {
            body["next_from"] = json!(encode_cursor(record.created_ts, user_id));
        }
    }
    Ok(Json(body))
}

pub async fn get_verification(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    authorize(&services, &headers)?;
    let user_id = existing_user(&services, &user_id)?;
    let record = services.directory.record(&user_id)?;
    Ok(Json(verification_body(&user_id, record.as_ref())))
}

/// The body of `PUT /users/{userId}/verification`.
#[derive(Debug, Deserialize)]
struct PutBody {
    level: String,
    evidence: EvidenceBody,
    #[serde(default)]
    professions: Vec<String>,
    #[serde(default)]
    specialties: Vec<String>,
    #[serde(default)]
    organisations: Vec<String>,
    #[serde(default)]
    areas: Vec<Area>,
}

#[derive(Debug, Deserialize)]
struct EvidenceBody {
    source: String,
    register: Option<String>,
    registration_number: Option<String>,
    verified_at: Option<u64>,
    next_check: Option<u64>,
    note: Option<String>,
}

pub async fn put_verification(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Json<Value>> {
    let actor = authorize(&services, &headers)?;
    let user_id = existing_user(&services, &user_id)?;
    let Some(body) = body else {
        return Err(Error::bad_json("The request body must contain the new level and evidence"));
    };
    // Checked before the whole body, which for `pending` would fail on the missing evidence.
    if body.get("level").and_then(Value::as_str) == Some("pending") {
        return Err(Error::invalid_param(
            "Level pending is set by revoking: send DELETE to this path instead",
        ));
    }
    let body: PutBody = serde_json::from_value(body)
        .map_err(|error| Error::bad_json(format!("The request body is invalid: {error}")))?;
    let level = match VerificationLevel::parse(&body.level) {
        Some(level @ (VerificationLevel::Identity | VerificationLevel::Medical)) => level,
        _ => {
            return Err(Error::invalid_param(format!(
                "Invalid level {:?}; use identity or medical, or DELETE to revoke",
                body.level
            )))
        }
    };
    let Some(source) = EvidenceSource::parse(&body.evidence.source) else {
        return Err(Error::invalid_param(format!(
            "Invalid evidence.source {:?}; use register, roster, email_domain or officer",
            body.evidence.source
        )));
    };
    let evidence = VerificationEvidence {
        source,
        register: body.evidence.register,
        registration_number: body.evidence.registration_number,
        verified_at: body.evidence.verified_at.unwrap_or_else(now_ms),
        next_check: body.evidence.next_check,
        note: body.evidence.note,
    };
    let update = VerificationUpdate {
        level: Some(level),
        evidence: Some(evidence),
        professions: body.professions,
        specialties: body.specialties,
        organisations: body.organisations,
        areas: body.areas,
        listed: None,
    };
    let record =
        verification::set_verification(&services, &actor.audit_name(), &user_id, update, None)
            .await?;
    Ok(Json(verification_body(&user_id, Some(&record))))
}

/// Revokes a user's verification: back to `pending`, with immediate effect.
pub async fn delete_verification(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Json<Value>> {
    let actor = authorize(&services, &headers)?;
    let user_id = existing_user(&services, &user_id)?;
    let reason = match body.as_ref().map(|body| (body.as_object(), body.get("reason"))) {
        None | Some((Some(_), None)) => None,
        Some((Some(_), Some(Value::String(reason)))) => Some(reason.as_str()),
        Some((Some(_), Some(_))) => return Err(Error::bad_json("\"reason\" must be a string")),
        Some((None, _)) => return Err(Error::bad_json("The request body must be a JSON object")),
    };
    let update =
        VerificationUpdate { level: Some(VerificationLevel::Pending), ..Default::default() };
    let record =
        verification::set_verification(&services, &actor.audit_name(), &user_id, update, reason)
            .await?;
    Ok(Json(verification_body(&user_id, Some(&record))))
}

/// Parses the path's user ID; unknown users and users of other servers are `M_NOT_FOUND`.
fn existing_user(services: &Services, user_id: &str) -> Result<OwnedUserId> {
    let user_id = UserId::parse(user_id)
        .map_err(|_| Error::invalid_param(format!("{user_id:?} is not a valid user ID")))?;
    if user_id.server_name() != services.server_name
        || services.accounts.get_user(&user_id)?.is_none()
    {
        return Err(Error::not_found(format!("The user {user_id} does not exist on this server")));
    }
    Ok(user_id)
}

fn verification_body(user_id: &UserId, record: Option<&DirectoryProfileRecord>) -> Value {
    let Some(record) = record else {
        return json!({
            "user_id": user_id,
            "level": VerificationLevel::Pending.as_str(),
            "evidence": null,
            "professions": [],
            "specialties": [],
            "organisations": [],
            "areas": [],
            "listed": false,
        });
    };
    json!({
        "user_id": user_id,
        "level": record.level.as_str(),
        "evidence": record.evidence,
        "professions": record.professions,
        "specialties": record.specialties,
        "organisations": record.organisations,
        "areas": record.areas,
        "listed": record.listed && record.level != VerificationLevel::Pending,
    })
}

/// Encodes the position after an account as an opaque cursor.
fn encode_cursor(created_ts: u64, user_id: &UserId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_ts}:{user_id}"))
}

fn decode_cursor(cursor: &str) -> Result<(u64, String)> {
    let invalid = || Error::invalid_param("The from cursor is invalid; use a next_from value");
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (created_ts, user_id) = text.split_once(':').ok_or_else(invalid)?;
    Ok((created_ts.parse().map_err(|_| invalid())?, user_id.to_owned()))
}
