//! Server-side key backup: versions of a user's backup, each holding encrypted room keys by
//! room and session, so a clinician who changes phone keeps their history.
//!
//! The keys arrive encrypted for the user's backup key. The server reads only the metadata it
//! needs to pick the better of two copies of a session key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ruma::api::client::backup::{BackupAlgorithm, KeyBackupData};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::keys::signed_json::parse_object;
use super::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{BackupVersionRecord, JsonObject, BACKUP_KEYS, BACKUP_VERSIONS};
use crate::storage::Db;

/// Session key data by room ID and session ID.
pub type RoomKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>>;

/// A backup version as `GET /room_keys/version` describes it.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    pub version: String,
    /// The `algorithm` and `auth_data` fields.
    pub algorithm: JsonObject,
    pub count: u64,
    pub etag: String,
}

/// The state of a version's keys after a change, as key upload and deletion return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysState {
    pub etag: String,
    pub count: u64,
}

/// The keys of a version that a request reads or deletes.
#[derive(Debug, Clone, Copy)]
pub enum KeyScope<'a> {
    All,
    Room(&'a RoomId),
    Session(&'a RoomId, &'a str),
}

pub struct KeyBackup {
    db: Arc<Db>,
    /// Serialises changes, because each one reads and rewrites a version's count and etag.
    lock: Mutex<()>,
}

