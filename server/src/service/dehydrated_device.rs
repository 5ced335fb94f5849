//! Dehydrated devices (MSC3814): one device per user kept on the server, with its private keys
//! encrypted by the client. Room keys sent while the user has no device online wait there for
//! the next device the user sets up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ruma::encryption::{DeviceKeys, OneTimeKey};
use ruma::events::AnyToDeviceEvent;
use ruma::serde::Raw;
use ruma::{DeviceId, OwnedDeviceId, OwnedOneTimeKeyId, UserId};
use serde_json::value::RawValue;

use super::accounts::DeviceObserver;
use super::sync::parse_token;
use super::Services;
use crate::error::{Error, Result};
use crate::storage::tables::{DehydratedDeviceRecord, DEHYDRATED_DEVICES};
use crate::storage::Db;

/// A dehydrated device as `PUT /dehydrated_device` uploads it.
pub struct NewDehydratedDevice<'a> {
    pub device_id: &'a DeviceId,
    pub display_name: Option<String>,
    pub device_data: &'a RawValue,
    pub device_keys: &'a Raw<DeviceKeys>,
    pub one_time_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    pub fallback_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

pub struct DehydratedDevices {
    db: Arc<Db>,
    /// Serialises replacing a user's dehydrated device, which spans several services.
    replace_lock: Mutex<()>,
}

impl DehydratedDevices {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, replace_lock: Mutex::new(()) }
    }

    /// Looks up the user's dehydrated device.
    pub fn get(&self, user_id: &UserId) -> Result<Option<DehydratedDeviceRecord>> {
        Ok(self.db.get(&DEHYDRATED_DEVICES, &user_id.to_string())?)
    }

    /// Looks up the user's dehydrated device and checks that its ID is `device_id`; fails with
    /// `M_NOT_FOUND` otherwise.
    fn expect(&self, user_id: &UserId, device_id: &DeviceId) -> Result<DehydratedDeviceRecord> {
        self.get(user_id)?
            .filter(|record| record.device_id == device_id.as_str())
            .ok_or_else(|| Error::not_found(format!("You have no dehydrated device {device_id}")))
    }
}

/// Stores a dehydrated device with its keys, replacing the user's previous one, whose queued
/// messages are dropped with it.
///
/// The keys are checked before anything changes, so a request with bad keys changes nothing.
/// The device ID must not belong to another of the user's devices.
pub fn put(services: &Services, user_id: &UserId, device: NewDehydratedDevice<'_>) -> Result<()> {
    let this = &services.dehydrated_device;
    if !device.device_data.get().trim_start().starts_with('{') {
        return Err(Error::bad_json("device_data must be a JSON object"));
    }
    services.keys.check_new_device_keys(
        user_id,
        device.device_id,
        device.device_keys,
        device.one_time_keys,
        device.fallback_keys,
    )?;
    let _guard = this.replace_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());

    let previous = this.get(user_id)?;
    let replaces_same_id =
        previous.as_ref().is_some_and(|record| record.device_id == device.device_id.as_str());
    if !replaces_same_id
        && services.accounts.get_device(user_id, device.device_id.as_str())?.is_some()
    {
        return Err(Error::invalid_param(format!(
            "You already have a device with the ID {}; choose another ID",
            device.device_id
        )));
    }
    if replaces_same_id {
        services.accounts.delete_devices(user_id, &[device.device_id.to_string()])?;
    }

    services.keys.upload(
        user_id,
        device.device_id,
        Some(device.device_keys),
        device.one_time_keys,
        device.fallback_keys,
    )?;
    services.accounts.create_device_without_token(
        user_id,
        device.device_id,
        device.display_name,
    )?;
    let record = DehydratedDeviceRecord {
        device_id: device.device_id.to_string(),
        device_data: device.device_data.to_owned(),
    };
    this.db.put(&DEHYDRATED_DEVICES, &user_id.to_string(), &record)?;

    if let Some(previous) = previous.filter(|_| !replaces_same_id) {
        services.accounts.delete_devices(user_id, &[previous.device_id])?;
    }
    tracing::info!(user_id = %user_id, device_id = %device.device_id, "dehydrated device stored");
    Ok(())
}

/// Deletes the user's dehydrated device and returns its ID, or `M_NOT_FOUND`.
pub fn delete(services: &Services, user_id: &UserId) -> Result<OwnedDeviceId> {
    let this = &services.dehydrated_device;
    let _guard = this.replace_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let record =
        this.get(user_id)?.ok_or_else(|| Error::not_found("You have no dehydrated device"))?;
    // The observer below removes the record along with the device.
    services.accounts.delete_devices(user_id, std::slice::from_ref(&record.device_id))?;
    Ok(record.device_id.into())
}

/// Returns the to-device messages queued for the dehydrated device after `next_batch`, and the
/// token for the next call. Calling with a token acknowledges, and deletes, the messages up to
/// it; a call that returns no events means every message has been collected.
pub fn events(
    services: &Services,
    user_id: &UserId,
    device_id: &DeviceId,
    next_batch: Option<&str>,
) -> Result<(Vec<Raw<AnyToDeviceEvent>>, String)> {
    services.dehydrated_device.expect(user_id, device_id)?;
    let since = next_batch.map(parse_token).transpose()?.unwrap_or(0);
    services.to_device.delete_to_device_up_to(user_id, device_id, since)?;
    let up_to = services.stream.visible().max(since);
    let events = services.to_device.to_device_events(user_id, device_id, since, up_to)?;
    Ok((events, up_to.to_string()))
}

impl DeviceObserver for DehydratedDevices {
    fn device_created(&self, _user_id: &UserId, _device_id: &DeviceId) -> Result<()> {
        Ok(())
    }

    /// Forgets the dehydrated device when it is deleted, through this service or `/devices`.
    fn devices_deleted(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        let Some(record) = self.get(user_id)? else { return Ok(()) };
        if device_ids.iter().any(|device_id| device_id.as_str() == record.device_id) {
            self.db.delete(&DEHYDRATED_DEVICES, &user_id.to_string())?;
        }
        Ok(())
    }
}
