//! End-to-end encryption keys: device identity keys, one-time and fallback keys,
//! cross-signing keys and their signatures, and the log of device-list changes that `/sync` and
//! `/keys/changes` report.
//!
//! Keys are stored as the JSON objects clients uploaded, never re-serialised from typed structs,
//! so that the signatures over them keep verifying on other clients.

mod cross_signing;
mod one_time;
mod shared_rooms;
pub mod signed_json;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ruma::encryption::{CrossSigningKey, DeviceKeys};
use ruma::serde::Raw;
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde_json::Value;

pub use cross_signing::{SignatureFailure, SigningKeysUpload};
pub use one_time::{ClaimRequest, Claimed};

use self::signed_json::{parse_object, verify, SignatureError};
use super::accounts::{Accounts, DeviceObserver};
use super::stream::{Position, Stream};
use crate::error::{Error, ErrorCode, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{
    JsonObject, CROSS_SIGNING_KEYS, DEVICE_KEYS, DEVICE_LIST_CHANGES, FALLBACK_KEYS, ONE_TIME_KEYS,
};
use crate::storage::{Batch, Db, KeyCodec};

/// Room membership as far as key distribution needs it. The rooms service implements this and
/// hands it to [`Keys::set_shared_rooms`].
pub trait SharedRooms: Send + Sync {
    /// Users who share at least one joined room with `user_id`, not counting the user.
    fn users_sharing_rooms(&self, user_id: &UserId) -> Result<BTreeSet<OwnedUserId>>;

    /// Users who started (`joined`) or stopped (`left`) sharing every room with `user_id` in
    /// the stream positions `since + 1 ..= until`.
    fn shared_room_changes(
        &self,
        user_id: &UserId,
        since: u64,
        until: u64,
    ) -> Result<SharedRoomChanges>;
}

/// Users whose shared rooms with someone began or ended between two stream positions.
#[derive(Debug, Default, Clone)]
pub struct SharedRoomChanges {
    pub joined: BTreeSet<OwnedUserId>,
    pub left: BTreeSet<OwnedUserId>,
}

/// Users whose device lists a client should refresh (`changed`) or may forget (`left`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceListChanges {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// Keys of the users requested in `/keys/query`.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>,
    pub master_keys: BTreeMap<OwnedUserId, Raw<CrossSigningKey>>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Raw<CrossSigningKey>>,
    pub user_signing_keys: BTreeMap<OwnedUserId, Raw<CrossSigningKey>>,
    /// Servers that could not be asked, by server name.
    pub failures: BTreeMap<String, Value>,
}

/// How many locks the one-time keys of all devices are spread over. Claims and uploads for
/// devices that share a lock wait for each other, which only costs time.
const DEVICE_LOCKS: usize = 64;

pub struct Keys {
    db: Arc<Db>,
    stream: Arc<Stream>,
    server_name: OwnedServerName,
    /// Serialises read-merge-write of device keys and cross-signing keys with their signatures.
    identity_lock: Mutex<()>,
    /// Serialises the one-time and fallback keys of a device between uploads and claims, so a
    /// one-time key is never handed out twice. Indexed by a hash of (user ID, device ID).
    device_locks: Vec<Mutex<()>>,
    shared_rooms: OnceLock<Arc<dyn SharedRooms>>,
}

