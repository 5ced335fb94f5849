//! End-to-end encryption for the gatekeeper's bot: one Matrix device whose Olm and Megolm keys
//! live in a SQLite crypto store, driven by matrix-sdk-crypto's [`OlmMachine`].
//!
//! The bot's room events reach the application service in transactions from the homeserver,
//! so this module never reads room timelines. What it needs besides them arrives through a
//! `/sync` of the bot's device whose filter drops every room, presence and account data
//! event: to-device messages (room keys, Olm session set-up), device-list changes and the
//! counts of one-time and fallback keys. [`BotCrypto::run_sync`] drives that loop, and each
//! iteration also sends the requests the machine queues: key uploads, key queries, to-device
//! messages.
//!
//! A `/sync` from a `since` token acknowledges the to-device messages before it, and the
//! homeserver deletes them. So no other code may call `/sync` with the bot's access token,
//! or room keys meant for the bot are lost.
//!
//! Durability: the `next_batch` token is saved in the crypto store in the same SQLite
//! transaction as the room keys and Olm sessions of that response. After a crash the bot
//! syncs again from the previous token and gets the same to-device messages once more. The
//! machine ignores Olm messages it has already decrypted, so nothing is applied twice.
//!
//! Typical use by the caller:
//!
//! 1. [`BotCrypto::open`] with the bot's access token and device ID (the device must belong
//!    to the token) and a directory of its own, then spawn [`BotCrypto::run_sync`] on a clone.
//!    The first sync uploads the device keys, so others can encrypt for the bot only after it.
//! 2. For each `m.room.encrypted` event from a transaction, call [`BotCrypto::decrypt`]. On
//!    [`Decrypted::MissingRoomKey`], keep the event and try again when
//!    [`BotCrypto::subscribe_room_keys`] reports its session.
//! 3. Answer with [`BotCrypto::send_encrypted`], passing the room's members.

mod error;
mod homeserver;
mod outgoing;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use matrix_sdk_common::deserialized_responses::{VerificationLevel, VerificationState};
use matrix_sdk_crypto::types::events::room::encrypted::EncryptedEvent;
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, MegolmError, OlmMachine,
    TrustRequirement,
};
use matrix_sdk_sqlite::SqliteCryptoStore;
use ruma::api::client::filter::FilterDefinition;
use ruma::api::client::message::send_message_event;
use ruma::api::client::sync::sync_events;
use ruma::events::{AnyMessageLikeEventContent, AnyTimelineEvent, MessageLikeEventType};
use ruma::serde::Raw;
use ruma::{
    DeviceId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, TransactionId, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Mutex};
use tracing::{debug, info, instrument, warn};

pub use error::{Error, Result};
use homeserver::Homeserver;

/// How long [`BotCrypto::run_sync`] lets the homeserver hold a `/sync` open when nothing
/// happens.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time a `/sync` request may take beyond its long-poll timeout before it is abandoned.
const SYNC_GRACE: Duration = Duration::from_secs(30);

/// First and maximum pause of [`BotCrypto::run_sync`] after a failed iteration. The pause
/// doubles with each failure in a row.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// How many room-key notices a slow [`BotCrypto::subscribe_room_keys`] receiver may fall
/// behind before it misses some.
const ROOM_KEY_CHANNEL_CAPACITY: usize = 256;

/// The encryption layer of the bot's device. Cloning is cheap and every clone shares the same
/// machine, store and HTTP client.
#[derive(Clone)]
pub struct BotCrypto {
    inner: Arc<Inner>,
}

struct Inner {
    machine: OlmMachine,
    homeserver: Homeserver,
    /// Held while the machine's outgoing requests are fetched, sent and marked as sent, so two
    /// tasks never send the same key upload or key query twice.
    requests_lock: Mutex<()>,
    /// Held for the whole of [`BotCrypto::send_encrypted`]. Key claims must not overlap, and
    /// sharing a room key and encrypting with it must happen in order.
    send_lock: Mutex<()>,
    /// Held for the whole of [`BotCrypto::sync_once`], so `since` tokens are used in order.
    sync_lock: Mutex<()>,
    room_keys: broadcast::Sender<ReceivedRoomKey>,
}

