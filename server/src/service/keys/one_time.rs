//! One-time and fallback keys: upload, counts for `/sync`, and claims that hand each one-time
//! key out at most once.

use std::collections::BTreeMap;

use ruma::encryption::{OneTimeKey, SignedKey};
use ruma::serde::Raw;
use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt, UserId,
};
use serde_json::Value;

use super::signed_json::{parse_object, verify};
use super::Keys;
use crate::error::{Error, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{FallbackKeyRecord, OneTimeKeyRecord, FALLBACK_KEYS, ONE_TIME_KEYS};
use crate::storage::Batch;

/// The devices and algorithms that a `/keys/claim` request names.
pub type ClaimRequest = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>;

/// The keys a claim handed out, by user, device and full key ID.
#[derive(Debug, Default)]
pub struct Claimed {
    pub one_time_keys: BTreeMap<
        OwnedUserId,
        BTreeMap<OwnedDeviceId, BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>>,
    >,
    /// Servers that could not be asked, by server name.
    pub failures: BTreeMap<String, Value>,
}

/// A checked key, ready to store.
pub(super) struct CheckedKey {
    key_id: OwnedOneTimeKeyId,
    key: Value,
}

/// Checks uploaded one-time keys: only `signed_curve25519` is accepted, and each key must be
/// signed by the device's ed25519 key when that key is known.
pub(super) fn check_keys(
    user_id: &UserId,
    device_id: &DeviceId,
    keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    ed25519: Option<&str>,
) -> Result<Vec<CheckedKey>> {
    keys.iter()
        .map(|(key_id, raw)| check_key(user_id, device_id, key_id, raw, ed25519, "one_time_keys"))
        .collect()
}

/// Checks uploaded fallback keys like one-time keys, and that there is at most one per
/// algorithm.
pub(super) fn check_fallback_keys(
    user_id: &UserId,
    device_id: &DeviceId,
    keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    ed25519: Option<&str>,
) -> Result<Vec<CheckedKey>> {
    let mut per_algorithm: BTreeMap<String, &OwnedOneTimeKeyId> = BTreeMap::new();
    for key_id in keys.keys() {
        if let Some(other) = per_algorithm.insert(key_id.algorithm().to_string(), key_id) {
            return Err(Error::invalid_param(format!(
                "fallback_keys contains both {other} and {key_id}; upload at most one fallback key per algorithm"
            )));
        }
    }
    keys.iter()
        .map(|(key_id, raw)| check_key(user_id, device_id, key_id, raw, ed25519, "fallback_keys"))
        .collect()
}

fn check_key(
    user_id: &UserId,
    device_id: &DeviceId,
    key_id: &OwnedOneTimeKeyId,
    raw: &Raw<OneTimeKey>,
    ed25519: Option<&str>,
    field: &str,
) -> Result<CheckedKey> {
    if key_id.algorithm() != OneTimeKeyAlgorithm::SignedCurve25519 {
        return Err(Error::invalid_param(format!(
            "{field}.{key_id} uses the unsupported algorithm {}; use signed_curve25519",
            key_id.algorithm()
        )));
    }
    let object = parse_object(raw.json(), &format!("{field}.{key_id}"))?;
    serde_json::from_str::<SignedKey>(raw.json().get())
        .map_err(|error| Error::bad_json(format!("{field}.{key_id} is malformed: {error}")))?;
    // NOTE: a key uploaded before any device keys cannot be checked, and is stored unchecked;
    // clients upload device keys first or in the same request.
    if let Some(ed25519) = ed25519 {
        verify(&object, user_id.as_str(), &format!("ed25519:{device_id}"), ed25519)?;
    }
    Ok(CheckedKey { key_id: key_id.clone(), key: Value::Object(object) })
}

impl Keys {
    /// Adds one-time keys to `batch`, after the ones already stored in upload order. Call with
    /// the device's lock held.
    pub(super) fn stage_one_time_keys(
        &self,
        batch: &mut Batch<'_>,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: Vec<CheckedKey>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let stored = self
            .db
            .scan_prefix(&ONE_TIME_KEYS, &prefix(&[user_id.as_str(), device_id.as_str()]))?;
        let upload_seq =
            stored.iter().map(|(_, record)| record.upload_seq).max().map_or(0, |max| max + 1);
        let stored: BTreeMap<String, OneTimeKeyRecord> =
            stored.into_iter().map(|((_, _, key_id), record)| (key_id, record)).collect();

        for CheckedKey { key_id, key } in keys {
            match stored.get(key_id.as_str()) {
                // A retried upload repeats keys the server already has.
                Some(existing) if existing.key == key => continue,
                Some(_) => {
                    return Err(Error::invalid_param(format!(
                        "The one-time key {key_id} is already stored with a different value"
                    )))
                }
                None => {}
            }
            batch.put(
                &ONE_TIME_KEYS,
                &(user_id.to_string(), device_id.to_string(), key_id.to_string()),
                &OneTimeKeyRecord { upload_seq, key },
            );
        }
        Ok(())
    }

    /// Adds fallback keys to `batch`, each replacing the stored one of its algorithm. A key
    /// uploaded again unchanged keeps its `used` flag. Call with the device's lock held.
    pub(super) fn stage_fallback_keys(
        &self,
        batch: &mut Batch<'_>,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: Vec<CheckedKey>,
    ) -> Result<()> {
        for CheckedKey { key_id, key } in keys {
            let storage_key =
                (user_id.to_string(), device_id.to_string(), key_id.algorithm().to_string());
            let used = self.db.get(&FALLBACK_KEYS, &storage_key)?.is_some_and(|stored| {
                stored.key_id == key_id.as_str() && stored.key == key && stored.used
            });
            batch.put(
                &FALLBACK_KEYS,
                &storage_key,
                &FallbackKeyRecord { key_id: key_id.to_string(), key, used },
            );
        }
        Ok(())
    }

    /// Hands out one key per requested device and algorithm, as `/keys/claim` does: the oldest
    /// one-time key, or, when none is left, the fallback key, which is then marked used.
    ///
    /// The devices' locks are held from the read to the commit, so concurrent claims never get
    /// the same one-time key. Devices without keys are left out of the result.
    pub fn claim(&self, request: &ClaimRequest) -> Result<Claimed> {
        let mut claimed = Claimed::default();
        let mut wanted: Vec<(&OwnedUserId, &OwnedDeviceId, &OneTimeKeyAlgorithm)> = Vec::new();
        for (user_id, devices) in request {
            if !self.is_local(user_id) {
                claimed.failures.insert(
                    user_id.server_name().to_string(),
                    serde_json::json!({
                        "errcode": "M_UNKNOWN",
                        "error": "This server does not federate with other servers",
                    }),
                );
                continue;
            }
            wanted.extend(
                devices.iter().map(|(device_id, algorithm)| (user_id, device_id, algorithm)),
            );
        }
        if wanted.is_empty() {
            return Ok(claimed);
        }

        let _locks = self.lock_devices(
            wanted.iter().map(|(user_id, device_id, _)| (user_id.as_str(), device_id.as_str())),
        );
        let mut batch = self.db.batch();
        let mut changed = false;
        for (user_id, device_id, algorithm) in wanted {
            let Some((key_id, key)) =
                self.take_key(&mut batch, &mut changed, user_id, device_id, algorithm)?
            else {
                continue;
            };
            let key_id = OwnedOneTimeKeyId::try_from(key_id.as_str())
                .map_err(|error| anyhow::anyhow!("stored key ID {key_id:?} is invalid: {error}"))?;
            let raw = serde_json::value::to_raw_value(&key).map_err(|error| {
                anyhow::anyhow!("stored one-time key does not serialise: {error}")
            })?;
            claimed
                .one_time_keys
                .entry(user_id.clone())
                .or_default()
                .entry(device_id.clone())
                .or_default()
                .insert(key_id, Raw::from_json(raw));
        }
        if changed {
            self.db.commit(batch)?;
        }
        Ok(claimed)
    }

    /// Picks the key a claim hands out for one device and stages its removal (or, for a fallback
    /// key, its `used` flag) in `batch`.
    fn take_key(
        &self,
        batch: &mut Batch<'_>,
        changed: &mut bool,
        user_id: &UserId,
        device_id: &DeviceId,
        algorithm: &OneTimeKeyAlgorithm,
    ) -> Result<Option<(String, Value)>> {
        let mut algorithm_prefix = prefix(&[user_id.as_str(), device_id.as_str()]);
        algorithm_prefix.extend_from_slice(format!("{algorithm}:").as_bytes());
        let oldest = self.db.scan_prefix(&ONE_TIME_KEYS, &algorithm_prefix)?.into_iter().min_by(
            |(a_key, a), (b_key, b)| (a.upload_seq, &a_key.2).cmp(&(b.upload_seq, &b_key.2)),
        );
        if let Some((storage_key, record)) = oldest {
            batch.delete(&ONE_TIME_KEYS, &storage_key);
            *changed = true;
            return Ok(Some((storage_key.2, record.key)));
        }

        let storage_key = (user_id.to_string(), device_id.to_string(), algorithm.to_string());
        let Some(mut fallback) = self.db.get(&FALLBACK_KEYS, &storage_key)? else {
            return Ok(None);
        };
        if !fallback.used {
            fallback.used = true;
            batch.put(&FALLBACK_KEYS, &storage_key, &fallback);
            *changed = true;
        }
        Ok(Some((fallback.key_id, fallback.key)))
    }

    /// Counts the unclaimed one-time keys of a device per algorithm, as `/sync` reports in
    /// `device_one_time_keys_count`. `signed_curve25519` is always present, zero included,
    /// because some clients read a missing count as "unknown" and never upload.
    pub fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let mut counts: BTreeMap<OneTimeKeyAlgorithm, UInt> =
            BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
        let stored = self
            .db
            .scan_prefix(&ONE_TIME_KEYS, &prefix(&[user_id.as_str(), device_id.as_str()]))?;
        for ((_, _, key_id), _) in stored {
            let Some((algorithm, _)) = key_id.split_once(':') else { continue };
            let count = counts.entry(OneTimeKeyAlgorithm::from(algorithm)).or_insert(UInt::MIN);
            *count = count.saturating_add(UInt::from(1u32));
        }
        Ok(counts)
    }

    /// Lists the algorithms for which a device has a fallback key that no claim has handed out yet,
    /// as `/sync` reports in `device_unused_fallback_key_types`.
    pub fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Vec<OneTimeKeyAlgorithm>> {
        let stored = self
            .db
            .scan_prefix(&FALLBACK_KEYS, &prefix(&[user_id.as_str(), device_id.as_str()]))?;
        Ok(stored
            .into_iter()
            .filter(|(_, record)| !record.used)
            .map(|((_, _, algorithm), _)| OneTimeKeyAlgorithm::from(algorithm))
            .collect())
    }
}