impl Keys {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>, server_name: OwnedServerName) -> Self {
        Self {
            db,
            stream,
            server_name,
            identity_lock: Mutex::new(()),
            device_locks: (0..DEVICE_LOCKS).map(|_| Mutex::new(())).collect(),
            shared_rooms: OnceLock::new(),
        }
    }

    /// Plugs in room membership. Until this is called, every device-list change is reported to
    /// every user and no user is reported as `left`.
    pub fn set_shared_rooms(&self, shared_rooms: Arc<dyn SharedRooms>) {
        if self.shared_rooms.set(shared_rooms).is_err() {
            tracing::warn!("room membership for key distribution was set twice; keeping the first");
        }
    }

    fn lock_identity(&self) -> MutexGuard<'_, ()> {
        self.identity_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn device_lock_index(user_id: &str, device_id: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (user_id, device_id).hash(&mut hasher);
        (hasher.finish() % DEVICE_LOCKS as u64) as usize
    }

    /// Locks the one-time keys of several devices. Locks are taken in index order, so two
    /// callers never wait for each other in a cycle.
    fn lock_devices<'a>(
        &self,
        devices: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let indexes: BTreeSet<usize> = devices
            .into_iter()
            .map(|(user_id, device_id)| Self::device_lock_index(user_id, device_id))
            .collect();
        indexes
            .into_iter()
            .map(|index| {
                self.device_locks[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
            })
            .collect()
    }

    fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    /// Adds a device-list change of `user_id` to `batch`. Drop the returned position after the
    /// commit, then call [`Keys::notify_change`].
    fn record_change<'s>(
        &'s self,
        batch: &mut Batch<'_>,
        user_id: &UserId,
    ) -> Result<Position<'s>> {
        let position = self.stream.next()?;
        batch.put(&DEVICE_LIST_CHANGES, &position.get(), &user_id.to_string());
        Ok(position)
    }

    /// Wakes the `/sync` requests of `user_id` and of everyone who shares a room with them.
    fn notify_change(&self, user_id: &UserId) {
        let mut users = match self.shared_rooms.get() {
            Some(shared_rooms) => match shared_rooms.users_sharing_rooms(user_id) {
                Ok(users) => users,
                Err(error) => {
                    tracing::error!(error = ?error, user_id = %user_id, "cannot list users sharing rooms; their syncs wake on their next event");
                    BTreeSet::new()
                }
            },
            None => BTreeSet::new(),
        };
        users.insert(user_id.to_owned());
        self.stream.notify(users.iter().map(|user| user.as_ref()));
    }

    /// Commits `batch` with a device-list change of `user_id` and wakes the syncs that care.
    fn commit_with_change(&self, mut batch: Batch<'_>, user_id: &UserId) -> Result<()> {
        let position = self.record_change(&mut batch, user_id)?;
        self.db.commit(batch)?;
        drop(position);
        self.notify_change(user_id);
        Ok(())
    }

    /// Publishes keys for the sender's device, as `/keys/upload` does, and returns the count of
    /// unclaimed one-time keys per algorithm.
    ///
    /// Everything is checked before anything is written, so a request with one bad key stores
    /// nothing.
    pub fn upload(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        device_keys: Option<&Raw<DeviceKeys>>,
        one_time_keys: &BTreeMap<ruma::OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>,
        fallback_keys: &BTreeMap<ruma::OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>,
    ) -> Result<BTreeMap<ruma::OneTimeKeyAlgorithm, ruma::UInt>> {
        let uploaded = match device_keys {
            Some(raw) => Some(check_device_keys(user_id, device_id, raw)?),
            None => None,
        };

        // Device keys change rarely, so one lock for all users costs little; it keeps a
        // concurrent signature upload from being lost in the merge below.
        let _identity = uploaded.is_some().then(|| self.lock_identity());
        let key = (user_id.to_string(), device_id.to_string());
        let stored = self.db.get(&DEVICE_KEYS, &key)?;
        let (device_keys_to_write, ed25519) = match (uploaded, stored) {
            (Some(uploaded), Some(stored)) => {
                let merged = merge_device_keys(&stored, uploaded)?;
                let ed25519 = device_ed25519(&merged, device_id);
                ((merged != stored).then_some(merged), ed25519)
            }
            (Some(uploaded), None) => {
                let ed25519 = device_ed25519(&uploaded, device_id);
                (Some(uploaded), ed25519)
            }
            (None, stored) => (None, stored.and_then(|stored| device_ed25519(&stored, device_id))),
        };

        let one_time = one_time::check_keys(user_id, device_id, one_time_keys, ed25519.as_deref())?;
        let fallback =
            one_time::check_fallback_keys(user_id, device_id, fallback_keys, ed25519.as_deref())?;

        let _device = self.lock_devices([(user_id.as_str(), device_id.as_str())]);
        let mut batch = self.db.batch();
        self.stage_one_time_keys(&mut batch, user_id, device_id, one_time)?;
        self.stage_fallback_keys(&mut batch, user_id, device_id, fallback)?;
        match device_keys_to_write {
            Some(device_keys) => {
                batch.put(&DEVICE_KEYS, &key, &device_keys);
                self.commit_with_change(batch, user_id)?;
                tracing::debug!(user_id = %user_id, device_id = %device_id, "device keys stored");
            }
            None => self.db.commit(batch)?,
        }
        self.one_time_key_counts(user_id, device_id)
    }

    /// Checks keys for a new device as [`Keys::upload`] would, without storing anything.
    pub fn check_new_device_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        device_keys: &Raw<DeviceKeys>,
        one_time_keys: &BTreeMap<ruma::OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>,
        fallback_keys: &BTreeMap<ruma::OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>,
    ) -> Result<()> {
        let device_keys = check_device_keys(user_id, device_id, device_keys)?;
        let ed25519 = device_ed25519(&device_keys, device_id);
        one_time::check_keys(user_id, device_id, one_time_keys, ed25519.as_deref())?;
        one_time::check_fallback_keys(user_id, device_id, fallback_keys, ed25519.as_deref())?;
        Ok(())
    }

    /// Looks up device and cross-signing keys, as `/keys/query` does. `requester` receives the
    /// signatures their own user-signing key made on other users' master keys, and their own
    /// user-signing key; other users' signatures of that kind stay private.
    pub fn query(
        &self,
        accounts: &Accounts,
        requester: &UserId,
        requested: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueryResult> {
        let mut result = QueryResult::default();
        for (user_id, device_ids) in requested {
            if !self.is_local(user_id) {
                result.failures.insert(
                    user_id.server_name().to_string(),
                    serde_json::json!({
                        "errcode": "M_UNKNOWN",
                        "error": "This server does not federate with other servers",
                    }),
                );
                continue;
            }

            let devices = self.query_device_keys(accounts, user_id, device_ids)?;
            result.device_keys.insert(user_id.clone(), devices);

            if let Some(master) = self.get_cross_signing_key(user_id, KeyUsageSlot::Master)? {
                let master = visible_signatures(master, user_id, requester);
                result.master_keys.insert(user_id.clone(), to_raw(&master)?);
            }
            if let Some(self_signing) =
                self.get_cross_signing_key(user_id, KeyUsageSlot::SelfSigning)?
            {
                result.self_signing_keys.insert(user_id.clone(), to_raw(&self_signing)?);
            }
            if user_id == requester {
                if let Some(user_signing) =
                    self.get_cross_signing_key(user_id, KeyUsageSlot::UserSigning)?
                {
                    result.user_signing_keys.insert(user_id.clone(), to_raw(&user_signing)?);
                }
            }
        }
        Ok(result)
    }

    /// Collects the device keys of `user_id`'s devices, all of them if `device_ids` is empty. Devices
    /// the accounts service no longer has are left out, and each key object carries the
    /// device's display name under `unsigned`.
    fn query_device_keys(
        &self,
        accounts: &Accounts,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>> {
        let stored: Vec<(String, JsonObject)> = if device_ids.is_empty() {
            self.db
                .scan_prefix(&DEVICE_KEYS, &prefix(&[user_id.as_str()]))?
                .into_iter()
                .map(|((_, device_id), keys)| (device_id, keys))
                .collect()
        } else {
            let mut found = Vec::new();
            for device_id in device_ids {
                let key = (user_id.to_string(), device_id.to_string());
                if let Some(keys) = self.db.get(&DEVICE_KEYS, &key)? {
                    found.push((device_id.to_string(), keys));
                }
            }
            found
        };

        let mut devices = BTreeMap::new();
        for (device_id, mut keys) in stored {
            let Some(device) = accounts.get_device(user_id, &device_id)? else { continue };
            if let Some(display_name) = device.record.display_name {
                keys.insert(
                    "unsigned".to_owned(),
                    serde_json::json!({ "device_display_name": display_name }),
                );
            }
            devices.insert(OwnedDeviceId::from(device_id), to_raw(&keys)?);
        }
        Ok(devices)
    }

    /// Users whose device lists changed in the stream positions `since + 1 ..= until`, as
    /// `/sync` reports under `device_lists` and `/keys/changes` returns.
    ///
    /// `changed` contains the user themself and users who share a room with them and changed
    /// devices or cross-signing keys, plus users who began to share a room with them. `left`
    /// contains users who no longer share any room with them.
    pub fn device_list_changes(
        &self,
        user_id: &UserId,
        since: u64,
        until: u64,
    ) -> Result<DeviceListChanges> {
        if until <= since {
            return Ok(DeviceListChanges::default());
        }
        let start = since.saturating_add(1).encode_key();
        let end = until.saturating_add(1).encode_key();
        let mut changed: BTreeSet<OwnedUserId> = BTreeSet::new();
        for (position, changed_user) in self.db.scan_between(&DEVICE_LIST_CHANGES, &start, &end)? {
            match UserId::parse(&changed_user) {
                Ok(changed_user) => {
                    changed.insert(changed_user);
                }
                Err(error) => {
                    tracing::error!(position, error = %error, "device-list change with an invalid user ID skipped");
                }
            }
        }

        let Some(shared_rooms) = self.shared_rooms.get() else {
            // TODO: without room membership every change is reported to everyone and no user is
            // reported as `left`; this ends when the rooms service calls `set_shared_rooms`.
            return Ok(DeviceListChanges {
                changed: changed.into_iter().collect(),
                left: Vec::new(),
            });
        };

        let sharing = shared_rooms.users_sharing_rooms(user_id)?;
        let membership = shared_rooms.shared_room_changes(user_id, since, until)?;
        let mut visible: BTreeSet<OwnedUserId> = changed
            .into_iter()
            .filter(|changed_user| changed_user == user_id || sharing.contains(changed_user))
            .collect();
        visible
            .extend(membership.joined.iter().filter(|joined| sharing.contains(*joined)).cloned());
        let left = membership
            .left
            .into_iter()
            .filter(|left_user| !sharing.contains(left_user) && left_user != user_id)
            .collect();
        Ok(DeviceListChanges { changed: visible.into_iter().collect(), left })
    }

    fn get_cross_signing_key(
        &self,
        user_id: &UserId,
        slot: KeyUsageSlot,
    ) -> Result<Option<JsonObject>> {
        Ok(self.db.get(&CROSS_SIGNING_KEYS, &(user_id.to_string(), slot.as_str().to_owned()))?)
    }
}

impl Keys {
    /// Deletes a user's cross-signing keys. Device keys go with the devices, through
    /// [`DeviceObserver::devices_deleted`].
    pub fn erase_cross_signing_keys(&self, user_id: &UserId) -> Result<()> {
        let _identity = self.lock_identity();
        let mut batch = self.db.batch();
        batch.delete_prefix(&CROSS_SIGNING_KEYS, &prefix(&[user_id.as_str()]))?;
        self.commit_with_change(batch, user_id)
    }
}

impl DeviceObserver for Keys {
    fn device_created(&self, user_id: &UserId, _device_id: &DeviceId) -> Result<()> {
        self.commit_with_change(self.db.batch(), user_id)
    }

    fn devices_deleted(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let _identity = self.lock_identity();
        let _devices = self.lock_devices(
            device_ids.iter().map(|device_id| (user_id.as_str(), device_id.as_str())),
        );
        let mut batch = self.db.batch();
        for device_id in device_ids {
            let device_prefix = prefix(&[user_id.as_str(), device_id.as_str()]);
            batch.delete(&DEVICE_KEYS, &(user_id.to_string(), device_id.to_string()));
            batch.delete_prefix(&ONE_TIME_KEYS, &device_prefix)?;
            batch.delete_prefix(&FALLBACK_KEYS, &device_prefix)?;
        }
        self.commit_with_change(batch, user_id)
    }
}

/// The three cross-signing keys a user can have, by the storage key of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyUsageSlot {
    Master,
    SelfSigning,
    UserSigning,
}

