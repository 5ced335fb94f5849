//! /_matrix/client/v3/room_keys/*: server-side key backup, its versions and the encrypted room
//! keys stored in them.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::backup::{
    add_backup_keys::v3 as add_keys_v3, add_backup_keys_for_room::v3 as add_room_keys_v3,
    add_backup_keys_for_session::v3 as add_session_key_v3,
    create_backup_version::v3 as create_version_v3, delete_backup_keys::v3 as delete_keys_v3,
    delete_backup_keys_for_room::v3 as delete_room_keys_v3,
    delete_backup_keys_for_session::v3 as delete_session_key_v3,
    delete_backup_version::v3 as delete_version_v3, get_backup_info::v3 as get_version_v3,
    get_backup_keys::v3 as get_keys_v3, get_backup_keys_for_room::v3 as get_room_keys_v3,
    get_backup_keys_for_session::v3 as get_session_key_v3,
    get_latest_backup_info::v3 as get_latest_version_v3,
    update_backup_version::v3 as update_version_v3, RoomKeyBackup,
};
use ruma::serde::Raw;
use ruma::UInt;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::key_backup::{BackupInfo, KeyScope, KeysState, RoomKeys};
use crate::service::Services;

/// The algorithm of a version, its count and etag, in the shape ruma's responses take.
fn info_parts(info: BackupInfo) -> Result<(Raw<ruma::api::client::backup::BackupAlgorithm>, UInt)> {
    let algorithm = serde_json::value::to_raw_value(&info.algorithm)
        .map_err(|error| anyhow::anyhow!("backup algorithm does not serialise: {error}"))?;
    Ok((Raw::from_json(algorithm), count(info.count)))
}

fn count(count: u64) -> UInt {
    UInt::new_saturating(count)
}

pub async fn create_version(
    State(services): State<Arc<Services>>,
    request: Ruma<create_version_v3::Request>,
) -> Result<RumaResponse<create_version_v3::Response>> {
    let sender = request.sender()?;
    let version = services.key_backup.create_version(&sender.user_id, &request.body.algorithm)?;
    Ok(create_version_v3::Response::new(version).into())
}

pub async fn get_latest_version(
    State(services): State<Arc<Services>>,
    request: Ruma<get_latest_version_v3::Request>,
) -> Result<RumaResponse<get_latest_version_v3::Response>> {
    let sender = request.sender()?;
    let info = services.key_backup.latest_version(&sender.user_id)?;
    let (etag, version) = (info.etag.clone(), info.version.clone());
    let (algorithm, count) = info_parts(info)?;
    Ok(get_latest_version_v3::Response::new(algorithm, count, etag, version).into())
}

pub async fn get_version(
    State(services): State<Arc<Services>>,
    request: Ruma<get_version_v3::Request>,
) -> Result<RumaResponse<get_version_v3::Response>> {
    let sender = request.sender()?;
    let info = services.key_backup.version_info(&sender.user_id, &request.body.version)?;
    let (etag, version) = (info.etag.clone(), info.version.clone());
    let (algorithm, count) = info_parts(info)?;
    Ok(get_version_v3::Response::new(algorithm, count, etag, version).into())
}

pub async fn update_version(
    State(services): State<Arc<Services>>,
    request: Ruma<update_version_v3::Request>,
) -> Result<RumaResponse<update_version_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    services.key_backup.update_version(&sender.user_id, &body.version, &body.algorithm)?;
    Ok(update_version_v3::Response::new().into())
}

pub async fn delete_version(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_version_v3::Request>,
) -> Result<RumaResponse<delete_version_v3::Response>> {
    let sender = request.sender()?;
    services.key_backup.delete_version(&sender.user_id, &request.body.version)?;
    Ok(delete_version_v3::Response::new().into())
}

