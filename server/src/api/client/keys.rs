//! /_matrix/client/v3/keys/*: publish, look up and claim end-to-end encryption keys, list
//! device-list changes, and publish cross-signing keys and signatures.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::keys::{
    claim_keys::v3 as claim_keys_v3, get_key_changes::v3 as get_key_changes_v3,
    get_keys::v3 as get_keys_v3, upload_keys::v3 as upload_keys_v3,
    upload_signatures::v3 as upload_signatures_v3,
    upload_signing_keys::v3 as upload_signing_keys_v3,
};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::Result;
use crate::service::gating;
use crate::service::keys::SigningKeysUpload;
use crate::service::sync::parse_token;
use crate::service::uia::confirm_password;
use crate::service::Services;

pub async fn upload_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<upload_keys_v3::Request>,
) -> Result<RumaResponse<upload_keys_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let counts = services.keys.upload(
        &sender.user_id,
        &sender.device_id,
        body.device_keys.as_ref(),
        &body.one_time_keys,
        &body.fallback_keys,
    )?;
    Ok(upload_keys_v3::Response::new(counts).into())
}

pub async fn get_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<get_keys_v3::Request>,
) -> Result<RumaResponse<get_keys_v3::Response>> {
    let sender = request.sender()?;
    let mut allowed = request.body.device_keys.clone();
    let mut hidden = Vec::new();
    for user_id in request.body.device_keys.keys() {
        if !gating::can_look_up(&services, &sender.user_id, user_id)? {
            allowed.remove(user_id);
            hidden.push(user_id.clone());
        }
    }
    let result = services.keys.query(&services.accounts, &sender.user_id, &allowed)?;
    let mut response = get_keys_v3::Response::new();
    response.device_keys = result.device_keys;
    // Returned like a user without devices, so the response does not reveal whether they exist.
    for user_id in hidden {
        response.device_keys.insert(user_id, Default::default());
    }
    response.master_keys = result.master_keys;
    response.self_signing_keys = result.self_signing_keys;
    response.user_signing_keys = result.user_signing_keys;
    response.failures = result.failures;
    Ok(response.into())
}

pub async fn claim_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<claim_keys_v3::Request>,
) -> Result<RumaResponse<claim_keys_v3::Response>> {
    let sender = request.sender()?;
    let mut allowed = request.body.one_time_keys.clone();
    for user_id in request.body.one_time_keys.keys() {
        if !gating::can_look_up(&services, &sender.user_id, user_id)? {
            allowed.remove(user_id);
        }
    }
    let claimed = services.keys.claim(&allowed)?;
    let mut response = claim_keys_v3::Response::new(claimed.one_time_keys);
    response.failures = claimed.failures;
    Ok(response.into())
}

pub async fn get_key_changes(
    State(services): State<Arc<Services>>,
    request: Ruma<get_key_changes_v3::Request>,
) -> Result<RumaResponse<get_key_changes_v3::Response>> {
    let sender = request.sender()?;
    let from = parse_token(&request.body.from)?;
    let to = parse_token(&request.body.to)?;
    let changes = services.keys.device_list_changes(&sender.user_id, from, to)?;
    Ok(get_key_changes_v3::Response::new(changes.changed, changes.left).into())
}

pub async fn upload_signing_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<upload_signing_keys_v3::Request>,
) -> Result<RumaResponse<upload_signing_keys_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let upload = SigningKeysUpload {
        master_key: body.master_key.as_ref(),
        self_signing_key: body.self_signing_key.as_ref(),
        user_signing_key: body.user_signing_key.as_ref(),
    };
    if services.keys.signing_keys_need_auth(&sender.user_id, &upload)? {
        confirm_password(&services, &sender.user_id, body.auth.as_ref(), "upload_signing_keys")
            .await?;
    }
    services.keys.upload_signing_keys(&sender.user_id, &upload)?;
    Ok(upload_signing_keys_v3::Response::new().into())
}

pub async fn upload_signatures(
    State(services): State<Arc<Services>>,
    request: Ruma<upload_signatures_v3::Request>,
) -> Result<RumaResponse<upload_signatures_v3::Response>> {
    let sender = request.sender()?;
    let failures = services.keys.upload_signatures(&sender.user_id, &request.body.signed_keys)?;

    let mut response = upload_signatures_v3::Response::new();
    for (user_id, by_key) in failures {
        let mut converted = BTreeMap::new();
        for (key_id, failure) in by_key {
            // ruma's `Failure` has private fields, so it is built from its JSON form.
            let failure = serde_json::from_value(serde_json::json!({
                "errcode": failure.errcode.as_str(),
                "error": failure.message,
            }))
            .map_err(|error| anyhow::anyhow!("signature failure does not convert: {error}"))?;
            converted.insert(key_id, failure);
        }
        response.failures.insert(user_id, converted);
    }
    Ok(response.into())
}