impl KeyUsageSlot {
    fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::SelfSigning => "self_signing",
            Self::UserSigning => "user_signing",
        }
    }
}

fn to_raw<T>(object: &JsonObject) -> Result<Raw<T>> {
    let raw = serde_json::value::to_raw_value(object)
        .map_err(|error| anyhow::anyhow!("stored key does not serialise: {error}"))?;
    Ok(Raw::from_json(raw))
}

/// Checks uploaded device keys: their shape, that they belong to the sender's own device, and
/// that the device's ed25519 key signed them. Returns the object without `unsigned`.
fn check_device_keys(
    user_id: &UserId,
    device_id: &DeviceId,
    raw: &Raw<DeviceKeys>,
) -> Result<JsonObject> {
    let mut object = parse_object(raw.json(), "device_keys")?;
    let typed: DeviceKeys = raw
        .deserialize()
        .map_err(|error| Error::bad_json(format!("device_keys is malformed: {error}")))?;
    if typed.user_id != user_id {
        return Err(Error::invalid_param(format!(
            "device_keys.user_id is {}, but the access token belongs to {user_id}",
            typed.user_id
        )));
    }
    if typed.device_id != device_id {
        return Err(Error::invalid_param(format!(
            "device_keys.device_id is {}, but the access token belongs to device {device_id}",
            typed.device_id
        )));
    }
    for key_id in typed.keys.keys() {
        if key_id.key_name() != device_id {
            return Err(Error::invalid_param(format!(
                "device_keys.keys contains {key_id}; every key ID must be <algorithm>:{device_id}"
            )));
        }
    }
    let key_id = format!("ed25519:{device_id}");
    let Some(ed25519) = device_ed25519(&object, device_id) else {
        return Err(Error::invalid_param(format!("device_keys.keys must contain {key_id}")));
    };
    if !signed_json::is_ed25519_key(&ed25519) {
        return Err(Error::invalid_param(format!("{key_id} is not an ed25519 public key")));
    }
    verify(&object, user_id.as_str(), &key_id, &ed25519)?;

    object.remove("unsigned");
    Ok(object)
}