pub async fn add_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<add_keys_v3::Request>,
) -> Result<RumaResponse<add_keys_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let keys: RoomKeys = body
        .rooms
        .iter()
        .map(|(room_id, backup)| (room_id.clone(), backup.sessions.clone()))
        .collect();
    let state = services.key_backup.put_keys(&sender.user_id, &body.version, &keys)?;
    Ok(add_keys_v3::Response::new(state.etag, count(state.count)).into())
}

pub async fn add_room_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<add_room_keys_v3::Request>,
) -> Result<RumaResponse<add_room_keys_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let keys = RoomKeys::from([(body.room_id.clone(), body.sessions.clone())]);
    let state = services.key_backup.put_keys(&sender.user_id, &body.version, &keys)?;
    Ok(add_room_keys_v3::Response::new(state.etag, count(state.count)).into())
}

pub async fn add_session_key(
    State(services): State<Arc<Services>>,
    request: Ruma<add_session_key_v3::Request>,
) -> Result<RumaResponse<add_session_key_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let sessions = [(body.session_id.clone(), body.session_data.clone())].into();
    let keys = RoomKeys::from([(body.room_id.clone(), sessions)]);
    let state = services.key_backup.put_keys(&sender.user_id, &body.version, &keys)?;
    Ok(add_session_key_v3::Response::new(state.etag, count(state.count)).into())
}

pub async fn get_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<get_keys_v3::Request>,
) -> Result<RumaResponse<get_keys_v3::Response>> {
    let sender = request.sender()?;
    let keys =
        services.key_backup.get_keys(&sender.user_id, &request.body.version, KeyScope::All)?;
    let rooms = keys
        .into_iter()
        .map(|(room_id, sessions)| (room_id, RoomKeyBackup::new(sessions)))
        .collect();
    Ok(get_keys_v3::Response::new(rooms).into())
}

pub async fn get_room_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<get_room_keys_v3::Request>,
) -> Result<RumaResponse<get_room_keys_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let mut keys = services.key_backup.get_keys(
        &sender.user_id,
        &body.version,
        KeyScope::Room(&body.room_id),
    )?;
    let sessions = keys.remove(&body.room_id).unwrap_or_default();
    Ok(get_room_keys_v3::Response::new(sessions).into())
}

pub async fn get_session_key(
    State(services): State<Arc<Services>>,
    request: Ruma<get_session_key_v3::Request>,
) -> Result<RumaResponse<get_session_key_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let scope = KeyScope::Session(&body.room_id, &body.session_id);
    let mut keys = services.key_backup.get_keys(&sender.user_id, &body.version, scope)?;
    let key_data = keys
        .remove(&body.room_id)
        .and_then(|mut sessions| sessions.remove(&body.session_id))
        .ok_or_else(|| Error::not_found("No key for that session is stored in this backup"))?;
    Ok(get_session_key_v3::Response::new(key_data).into())
}

pub async fn delete_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_keys_v3::Request>,
) -> Result<RumaResponse<delete_keys_v3::Response>> {
    let sender = request.sender()?;
    let state =
        services.key_backup.delete_keys(&sender.user_id, &request.body.version, KeyScope::All)?;
    Ok(delete_keys_v3::Response::new(state.etag, count(state.count)).into())
}

pub async fn delete_room_keys(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_room_keys_v3::Request>,
) -> Result<RumaResponse<delete_room_keys_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let KeysState { etag, count: total } = services.key_backup.delete_keys(
        &sender.user_id,
        &body.version,
        KeyScope::Room(&body.room_id),
    )?;
    Ok(delete_room_keys_v3::Response::new(etag, count(total)).into())
}

pub async fn delete_session_key(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_session_key_v3::Request>,
) -> Result<RumaResponse<delete_session_key_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let scope = KeyScope::Session(&body.room_id, &body.session_id);
    let KeysState { etag, count: total } =
        services.key_backup.delete_keys(&sender.user_id, &body.version, scope)?;
    Ok(delete_session_key_v3::Response::new(etag, count(total)).into())
}