/// The result of [`BotCrypto::decrypt`].
#[derive(Debug, Clone)]
pub enum Decrypted {
    /// The event was decrypted.
    Event(DecryptedEvent),
    /// The room key of the event is not in the store.
    ///
    /// When `withheld_code` is `None`, the key is usually still on its way as a to-device
    /// message: try again once [`BotCrypto::subscribe_room_keys`] reports `session_id`, or
    /// after the next sync. When the sender withheld the key from the bot (for example
    /// `m.unverified` or `m.blacklisted`), retrying does not help.
    MissingRoomKey {
        /// The Megolm session the event was encrypted with, from its content.
        session_id: Option<String>,
        /// The `code` of the `m.room_key.withheld` message the sender sent the bot, if any.
        withheld_code: Option<String>,
    },
}

/// A decrypted room event.
#[derive(Debug, Clone)]
pub struct DecryptedEvent {
    pub event_id: OwnedEventId,
    /// The sender of the encrypted event, which owns the device the room key came from.
    pub sender: OwnedUserId,
    /// The device the room key came from, when the bot has that device's keys.
    pub sender_device: Option<OwnedDeviceId>,
    /// The type of the decrypted event, such as `m.room.message`.
    pub event_type: String,
    /// The content of the decrypted event.
    pub content: serde_json::Value,
    /// The whole decrypted event: `type` and `content` from the ciphertext, `event_id`,
    /// `sender`, `origin_server_ts` and `unsigned` from the encrypted event.
    pub event: Raw<AnyTimelineEvent>,
}

/// A room key that a sync brought in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRoomKey {
    pub room_id: OwnedRoomId,
    pub session_id: String,
}

/// The result of one [`BotCrypto::sync_once`].
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// The token the next sync starts from, already saved in the store.
    pub next_batch: String,
    /// The room keys that arrived in this response.
    pub room_keys: Vec<ReceivedRoomKey>,
}