/// Combines re-uploaded device keys with the stored ones. The identity keys must be the same:
/// a device that wants new identity keys must log in as a new device, because other users
/// have verified the old ones. Signatures stored since the first upload (such as the
/// self-signing key's) are kept.
fn merge_device_keys(stored: &JsonObject, uploaded: JsonObject) -> Result<JsonObject> {
    if stored.get("keys") != uploaded.get("keys") {
        return Err(Error::invalid_param(
            "This device already has different identity keys; log in as a new device to use new keys",
        ));
    }
    let mut merged = uploaded;
    for (signer, key_id) in signed_json::signature_ids(stored) {
        let present = merged
            .get("signatures")
            .and_then(|signatures| signatures.get(&signer))
            .and_then(|by_signer| by_signer.get(&key_id))
            .is_some();
        if !present {
            signed_json::copy_signature(&mut merged, stored, &signer, &key_id);
        }
    }
    Ok(merged)
}

/// Reads the device's ed25519 identity key from its device keys object.
fn device_ed25519(device_keys: &JsonObject, device_id: &DeviceId) -> Option<String> {
    device_keys
        .get("keys")
        .and_then(|keys| keys.get(format!("ed25519:{device_id}")))
        .and_then(|key| key.as_str())
        .map(str::to_owned)
}

/// Keeps the signatures on `user_id`'s master key that `requester` may see: the owner's own,
/// and those the requester made.
fn visible_signatures(mut master: JsonObject, owner: &UserId, requester: &UserId) -> JsonObject {
    if let Some(Value::Object(signatures)) = master.get_mut("signatures") {
        signatures.retain(|signer, _| signer == owner.as_str() || signer == requester.as_str());
    }
    master
}

impl From<SignatureError> for SignatureFailure {
    fn from(error: SignatureError) -> Self {
        let errcode = match error {
            SignatureError::NotCanonical(_) => ErrorCode::BadJson,
            _ => ErrorCode::InvalidSignature,
        };
        SignatureFailure { errcode, message: error.to_string() }
    }
}

#[cfg(test)]
mod tests;
