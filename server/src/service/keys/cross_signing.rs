//! Cross-signing: the master, self-signing and user-signing keys of a user, and the signatures
//! that devices and cross-signing keys add to each other.

use std::collections::BTreeMap;

use ruma::api::client::keys::upload_signatures::v3::SignedKeys;
use ruma::encryption::{CrossSigningKey, KeyUsage};
use ruma::serde::Raw;
use ruma::{OwnedUserId, UserId};
use serde_json::value::RawValue;

use super::signed_json::{self, parse_object, same_content, verify};
use super::{KeyUsageSlot, Keys};
use crate::error::{Error, ErrorCode, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{JsonObject, CROSS_SIGNING_KEYS, DEVICE_KEYS};

/// The keys of a `/keys/device_signing/upload` request.
#[derive(Debug, Default)]
pub struct SigningKeysUpload<'a> {
    pub master_key: Option<&'a Raw<CrossSigningKey>>,
    pub self_signing_key: Option<&'a Raw<CrossSigningKey>>,
    pub user_signing_key: Option<&'a Raw<CrossSigningKey>>,
}

/// A rejected signature of a `/keys/signatures/upload` request: its errcode and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFailure {
    pub errcode: ErrorCode,
    pub message: String,
}

impl SignatureFailure {
    fn new(errcode: ErrorCode, message: impl Into<String>) -> Self {
        Self { errcode, message: message.into() }
    }

    fn from_error(error: Error) -> Self {
        match error {
            Error::Matrix { code, message, .. } => Self { errcode: code, message },
            other => Self { errcode: ErrorCode::Unknown, message: other.to_string() },
        }
    }
}

/// A checked cross-signing key and its public key.
struct CheckedKey {
    object: JsonObject,
    public_key: String,
}