impl BotCrypto {
    /// Opens the crypto store in `store_dir`, creating the directory and a new device identity
    /// when there is none, and prepares requests to `homeserver_url` with `access_token`.
    ///
    /// Sends no request: the first sync uploads the device keys. Fails with
    /// [`Error::Store`] when the store belongs to another user or device, because reusing
    /// another device's keys would break every Olm session with it.
    ///
    /// `store_dir` contains the bot's private keys unencrypted, so it must be readable by the
    /// application service only.
    #[instrument(skip_all, fields(%user_id, %device_id))]
    pub async fn open(
        homeserver_url: &str,
        user_id: &UserId,
        device_id: &DeviceId,
        access_token: &str,
        store_dir: &Path,
    ) -> Result<Self> {
        let homeserver = Homeserver::new(homeserver_url, access_token)?;
        // NOTE: the store is not encrypted with a passphrase. The passphrase would have to sit
        // next to the access token in the application service's configuration, which
        // protects little against someone who can read the store directory.
        let store = SqliteCryptoStore::open(store_dir, None)
            .await
            .map_err(|error| Error::OpenStore { path: store_dir.to_owned(), error })?;
        let machine = OlmMachine::with_store(user_id, device_id, store, None).await?;
        info!(
            ed25519 = %machine.identity_keys().ed25519,
            store = %store_dir.display(),
            "opened the bot's crypto store"
        );

        let (room_keys, _) = broadcast::channel(ROOM_KEY_CHANNEL_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                machine,
                homeserver,
                requests_lock: Mutex::new(()),
                send_lock: Mutex::new(()),
                sync_lock: Mutex::new(()),
                room_keys,
            }),
        })
    }

    /// Returns the bot's user ID.
    pub fn user_id(&self) -> &UserId {
        self.inner.machine.user_id()
    }

    /// Returns the bot's device ID.
    pub fn device_id(&self) -> &DeviceId {
        self.inner.machine.device_id()
    }

    /// Returns the device's Ed25519 identity key, unpadded base64 as in `/keys/query`.
    pub fn ed25519_key(&self) -> String {
        self.inner.machine.identity_keys().ed25519.to_base64()
    }

    /// Returns the device's Curve25519 identity key, unpadded base64 as in `/keys/query`.
    pub fn curve25519_key(&self) -> String {
        self.inner.machine.identity_keys().curve25519.to_base64()
    }

    /// Returns the saved `next_batch` token, or `None` before the first successful sync.
    pub async fn next_batch(&self) -> Result<Option<String>> {
        Ok(self.inner.machine.store().next_batch_token().await?)
    }

    /// Returns a receiver of every room key that later syncs bring in, so events that
    /// returned [`Decrypted::MissingRoomKey`] can be decrypted again. A receiver that falls
    /// more than a few hundred keys behind gets [`broadcast::error::RecvError::Lagged`] and
    /// should then retry all the events it keeps.
    pub fn subscribe_room_keys(&self) -> broadcast::Receiver<ReceivedRoomKey> {
        self.inner.room_keys.subscribe()
    }

    /// Syncs forever: one [`BotCrypto::sync_once`] after another, pausing after a failure
    /// (one second, doubling up to a minute).
    ///
    /// Returns only when the homeserver rejects the access token, because no retry fixes
    /// that. Stop it by dropping or aborting its task. An iteration cut off that way leaves
    /// the store consistent: see the module documentation.
    pub async fn run_sync(&self) -> Result<Infallible> {
        let mut pause = RETRY_MIN;
        loop {
            match self.sync_once(SYNC_TIMEOUT).await {
                Ok(_) => pause = RETRY_MIN,
                Err(error) if error.is_unauthorized() => {
                    warn!(%error, "the homeserver rejected the bot's access token; sync stopped");
                    return Err(error);
                }
                Err(error) => {
                    warn!(%error, retry_in = ?pause, "the bot's encryption sync failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Runs one sync iteration: sends pending encryption requests, calls `/sync` (waiting up
    /// to `timeout` for news once a token is saved), hands the to-device messages, device-list
    /// changes and key counts to the machine, saves `next_batch` with them, and sends the
    /// requests the machine queued in response.
    #[instrument(skip_all)]
    pub async fn sync_once(&self, timeout: Duration) -> Result<SyncOutcome> {
        let _sync = self.inner.sync_lock.lock().await;
        let machine = &self.inner.machine;
        self.send_outgoing_requests().await?;

        let since = machine.store().next_batch_token().await?;
        let mut request = sync_events::v3::Request::new();
        request.filter = Some(sync_events::v3::Filter::FilterDefinition(crypto_only_filter()));
        request.timeout = since.is_some().then_some(timeout);
        request.since = since;
        let response =
            self.inner.homeserver.send_with_timeout(request, timeout + SYNC_GRACE).await?;

        debug!(
            to_device = response.to_device.events.len(),
            changed_devices = response.device_lists.changed.len(),
            "received sync"
        );
        let changes = EncryptionSyncChanges {
            to_device_events: response.to_device.events,
            changed_devices: &response.device_lists,
            one_time_keys_counts: &response.device_one_time_keys_count,
            unused_fallback_keys: response.device_unused_fallback_key_types.as_deref(),
            next_batch_token: Some(response.next_batch.clone()),
        };
        let (_to_device_events, room_key_infos) =
            machine.receive_sync_changes(changes, &decryption_settings()).await?;

        let room_keys: Vec<ReceivedRoomKey> = room_key_infos
            .into_iter()
            .map(|info| ReceivedRoomKey { room_id: info.room_id, session_id: info.session_id })
            .collect();
        for room_key in &room_keys {
            debug!(room_id = %room_key.room_id, session_id = %room_key.session_id, "received a room key");
            // Sending fails only when there is no subscriber, and then nobody waits for keys.
            let _ = self.inner.room_keys.send(room_key.clone());
        }

        self.send_outgoing_requests().await?;
        Ok(SyncOutcome { next_batch: response.next_batch, room_keys })
    }

    /// Decrypts an `m.room.encrypted` event of `room_id`, given as it came from the homeserver
    /// (an application service transaction or the client format of `/messages`).
    ///
    /// A missing room key is [`Decrypted::MissingRoomKey`], not an error. Events from any
    /// device are decrypted, cross-signed or not, because the people the bot talks to are
    /// often new and have not set up cross-signing. An event whose room key came from another
    /// user's device than its sender is rejected with [`Error::MismatchedSender`].
    #[instrument(skip_all, fields(%room_id))]
    pub async fn decrypt<T>(&self, room_id: &RoomId, event: &Raw<T>) -> Result<Decrypted> {
        let encrypted: &Raw<EncryptedEvent> = event.cast_ref_unchecked();
        let result =
            self.inner.machine.decrypt_room_event(encrypted, room_id, &decryption_settings()).await;
        let decrypted = match result {
            Ok(decrypted) => decrypted,
            Err(MegolmError::MissingRoomKey(withheld)) => {
                let session_id = event
                    .get_field::<SessionIdField>("content")
                    .ok()
                    .flatten()
                    .and_then(|content| content.session_id);
                debug!(?session_id, "no room key for the event yet");
                return Ok(Decrypted::MissingRoomKey {
                    session_id,
                    withheld_code: withheld.map(|code| code.as_ref().to_owned()),
                });
            }
            Err(error) => return Err(error.into()),
        };

        let fields: DecryptedFields = decrypted.event.deserialize_as_unchecked()?;
        let info = &decrypted.encryption_info;
        if info.verification_state
            == VerificationState::Unverified(VerificationLevel::MismatchedSender)
        {
            return Err(Error::MismatchedSender {
                event_id: fields.event_id,
                sender: fields.sender,
            });
        }
        Ok(Decrypted::Event(DecryptedEvent {
            event_id: fields.event_id,
            sender: fields.sender,
            sender_device: info.sender_device.clone(),
            event_type: fields.event_type,
            content: fields.content,
            event: decrypted.event,
        }))
    }

    /// Encrypts `content` as an event of `event_type` (such as `m.room.message`) and sends it
    /// to `room_id` as `m.room.encrypted`. Returns the event ID.
    ///
    /// `members` are the users whose devices receive the room key: the joined members, and
    /// the invited ones when the room's history visibility lets them read it. The bot itself
    /// may be among them. Before encrypting, this tracks the members' devices, queries keys
    /// that are new or changed, claims one-time keys for devices without an Olm session, and
    /// shares the room's Megolm key with every device that lacks it. Devices without a
    /// one-time key get an `m.room_key.withheld` notice instead of the key. The key is
    /// replaced after a week or 100 messages, and at once when a member is gone from
    /// `members`.
    #[instrument(skip_all, fields(%room_id, event_type))]
    pub async fn send_encrypted(
        &self,
        room_id: &RoomId,
        members: &[OwnedUserId],
        event_type: &str,
        content: impl Serialize,
    ) -> Result<OwnedEventId> {
        let content: Raw<AnyMessageLikeEventContent> = Raw::new(&content)?.cast_unchecked();
        let _send = self.inner.send_lock.lock().await;
        let machine = &self.inner.machine;
        let homeserver = &self.inner.homeserver;
        let users = || members.iter().map(|user_id| user_id.as_ref());

        // Users tracked for the first time are queued for a key query, which goes out here.
        machine.update_tracked_users(users()).await?;
        self.send_outgoing_requests().await?;

        if let Some((request_id, request)) = machine.get_missing_sessions(users()).await? {
            let response = homeserver.send(request).await?;
            machine.mark_request_as_sent(&request_id, &response).await?;
        }

        let to_device_requests =
            machine.share_room_key(room_id, users(), EncryptionSettings::default()).await?;
        for request in to_device_requests {
            outgoing::send_to_device(homeserver, machine, &request).await?;
        }

        // `encrypt_room_event_raw` panics without a shared room key. `share_room_key` above
        // has created and shared one, or returned an error.
        let encrypted = machine.encrypt_room_event_raw(room_id, event_type, &content).await?;
        let request = send_message_event::v3::Request::new_raw(
            room_id.to_owned(),
            TransactionId::new(),
            MessageLikeEventType::RoomEncrypted,
            encrypted.content.cast_unchecked(),
        );
        let response = homeserver.send(request).await?;
        debug!(event_id = %response.event_id, "sent an encrypted event");
        Ok(response.event_id)
    }

    /// Sends every request the machine has queued (key uploads and queries, to-device
    /// messages) and marks each as sent.
    async fn send_outgoing_requests(&self) -> Result<()> {
        let _requests = self.inner.requests_lock.lock().await;
        let requests = self.inner.machine.outgoing_requests().await?;
        outgoing::send_all(&self.inner.homeserver, &self.inner.machine, requests).await
    }
}

/// Builds a sync filter that leaves out every room, presence and account data event.
/// To-device messages, device lists and key counts are not subject to filters.
fn crypto_only_filter() -> FilterDefinition {
    FilterDefinition::ignore_all()
}

/// Returns settings that decrypt events from every device, whatever its cross-signing state.
fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted }
}

/// The `content.session_id` of an encrypted event.
#[derive(Deserialize)]
struct SessionIdField {
    session_id: Option<String>,
}

/// The fields of a decrypted event that [`DecryptedEvent`] lists separately.
#[derive(Deserialize)]
struct DecryptedFields {
    event_id: OwnedEventId,
    sender: OwnedUserId,
    #[serde(rename = "type")]
    event_type: String,
    content: serde_json::Value,
}