impl KeyBackup {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, lock: Mutex::new(()) }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every version of a user, deleted ones included, by version number.
    fn versions(&self, user_id: &UserId) -> Result<BTreeMap<u64, BackupVersionRecord>> {
        let records = self.db.scan_prefix(&BACKUP_VERSIONS, &prefix(&[user_id.as_str()]))?;
        Ok(records
            .into_iter()
            .filter_map(|((_, version), record)| {
                version.parse::<u64>().ok().map(|number| (number, record))
            })
            .collect())
    }

    /// The current version: the newest one not deleted.
    fn current(&self, user_id: &UserId) -> Result<Option<(u64, BackupVersionRecord)>> {
        Ok(self.versions(user_id)?.into_iter().rev().find(|(_, record)| !record.deleted))
    }

    /// A version that exists and is not deleted, or `M_NOT_FOUND`.
    fn existing(&self, user_id: &UserId, version: &str) -> Result<BackupVersionRecord> {
        self.db
            .get(&BACKUP_VERSIONS, &(user_id.to_string(), version.to_owned()))?
            .filter(|record| !record.deleted)
            .ok_or_else(|| unknown_version(version))
    }

    /// Creates a backup version, which becomes the current one, and returns its version.
    pub fn create_version(
        &self,
        user_id: &UserId,
        algorithm: &Raw<BackupAlgorithm>,
    ) -> Result<String> {
        let algorithm = check_algorithm(algorithm)?;
        let _guard = self.lock();
        // Deleted versions count too, so a number is never given out twice.
        let version =
            self.versions(user_id)?.keys().next_back().map_or(1, |newest| newest + 1).to_string();
        let record = BackupVersionRecord {
            algorithm,
            count: 0,
            etag: 0,
            created_ts: now_ms(),
            deleted: false,
        };
        self.db.put(&BACKUP_VERSIONS, &(user_id.to_string(), version.clone()), &record)?;
        tracing::info!(user_id = %user_id, version, "key backup version created");
        Ok(version)
    }

    /// The current version, or `M_NOT_FOUND` if the user has no backup.
    pub fn latest_version(&self, user_id: &UserId) -> Result<BackupInfo> {
        let (version, record) =
            self.current(user_id)?.ok_or_else(|| Error::not_found("No current backup version"))?;
        Ok(info(version.to_string(), record))
    }

    /// One version, or `M_NOT_FOUND` if it does not exist or was deleted.
    pub fn version_info(&self, user_id: &UserId, version: &str) -> Result<BackupInfo> {
        Ok(info(version.to_owned(), self.existing(user_id, version)?))
    }

    /// Replaces a version's `auth_data`. The algorithm cannot change, and a `version` in the
    /// body must name the version in the path.
    pub fn update_version(
        &self,
        user_id: &UserId,
        version: &str,
        algorithm: &Raw<BackupAlgorithm>,
    ) -> Result<()> {
        let body = parse_object(algorithm.json(), "The request body")?;
        if let Some(body_version) = body.get("version") {
            if body_version.as_str() != Some(version) {
                return Err(Error::invalid_param(format!(
                    "The version in the body ({body_version}) does not match the version in the path ({version})"
                )));
            }
        }
        let algorithm = check_algorithm(algorithm)?;

        let _guard = self.lock();
        let mut record = self.existing(user_id, version)?;
        if record.algorithm.get("algorithm") != algorithm.get("algorithm") {
            return Err(Error::invalid_param(
                "The algorithm of a backup version cannot change; create a new version instead",
            ));
        }
        record.algorithm = algorithm;
        self.db.put(&BACKUP_VERSIONS, &(user_id.to_string(), version.to_owned()), &record)?;
        Ok(())
    }

    /// Deletes a version and its keys. Deleting a version again succeeds; a version that never
    /// existed is `M_NOT_FOUND`.
    pub fn delete_version(&self, user_id: &UserId, version: &str) -> Result<()> {
        let _guard = self.lock();
        let key = (user_id.to_string(), version.to_owned());
        let mut record =
            self.db.get(&BACKUP_VERSIONS, &key)?.ok_or_else(|| unknown_version(version))?;
        if record.deleted {
            return Ok(());
        }
        record.deleted = true;
        record.count = 0;
        let mut batch = self.db.batch();
        batch.delete_prefix(&BACKUP_KEYS, &prefix(&[user_id.as_str(), version]))?;
        batch.put(&BACKUP_VERSIONS, &key, &record);
        self.db.commit(batch)?;
        tracing::info!(user_id = %user_id, version, "key backup version deleted");
        Ok(())
    }

    /// Deletes every backup version of a user with its keys, leaving no trace of them.
    pub fn erase_user(&self, user_id: &UserId) -> Result<()> {
        let _guard = self.lock();
        let mut batch = self.db.batch();
        batch.delete_prefix(&BACKUP_KEYS, &prefix(&[user_id.as_str()]))?;
        batch.delete_prefix(&BACKUP_VERSIONS, &prefix(&[user_id.as_str()]))?;
        self.db.commit(batch)?;
        tracing::info!(user_id = %user_id, "key backups erased");
        Ok(())
    }

    /// Stores session keys in the current version. A key for a session already stored
    /// replaces the stored one only if it is better, by [`is_better`].
    ///
    /// An unknown or deleted version is `M_NOT_FOUND`; an older version is
    /// `M_WRONG_ROOM_KEYS_VERSION` with the current version.
    pub fn put_keys(&self, user_id: &UserId, version: &str, keys: &RoomKeys) -> Result<KeysState> {
        let mut checked = Vec::new();
        for (room_id, sessions) in keys {
            for (session_id, raw) in sessions {
                let object = parse_object(raw.json(), &format!("The key of session {session_id}"))?;
                let data: KeyBackupData = raw.deserialize().map_err(|error| {
                    Error::bad_json(format!(
                        "The key of session {session_id} is malformed: {error}"
                    ))
                })?;
                checked.push((room_id, session_id, object, data));
            }
        }

        let _guard = self.lock();
        let mut record = self.existing(user_id, version)?;
        let current = self.current(user_id)?.map_or(0, |(current, _)| current);
        if version != current.to_string() {
            return Err(Error::new(
                ErrorCode::WrongRoomKeysVersion { current_version: current.to_string() },
                format!("Keys can only be added to the current backup version, {current}"),
            ));
        }

        let mut batch = self.db.batch();
        let mut changed = false;
        for (room_id, session_id, object, data) in checked {
            let key =
                (user_id.to_string(), version.to_owned(), room_id.to_string(), session_id.clone());
            match self.db.get(&BACKUP_KEYS, &key)? {
                Some(stored) => {
                    let stored: KeyBackupData = serde_json::from_value(Value::Object(stored))
                        .map_err(|error| {
                            anyhow::anyhow!(
                                "stored backup key of session {session_id} is invalid: {error}"
                            )
                        })?;
                    if !is_better(&data, &stored) {
                        continue;
                    }
                }
                None => record.count += 1,
            }
            batch.put(&BACKUP_KEYS, &key, &object);
            changed = true;
        }
        if changed {
            record.etag += 1;
            batch.put(&BACKUP_VERSIONS, &(user_id.to_string(), version.to_owned()), &record);
            self.db.commit(batch)?;
        }
        Ok(KeysState { etag: record.etag.to_string(), count: record.count })
    }

    /// Reads keys of an existing version. A session that is not stored is `M_NOT_FOUND`; a room
    /// without keys is an empty map.
    pub fn get_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<RoomKeys> {
        self.existing(user_id, version)?;
        let mut keys = RoomKeys::new();
        if let KeyScope::Session(room_id, session_id) = scope {
            let key = (
                user_id.to_string(),
                version.to_owned(),
                room_id.to_string(),
                session_id.to_owned(),
            );
            let object = self.db.get(&BACKUP_KEYS, &key)?.ok_or_else(|| {
                Error::not_found("No key for that session is stored in this backup")
            })?;
            keys.entry(room_id.to_owned())
                .or_default()
                .insert(session_id.to_owned(), to_raw(&object)?);
            return Ok(keys);
        }

        for ((_, _, room_id, session_id), object) in
            self.db.scan_prefix(&BACKUP_KEYS, &scope_prefix(user_id, version, scope))?
        {
            let room_id = OwnedRoomId::try_from(room_id.as_str()).map_err(|error| {
                anyhow::anyhow!("stored room ID {room_id:?} is invalid: {error}")
            })?;
            keys.entry(room_id).or_default().insert(session_id, to_raw(&object)?);
        }
        Ok(keys)
    }

    /// Deletes keys of an existing version. Deleting keys that are not stored succeeds.
    pub fn delete_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<KeysState> {
        let _guard = self.lock();
        let mut record = self.existing(user_id, version)?;
        let stored: Vec<_> = self
            .db
            .scan_prefix(&BACKUP_KEYS, &scope_prefix(user_id, version, scope))?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        if !stored.is_empty() {
            let mut batch = self.db.batch();
            for key in &stored {
                batch.delete(&BACKUP_KEYS, key);
            }
            record.count = record.count.saturating_sub(stored.len() as u64);
            record.etag += 1;
            batch.put(&BACKUP_VERSIONS, &(user_id.to_string(), version.to_owned()), &record);
            self.db.commit(batch)?;
        }
        Ok(KeysState { etag: record.etag.to_string(), count: record.count })
    }
}