impl Keys {
    /// Decides whether uploading these cross-signing keys needs the user to confirm their
    /// password.
    ///
    /// The spec (since MSC3967) exempts a user without a master key, and an upload whose keys
    /// all equal the stored ones. So a client can set up cross-signing, and retry that upload,
    /// without a password prompt. Replacing keys always needs the password.
    pub fn signing_keys_need_auth(
        &self,
        user_id: &UserId,
        upload: &SigningKeysUpload<'_>,
    ) -> Result<bool> {
        if self.get_cross_signing_key(user_id, KeyUsageSlot::Master)?.is_none() {
            return Ok(false);
        }
        for (slot, raw) in upload.slots() {
            let Some(raw) = raw else { continue };
            let uploaded = parse_object(raw.json(), slot.as_str())?;
            let unchanged = self
                .get_cross_signing_key(user_id, slot)?
                .is_some_and(|stored| same_content(&stored, &uploaded));
            if !unchanged {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores cross-signing keys, as `/keys/device_signing/upload` does once authentication is
    /// settled.
    ///
    /// The self-signing and user-signing keys must be signed by the master key, the uploaded
    /// one or else the stored one. A new master key drops stored self-signing and user-signing
    /// keys that the request does not replace, because the old master key signed them.
    pub fn upload_signing_keys(
        &self,
        user_id: &UserId,
        upload: &SigningKeysUpload<'_>,
    ) -> Result<()> {
        let _identity = self.lock_identity();

        let master = upload
            .master_key
            .map(|raw| check_cross_signing_key(user_id, raw, KeyUsageSlot::Master))
            .transpose()?;
        let self_signing = upload
            .self_signing_key
            .map(|raw| check_cross_signing_key(user_id, raw, KeyUsageSlot::SelfSigning))
            .transpose()?;
        let user_signing = upload
            .user_signing_key
            .map(|raw| check_cross_signing_key(user_id, raw, KeyUsageSlot::UserSigning))
            .transpose()?;
        if master.is_none() && self_signing.is_none() && user_signing.is_none() {
            return Ok(());
        }

        let stored_master = self.get_cross_signing_key(user_id, KeyUsageSlot::Master)?;
        let master_public_key = match (&master, &stored_master) {
            (Some(master), _) => master.public_key.clone(),
            (None, Some(stored)) => cross_signing_public_key(stored).ok_or_else(|| {
                anyhow::anyhow!("the stored master key of {user_id} has no public key")
            })?,
            (None, None) => {
                return Err(Error::new(
                    ErrorCode::MissingParam,
                    "No master key is available to sign these keys; upload master_key first or with them",
                ))
            }
        };
        let master_key_id = format!("ed25519:{master_public_key}");
        for (checked, field) in
            [(&self_signing, "self_signing_key"), (&user_signing, "user_signing_key")]
        {
            if let Some(checked) = checked {
                verify(&checked.object, user_id.as_str(), &master_key_id, &master_public_key)
                    .map_err(|error| {
                        Error::new(ErrorCode::InvalidSignature, format!("{field}: {error}"))
                    })?;
            }
        }

        let device_ids: Vec<String> = self
            .db
            .scan_prefix(&DEVICE_KEYS, &prefix(&[user_id.as_str()]))?
            .into_iter()
            .map(|((_, device_id), _)| device_id)
            .collect();
        for checked in [&master, &self_signing, &user_signing].into_iter().flatten() {
            if device_ids.contains(&checked.public_key) {
                return Err(Error::forbidden(
                    "A cross-signing public key equals one of your device IDs; generate new keys",
                ));
            }
        }

        let replaces_master = match (&master, &stored_master) {
            (Some(master), Some(stored)) => !same_content(&master.object, stored),
            _ => false,
        };
        let mut batch = self.db.batch();
        let key = |slot: KeyUsageSlot| (user_id.to_string(), slot.as_str().to_owned());
        for (slot, checked) in [
            (KeyUsageSlot::Master, master),
            (KeyUsageSlot::SelfSigning, self_signing),
            (KeyUsageSlot::UserSigning, user_signing),
        ] {
            match checked {
                Some(checked) => {
                    let object = match self.get_cross_signing_key(user_id, slot)? {
                        // The same key again keeps the signatures it gathered meanwhile.
                        Some(stored) if same_content(&stored, &checked.object) => {
                            merge_signatures(stored, &checked.object)
                        }
                        _ => checked.object,
                    };
                    batch.put(&CROSS_SIGNING_KEYS, &key(slot), &object);
                }
                None if replaces_master && slot != KeyUsageSlot::Master => {
                    batch.delete(&CROSS_SIGNING_KEYS, &key(slot));
                }
                None => {}
            }
        }
        self.commit_with_change(batch, user_id)?;
        tracing::info!(user_id = %user_id, replaces_master, "cross-signing keys stored");
        Ok(())
    }

    /// Stores signatures on device keys and cross-signing keys, as `/keys/signatures/upload`
    /// does, and returns the ones that were rejected, by user ID and key ID.
    ///
    /// A user may sign their own devices with their self-signing key, their own master key with
    /// one of their devices, and other users' master keys with their user-signing key. Only
    /// signatures by those keys are taken from each object, and the object must otherwise equal
    /// the stored key.
    pub fn upload_signatures(
        &self,
        signer: &UserId,
        signed_keys: &BTreeMap<OwnedUserId, SignedKeys>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>>> {
        let _identity = self.lock_identity();
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>> =
            BTreeMap::new();
        let mut changed_users: Vec<&UserId> = Vec::new();
        let mut batch = self.db.batch();

        for (target, keys) in signed_keys {
            let mut target_changed = false;
            for (key_id, raw) in keys.iter() {
                let outcome = if target == signer {
                    self.sign_own_key(signer, key_id, raw)?
                } else {
                    self.sign_other_master_key(signer, target, key_id, raw)?
                };
                match outcome {
                    Ok((slot_key, object)) => {
                        match slot_key {
                            SignedSlot::Device(device_id) => {
                                batch.put(&DEVICE_KEYS, &(target.to_string(), device_id), &object)
                            }
                            SignedSlot::Master => batch.put(
                                &CROSS_SIGNING_KEYS,
                                &(target.to_string(), KeyUsageSlot::Master.as_str().to_owned()),
                                &object,
                            ),
                        }
                        target_changed = true;
                    }
                    Err(failure) => {
                        tracing::warn!(signer = %signer, target = %target, key_id, error = %failure.message, "signature rejected");
                        failures
                            .entry(target.clone())
                            .or_default()
                            .insert(key_id.to_owned(), failure);
                    }
                }
            }
            if target_changed {
                changed_users.push(target);
            }
        }

        if changed_users.is_empty() {
            return Ok(failures);
        }
        let positions = changed_users
            .iter()
            .map(|user_id| self.record_change(&mut batch, user_id))
            .collect::<Result<Vec<_>>>()?;
        self.db.commit(batch)?;
        drop(positions);
        for user_id in changed_users {
            self.notify_change(user_id);
        }
        Ok(failures)
    }

    /// Checks a signature by `signer` on one of their own keys: a device signed by the
    /// self-signing key, or the master key signed by a device. Returns the stored object with
    /// the new signatures merged in.
    fn sign_own_key(&self, signer: &UserId, key_id: &str, raw: &RawValue) -> Result<Outcome> {
        let object = match parse_object(raw, key_id) {
            Ok(object) => object,
            Err(error) => return Ok(Err(SignatureFailure::from_error(error))),
        };
        let stored_device = self.db.get(&DEVICE_KEYS, &(signer.to_string(), key_id.to_owned()))?;
        if let Some(stored) = stored_device {
            let self_signing = self
                .get_cross_signing_key(signer, KeyUsageSlot::SelfSigning)?
                .and_then(|key| cross_signing_public_key(&key));
            let Some(self_signing) = self_signing else {
                return Ok(Err(SignatureFailure::new(
                    ErrorCode::InvalidSignature,
                    "You have no self-signing key to sign devices with",
                )));
            };
            let signing_key_id = format!("ed25519:{self_signing}");
            if let Err(failure) = ensure_same_content(&stored, &object) {
                return Ok(Err(failure));
            }
            if let Err(error) = verify(&object, signer.as_str(), &signing_key_id, &self_signing) {
                return Ok(Err(error.into()));
            }
            let mut merged = stored;
            signed_json::copy_signature(&mut merged, &object, signer.as_str(), &signing_key_id);
            return Ok(Ok((SignedSlot::Device(key_id.to_owned()), merged)));
        }

        let master = self
            .get_cross_signing_key(signer, KeyUsageSlot::Master)?
            .filter(|master| cross_signing_public_key(master).as_deref() == Some(key_id));
        let Some(master) = master else {
            return Ok(Err(SignatureFailure::new(
                ErrorCode::NotFound,
                format!("You have no device or master key with the ID {key_id}"),
            )));
        };
        if let Err(failure) = ensure_same_content(&master, &object) {
            return Ok(Err(failure));
        }

        // Take the signatures of the signer's devices that the stored key lacks; each must
        // verify with the device's ed25519 key.
        let mut merged = master.clone();
        let mut added = 0;
        for (signature_user, signature_key_id) in signed_json::signature_ids(&object) {
            if signature_user != signer.as_str()
                || has_signature(&master, signer.as_str(), &signature_key_id)
            {
                continue;
            }
            let Some(device_id) = signature_key_id.strip_prefix("ed25519:") else { continue };
            let device = self.db.get(&DEVICE_KEYS, &(signer.to_string(), device_id.to_owned()))?;
            let Some(ed25519) =
                device.and_then(|device| super::device_ed25519(&device, device_id.into()))
            else {
                return Ok(Err(SignatureFailure::new(
                    ErrorCode::InvalidSignature,
                    format!("The signing key {signature_key_id} is not one of your devices"),
                )));
            };
            if let Err(error) = verify(&object, signer.as_str(), &signature_key_id, &ed25519) {
                return Ok(Err(error.into()));
            }
            signed_json::copy_signature(&mut merged, &object, signer.as_str(), &signature_key_id);
            added += 1;
        }
        if added == 0 {
            return Ok(Err(SignatureFailure::new(
                ErrorCode::InvalidSignature,
                "The master key carries no new signature by one of your devices",
            )));
        }
        Ok(Ok((SignedSlot::Master, merged)))
    }

    /// Checks a signature by `signer`'s user-signing key on `target`'s master key.
    fn sign_other_master_key(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        raw: &RawValue,
    ) -> Result<Outcome> {
        if !self.is_local(target) {
            return Ok(Err(SignatureFailure::new(
                ErrorCode::NotFound,
                "This server does not federate with other servers",
            )));
        }
        let object = match parse_object(raw, key_id) {
            Ok(object) => object,
            Err(error) => return Ok(Err(SignatureFailure::from_error(error))),
        };

        let master = self
            .get_cross_signing_key(target, KeyUsageSlot::Master)?
            .filter(|master| cross_signing_public_key(master).as_deref() == Some(key_id));
        let Some(master) = master else {
            return Ok(Err(SignatureFailure::new(
                ErrorCode::NotFound,
                format!(
                    "{target} has no master key with the ID {key_id}; of other users, only master keys can be signed"
                ),
            )));
        };
        if let Err(failure) = ensure_same_content(&master, &object) {
            return Ok(Err(failure));
        }

        let user_signing = self
            .get_cross_signing_key(signer, KeyUsageSlot::UserSigning)?
            .and_then(|key| cross_signing_public_key(&key));
        let Some(user_signing) = user_signing else {
            return Ok(Err(SignatureFailure::new(
                ErrorCode::InvalidSignature,
                "You have no user-signing key to sign other users with",
            )));
        };
        let signing_key_id = format!("ed25519:{user_signing}");
        if let Err(error) = verify(&object, signer.as_str(), &signing_key_id, &user_signing) {
            return Ok(Err(error.into()));
        }

        let mut merged = master;
        signed_json::copy_signature(&mut merged, &object, signer.as_str(), &signing_key_id);
        Ok(Ok((SignedSlot::Master, merged)))
    }
}

/// The result of checking one signed key: where to store the merged object, or why not.
type Outcome = std::result::Result<(SignedSlot, JsonObject), SignatureFailure>;

impl SigningKeysUpload<'_> {
    fn slots(&self) -> [(KeyUsageSlot, Option<&Raw<CrossSigningKey>>); 3] {
        [
            (KeyUsageSlot::Master, self.master_key),
            (KeyUsageSlot::SelfSigning, self.self_signing_key),
            (KeyUsageSlot::UserSigning, self.user_signing_key),
        ]
    }
}

/// The table and key under which a signed key is stored.
enum SignedSlot {
    Device(String),
    Master,
}

/// Checks an uploaded cross-signing key: its shape, its owner, its usage, and a single ed25519
/// public key whose key ID is `ed25519:<public key>`.
fn check_cross_signing_key(
    user_id: &UserId,
    raw: &Raw<CrossSigningKey>,
    slot: KeyUsageSlot,
) -> Result<CheckedKey> {
    let field = format!("{}_key", slot.as_str());
    let object = parse_object(raw.json(), &field)?;
    let typed: CrossSigningKey = raw
        .deserialize()
        .map_err(|error| Error::bad_json(format!("{field} is malformed: {error}")))?;
    if typed.user_id != user_id {
        return Err(Error::invalid_param(format!(
            "{field}.user_id is {}, but the access token belongs to {user_id}",
            typed.user_id
        )));
    }
    let usage = match slot {
        KeyUsageSlot::Master => KeyUsage::Master,
        KeyUsageSlot::SelfSigning => KeyUsage::SelfSigning,
        KeyUsageSlot::UserSigning => KeyUsage::UserSigning,
    };
    if !typed.usage.contains(&usage) {
        return Err(Error::invalid_param(format!("{field}.usage must contain {}", slot.as_str())));
    }
    let public_key = cross_signing_public_key(&object).ok_or_else(|| {
        Error::invalid_param(format!(
            "{field}.keys must hold exactly one ed25519 key, under the key ID ed25519:<public key>"
        ))
    })?;
    Ok(CheckedKey { object, public_key })
}

/// Extracts the public key of a cross-signing key object: its single `ed25519:<key>` entry whose key ID
/// names the key itself.
fn cross_signing_public_key(object: &JsonObject) -> Option<String> {
    let keys = object.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (key_id, public_key) = keys.iter().next()?;
    let public_key = public_key.as_str()?;
    let named = key_id.strip_prefix("ed25519:")? == public_key;
    (named && signed_json::is_ed25519_key(public_key)).then(|| public_key.to_owned())
}

fn has_signature(object: &JsonObject, signer: &str, key_id: &str) -> bool {
    object
        .get("signatures")
        .and_then(|signatures| signatures.get(signer))
        .and_then(|by_signer| by_signer.get(key_id))
        .is_some()
}

/// Adds the signatures of `from` that `into` lacks.
fn merge_signatures(mut into: JsonObject, from: &JsonObject) -> JsonObject {
    for (signer, key_id) in signed_json::signature_ids(from) {
        if !has_signature(&into, &signer, &key_id) {
            signed_json::copy_signature(&mut into, from, &signer, &key_id);
        }
    }
    into
}

fn ensure_same_content(stored: &JsonObject, uploaded: &JsonObject) -> Result<(), SignatureFailure> {
    if same_content(stored, uploaded) {
        Ok(())
    } else {
        Err(SignatureFailure::new(
            ErrorCode::InvalidParam,
            "The signed object differs from the stored key; query the keys again and sign the current ones",
        ))
    }
}
