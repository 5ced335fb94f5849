//! To-device messages: queued per recipient device under a stream position, delivered by
//! `/sync`, and deleted once the device acknowledges them with its next `since`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ruma::events::AnyToDeviceEvent;
use ruma::serde::Raw;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde::Serialize;
use serde_json::value::RawValue;

use super::accounts::{Accounts, DeviceObserver, Sender};
use super::now_ms;
use super::stream::Stream;
use crate::error::{Error, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{ToDeviceRecord, TO_DEVICE_MESSAGES, TO_DEVICE_TXNS};
use crate::storage::{Db, KeyCodec};

/// The messages of one `sendToDevice` request: content by recipient user and device (or `*`).
pub type Messages = BTreeMap<
    OwnedUserId,
    BTreeMap<DeviceIdOrAllDevices, Raw<ruma::events::AnyToDeviceEventContent>>,
>;

pub struct ToDevice {
    db: Arc<Db>,
    stream: Arc<Stream>,
    server_name: OwnedServerName,
    /// Serialises the check-then-store of transaction IDs, so a request retried while the
    /// first attempt is still running is applied once.
    send_lock: Mutex<()>,
}

/// A to-device event as `/sync` delivers it.
#[derive(Serialize)]
struct Event<'a> {
    sender: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    content: &'a RawValue,
}

impl ToDevice {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>, server_name: OwnedServerName) -> Self {
        Self { db, stream, server_name, send_lock: Mutex::new(()) }
    }

    /// Queues to-device messages, as `PUT /sendToDevice/{eventType}/{txnId}` does.
    ///
    /// A transaction ID is applied once per sending device; a repeat succeeds without sending
    /// again. `*` addresses every device of a user. Messages to unknown users, unknown devices
    /// or other servers are dropped, as the spec requires, so the sender learns nothing from them.
    pub fn send(
        &self,
        accounts: &Accounts,
        sender: &Sender,
        event_type: &str,
        txn_id: &str,
        messages: &Messages,
    ) -> Result<()> {
        let mut recipients: BTreeMap<(OwnedUserId, OwnedDeviceId), &RawValue> = BTreeMap::new();
        for (user_id, devices) in messages {
            for (target, content) in devices {
                if !content.json().get().trim_start().starts_with('{') {
                    return Err(Error::bad_json(format!(
                        "The message to {user_id} {target} must be a JSON object"
                    )));
                }
            }
            if user_id.server_name() != self.server_name {
                tracing::debug!(user_id = %user_id, "to-device message for another server dropped");
                continue;
            }
            // A message to `*` goes to every device, unless the same request also addresses a
            // device by its ID, which then gets its own message.
            for (target, content) in devices {
                if let DeviceIdOrAllDevices::AllDevices = target {
                    for device in accounts.list_devices(user_id)? {
                        recipients.insert((user_id.clone(), device.device_id), content.json());
                    }
                }
            }
            for (target, content) in devices {
                if let DeviceIdOrAllDevices::DeviceId(device_id) = target {
                    if accounts.get_device(user_id, device_id.as_str())?.is_some() {
                        recipients.insert((user_id.clone(), device_id.clone()), content.json());
                    }
                }
            }
        }

        let _guard = self.send_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let txn_key = (sender.user_id.to_string(), sender.device_id.to_string(), txn_id.to_owned());
        if self.db.get(&TO_DEVICE_TXNS, &txn_key)?.is_some() {
            tracing::debug!(txn_id, "to-device transaction repeated; not sent again");
            return Ok(());
        }

        // One position for the whole request: its messages become visible together, and each
        // recipient device gets at most one of them.
        let position = self.stream.next()?;
        let mut batch = self.db.batch();
        for ((user_id, device_id), content) in &recipients {
            batch.put(
                &TO_DEVICE_MESSAGES,
                &(user_id.to_string(), device_id.to_string(), position.get()),
                &ToDeviceRecord {
                    sender: sender.user_id.to_string(),
                    event_type: event_type.to_owned(),
                    content: (*content).to_owned(),
                },
            );
        }
        // TODO: transaction IDs stay until their device is deleted; expire them after a day.
        batch.put(&TO_DEVICE_TXNS, &txn_key, &now_ms());
        self.db.commit(batch)?;
        drop(position);

        let users: Vec<&UserId> = recipients.keys().map(|(user_id, _)| user_id.as_ref()).collect();
        self.stream.notify(users);
        tracing::debug!(event_type, count = recipients.len(), "to-device messages queued");
        Ok(())
    }

    /// Collects the messages for a device at stream positions `since + 1 ..= until`, oldest first, as
    /// `/sync` delivers them.
    ///
    /// Every pending message in the range is returned, however many there are, because the
    /// next `since` acknowledges the whole range.
    pub fn to_device_events(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: u64,
        until: u64,
    ) -> Result<Vec<Raw<AnyToDeviceEvent>>> {
        if until <= since {
            return Ok(Vec::new());
        }
        let start = (user_id.to_string(), device_id.to_string(), since.saturating_add(1));
        let end = (user_id.to_string(), device_id.to_string(), until.saturating_add(1));
        let records =
            self.db.scan_between(&TO_DEVICE_MESSAGES, &start.encode_key(), &end.encode_key())?;
        records
            .iter()
            .map(|(_, record)| {
                let event = Event {
                    sender: &record.sender,
                    event_type: &record.event_type,
                    content: &record.content,
                };
                let json = serde_json::value::to_raw_value(&event).map_err(|error| {
                    anyhow::anyhow!("to-device event does not serialise: {error}")
                })?;
                Ok(Raw::from_json(json))
            })
            .collect()
    }

    /// Deletes a device's messages up to and including `position`, once the device has
    /// acknowledged them by syncing with that position as `since`.
    pub fn delete_to_device_up_to(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        position: u64,
    ) -> Result<()> {
        let start = (user_id.to_string(), device_id.to_string(), 0);
        let end = (user_id.to_string(), device_id.to_string(), position.saturating_add(1));
        let acknowledged =
            self.db.scan_between(&TO_DEVICE_MESSAGES, &start.encode_key(), &end.encode_key())?;
        if acknowledged.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for (key, _) in &acknowledged {
            batch.delete(&TO_DEVICE_MESSAGES, key);
        }
        self.db.commit(batch)?;
        tracing::debug!(user_id = %user_id, device_id = %device_id, count = acknowledged.len(), "acknowledged to-device messages deleted");
        Ok(())
    }
}

impl DeviceObserver for ToDevice {
    fn device_created(&self, _user_id: &UserId, _device_id: &DeviceId) -> Result<()> {
        Ok(())
    }

    /// Drops the deleted devices' queued messages and their sent transaction IDs.
    fn devices_deleted(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        let mut batch = self.db.batch();
        for device_id in device_ids {
            let device_prefix = prefix(&[user_id.as_str(), device_id.as_str()]);
            batch.delete_prefix(&TO_DEVICE_MESSAGES, &device_prefix)?;
            batch.delete_prefix(&TO_DEVICE_TXNS, &device_prefix)?;
        }
        self.db.commit(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