/// Decides whether an uploaded session key replaces the stored one, by the spec's rule. A
/// verified key beats an unverified one. Next, the key that decrypts from an earlier message
/// (lower `first_message_index`) wins, and then the key forwarded fewer times. On a full tie
/// the stored key stays.
pub fn is_better(uploaded: &KeyBackupData, stored: &KeyBackupData) -> bool {
    if uploaded.is_verified != stored.is_verified {
        return uploaded.is_verified;
    }
    if uploaded.first_message_index != stored.first_message_index {
        return uploaded.first_message_index < stored.first_message_index;
    }
    uploaded.forwarded_count < stored.forwarded_count
}

/// Checks a backup algorithm and keeps only its `algorithm` and `auth_data` fields, dropping
/// fields such as `version` or `count` that clients copy from a previous response.
fn check_algorithm(raw: &Raw<BackupAlgorithm>) -> Result<JsonObject> {
    let object = parse_object(raw.json(), "The backup algorithm")?;
    raw.deserialize()
        .map_err(|error| Error::bad_json(format!("The backup algorithm is malformed: {error}")))?;
    if !object.get("auth_data").is_some_and(Value::is_object) {
        return Err(Error::bad_json("auth_data must be a JSON object"));
    }
    Ok(object
        .into_iter()
        .filter(|(field, _)| field == "algorithm" || field == "auth_data")
        .collect())
}

fn scope_prefix(user_id: &UserId, version: &str, scope: KeyScope<'_>) -> Vec<u8> {
    match scope {
        KeyScope::All => prefix(&[user_id.as_str(), version]),
        KeyScope::Room(room_id) => prefix(&[user_id.as_str(), version, room_id.as_str()]),
        KeyScope::Session(room_id, session_id) => {
            prefix(&[user_id.as_str(), version, room_id.as_str(), session_id])
        }
    }
}

fn info(version: String, record: BackupVersionRecord) -> BackupInfo {
    BackupInfo {
        version,
        algorithm: record.algorithm,
        count: record.count,
        etag: record.etag.to_string(),
    }
}

fn unknown_version(version: &str) -> Error {
    Error::not_found(format!("Unknown backup version {version}"))
}

fn to_raw<T>(object: &JsonObject) -> Result<Raw<T>> {
    let raw = serde_json::value::to_raw_value(object)
        .map_err(|error| anyhow::anyhow!("stored backup record does not serialise: {error}"))?;
    Ok(Raw::from_json(raw))
}

#[cfg(test)]
mod tests;
