//! Accounts, passwords, access tokens and devices.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use caduceus_config::SessionsConfig;
use rand::distributions::{Alphanumeric, Uniform};
use rand::{Rng, RngCore};
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use super::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{
    AccessTokenRecord, DeviceKind, DeviceRecord, RefreshTokenRecord, UserRecord, ACCESS_TOKENS,
    DEVICES, LINKED_SESSIONS, REFRESH_TOKENS, USERS,
};
use crate::storage::{Batch, Db};

mod sessions;
#[cfg(test)]
mod tests;
pub use sessions::{EndedSession, RefreshedTokens};

/// Shortest password accepted at registration and on password change.
pub const MIN_PASSWORD_LENGTH: usize = 8;

/// Maximum password length in bytes, because hashing longer ones only serves a denial of service.
pub const MAX_PASSWORD_LENGTH: usize = 1024;

/// The user and device behind an access token.
#[derive(Debug, Clone)]
pub struct Sender {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token_hash: Vec<u8>,
    /// The application service acting for the user, when the request carried its `as_token`.
    pub appservice_id: Option<String>,
    /// Whether the `[rate_limits]` checks skip this sender: an application service whose
    /// registration sets `rate_limited: false`.
    pub rate_limit_exempt: bool,
}

impl Sender {
    /// Returns whether the `[rate_limits]` checks skip this sender.
    pub fn is_rate_limit_exempt(&self) -> bool {
        self.rate_limit_exempt
    }
}

/// A new login: the token is returned once and then only its hash is kept.
#[derive(Debug)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    /// Set when the client requested a refresh token.
    pub refresh_token: Option<String>,
    /// How long the access token is valid: until a refresh is due or a linked session ends.
    pub expires_in: Option<Duration>,
    pub kind: DeviceKind,
    /// Primary devices this login signed out.
    pub replaced_device_ids: Vec<OwnedDeviceId>,
}

/// The parameters of a login or registration request.
#[derive(Debug, Clone, Default)]
pub struct SessionRequest {
    /// The device to sign in on; a new random ID when `None`.
    pub device_id: Option<OwnedDeviceId>,
    pub display_name: Option<String>,
    pub kind: DeviceKind,
    /// Whether the client supports refresh tokens.
    pub refresh_token: bool,
}

/// A device as listed to its owner.
#[derive(Debug, Clone)]
pub struct Device {
    pub device_id: OwnedDeviceId,
    pub record: DeviceRecord,
}

/// Keeps per-device state owned by another service in step with devices: end-to-end
/// encryption keys, device-list changes, queued to-device messages.
pub trait DeviceObserver: Send + Sync {
    /// Called after a new device is committed (not when a login reuses a device ID).
    fn device_created(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()>;

    /// Called after devices are deleted, with the IDs that existed.
    fn devices_deleted(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()>;
}

pub struct Accounts {
    db: Arc<Db>,
    server_name: OwnedServerName,
    /// Serialises the check-then-create step of registration, so two requests for one user ID
    /// cannot both succeed.
    create_lock: std::sync::Mutex<()>,
    /// Serialises the read-modify-write steps on a user's sessions (login, refresh, login
    /// token use), so two concurrent logins cannot both keep a primary device.
    session_lock: std::sync::Mutex<()>,
    sessions_config: SessionsConfig,
    device_observers: Vec<Arc<dyn DeviceObserver>>,
}

impl Accounts {
    pub fn new(db: Arc<Db>, server_name: OwnedServerName) -> Self {
        Self {
            db,
            server_name,
            create_lock: std::sync::Mutex::new(()),
            session_lock: std::sync::Mutex::new(()),
            sessions_config: SessionsConfig::default(),
            device_observers: Vec::new(),
        }
    }

    /// Sets the device and session policy; [`SessionsConfig::default`] applies otherwise.
    pub fn with_sessions_config(mut self, config: SessionsConfig) -> Self {
        self.sessions_config = config;
        self
    }

    /// Adds an observer that hears of every device created and deleted.
    pub fn with_device_observer(mut self, observer: Arc<dyn DeviceObserver>) -> Self {
        self.device_observers.push(observer);
        self
    }

    /// Checks a requested localpart: the characters the spec allows for new user IDs, and
    /// free on this server. Returns the full user ID.
    pub fn check_available(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid_chars = !localpart.is_empty()
            && localpart
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b));
        if !valid_chars {
            return Err(Error::new(
                ErrorCode::InvalidUsername,
                "A username may contain only lowercase letters, digits and . _ = - / +",
            ));
        }
        let user_id = UserId::parse_with_server_name(localpart, &self.server_name)
            .map_err(|_| Error::new(ErrorCode::InvalidUsername, "The username is too long"))?;
        if user_id.as_str().len() > 255 {
            return Err(Error::new(ErrorCode::InvalidUsername, "The username is too long"));
        }
        if self.db.get(&USERS, &user_id.to_string())?.is_some() {
            return Err(Error::new(ErrorCode::UserInUse, "That username is already taken"));
        }
        Ok(user_id)
    }

    pub fn get_user(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        Ok(self.db.get(&USERS, &user_id.to_string())?)
    }

    /// Returns up to `limit` accounts ordered by creation time, then user ID, starting after
    /// the account `after` names as (created_ts, user ID), and whether more follow.
    // NOTE: this reads and sorts every account per page, which is fine for one hospital's
    // thousands of users; a table keyed by creation time would make pages independent of size.
    pub fn users_created_after(
        &self,
        after: Option<&(u64, String)>,
        limit: usize,
    ) -> Result<(Vec<(OwnedUserId, UserRecord)>, bool)> {
        let mut users: Vec<(u64, String, UserRecord)> = self
            .db
            .scan_all(&USERS)?
            .into_iter()
            .map(|(user_id, record)| (record.created_ts, user_id, record))
            .filter(|(created_ts, user_id, _)| {
                after
                    .is_none_or(|(after_ts, after_id)| (created_ts, user_id) > (after_ts, after_id))
            })
            .collect();
        users.sort_by(|left, right| (left.0, &left.1).cmp(&(right.0, &right.1)));
        let more = users.len() > limit;
        let page = users
            .into_iter()
            .take(limit)
            .filter_map(|(_, user_id, record)| {
                UserId::parse(&user_id).ok().map(|user_id| (user_id, record))
            })
            .collect();
        Ok((page, more))
    }

    /// Checks whether the user exists and is not deactivated.
    pub fn is_active(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get_user(user_id)?.is_some_and(|user| !user.deactivated))
    }

    /// Creates an account. Fails with `M_USER_IN_USE` if the user ID was taken meanwhile.
    pub async fn create_user(
        &self,
        localpart: &str,
        password: Option<&str>,
        admin: bool,
    ) -> Result<OwnedUserId> {
        let password_hash = match password {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };

        let _guard = self.create_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let user_id = self.check_available(localpart)?;
        let record = UserRecord { password_hash, created_ts: now_ms(), deactivated: false, admin };
        self.db.put(&USERS, &user_id.to_string(), &record)?;
        tracing::info!(user_id = %user_id, "account created");
        Ok(user_id)
    }

    /// Checks a user's password. Unknown and deactivated users never match.
    pub async fn verify_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let Some(user) = self.get_user(user_id)? else {
            // Hash anyway so that the response takes as long for unknown users as for known ones.
            let _ = hash_password(password).await;
            return Ok(false);
        };
        let Some(stored) = user.password_hash else { return Ok(false) };
        if password.len() > MAX_PASSWORD_LENGTH {
            return Ok(false);
        }
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
        })
        .await?
        .map_err(|error| anyhow::anyhow!("stored password hash is invalid: {error}"))?;
        Ok(matches)
    }

    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = hash_password(password).await?;
        let mut user = self.get_user(user_id)?.ok_or_else(|| Error::not_found("No such user"))?;
        user.password_hash = Some(hash);
        self.db.put(&USERS, &user_id.to_string(), &user)?;
        Ok(())
    }

    /// Creates a primary device, or reuses `device_id` if the user already has it, and issues a
    /// new access token for it. A reused device's previous tokens stop working. Other devices
    /// are left alone whatever the policy says; logins go through [`Accounts::start_session`].
    pub fn create_session(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
    ) -> Result<Session> {
        let request = SessionRequest { device_id, display_name, ..Default::default() };
        self.open_session(user_id, request, false)
    }

    /// Signs a user in on a device, following the session policy: a primary login replaces
    /// the other primary devices when `single_primary_device` is set, and a linked session
    /// ends `linked_session_lifetime_secs` after it starts. A linked session cannot take over
    /// a primary device's ID.
    pub fn start_session(&self, user_id: &UserId, request: SessionRequest) -> Result<Session> {
        let replace = self.sessions_config.single_primary_device;
        self.open_session(user_id, request, replace)
    }

    fn open_session(
        &self,
        user_id: &UserId,
        request: SessionRequest,
        replace_primary: bool,
    ) -> Result<Session> {
        let device_id = request.device_id.unwrap_or_else(generate_device_id);
        let device_key = (user_id.to_string(), device_id.to_string());
        let now = now_ms();
        let session_ends_ts = (request.kind == DeviceKind::Linked)
            .then(|| now + self.sessions_config.linked_session_lifetime_secs * 1000);
        let refresh_token = request.refresh_token.then(generate_refresh_token);
        let access_expires_ts = refresh_token.as_ref().map(|_| {
            let expires = now + self.sessions_config.access_token_lifetime_secs * 1000;
            session_ends_ts.map_or(expires, |end| expires.min(end))
        });
        let access_token = generate_access_token();
        let token_hash = hash_token(&access_token);
        let refresh_hash = refresh_token.as_deref().map(hash_token);

        let _guard = self.session_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let existing = self.db.get(&DEVICES, &device_key)?;
        if request.kind == DeviceKind::Linked
            && existing.as_ref().is_some_and(|device| device.kind == DeviceKind::Primary)
        {
            return Err(Error::forbidden(format!(
                "The device ID {device_id} belongs to a device signed in with a password; \
                 a linked session needs a device ID of its own"
            )));
        }
        let is_new = existing.is_none();

        let mut batch = self.db.batch();
        let mut device = match existing {
            Some(mut device) => {
                revoke_device_tokens(&mut batch, &device);
                if request.display_name.is_some() {
                    device.display_name = request.display_name;
                }
                device
            }
            None => DeviceRecord {
                display_name: request.display_name,
                created_ts: now,
                access_token_hash: None,
                last_seen_ts: Some(now),
                last_seen_ip: None,
                kind: request.kind,
                session_ends_ts: None,
                refresh_token_hash: None,
                previous_refresh_token_hash: None,
            },
        };
        device.kind = request.kind;
        device.session_ends_ts = session_ends_ts;
        device.access_token_hash = Some(token_hash.clone());
        device.refresh_token_hash = refresh_hash.clone();
        device.previous_refresh_token_hash = None;
        batch.put(&DEVICES, &device_key, &device);
        match session_ends_ts {
            Some(end) => batch.put(&LINKED_SESSIONS, &device_key, &end),
            None => batch.delete(&LINKED_SESSIONS, &device_key),
        }
        batch.put(
            &ACCESS_TOKENS,
            &token_hash,
            &AccessTokenRecord {
                user_id: user_id.to_string(),
                device_id: device_id.to_string(),
                created_ts: now,
                expires_ts: access_expires_ts,
                session_ends_ts,
                replaces_refresh_token_hash: None,
            },
        );
        if let Some(refresh_hash) = &refresh_hash {
            let record = RefreshTokenRecord {
                user_id: user_id.to_string(),
                device_id: device_id.to_string(),
                created_ts: now,
            };
            batch.put(&REFRESH_TOKENS, refresh_hash, &record);
        }

        // The new primary device and the removal of the old ones commit in one batch, so a
        // crash leaves either the old primary or the new one signed in, never both or neither.
        let mut replaced_device_ids = Vec::new();
        if replace_primary && request.kind == DeviceKind::Primary {
            for other in self.list_devices(user_id)? {
                let is_primary_session = other.record.kind == DeviceKind::Primary
                    && other.record.access_token_hash.is_some();
                if other.device_id != device_id && is_primary_session {
                    delete_device_in_batch(
                        &mut batch,
                        user_id,
                        other.device_id.as_str(),
                        &other.record,
                    );
                    replaced_device_ids.push(other.device_id);
                }
            }
        }
        self.db.commit(batch)?;
        drop(_guard);
        tracing::info!(
            user_id = %user_id,
            device_id = %device_id,
            kind = ?request.kind,
            replaced = replaced_device_ids.len(),
            "session created"
        );

        if is_new {
            for observer in &self.device_observers {
                observer.device_created(user_id, &device_id)?;
            }
        }
        self.notify_deleted(user_id, &replaced_device_ids)?;

        let expires_in = access_expires_ts
            .or(session_ends_ts)
            .map(|end| Duration::from_millis(end.saturating_sub(now)));
        Ok(Session {
            user_id: user_id.to_owned(),
            device_id,
            access_token,
            refresh_token,
            expires_in,
            kind: request.kind,
            replaced_device_ids,
        })
    }

    /// Creates a device without an access token, such as a dehydrated device, which receives
    /// keys while no client is logged in on it. Fails with `M_INVALID_PARAM` if the user
    /// already has a device with this ID.
    pub fn create_device_without_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        {
            let _guard = self.create_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let key = (user_id.to_string(), device_id.to_string());
            if self.db.get(&DEVICES, &key)?.is_some() {
                return Err(Error::invalid_param(format!(
                    "You already have a device with the ID {device_id}; choose another ID"
                )));
            }
            let record = DeviceRecord {
                display_name,
                created_ts: now_ms(),
                access_token_hash: None,
                last_seen_ts: None,
                last_seen_ip: None,
                kind: DeviceKind::Primary,
                session_ends_ts: None,
                refresh_token_hash: None,
                previous_refresh_token_hash: None,
            };
            self.db.put(&DEVICES, &key, &record)?;
        }
        tracing::info!(user_id = %user_id, device_id = %device_id, "device without access token created");
        for observer in &self.device_observers {
            observer.device_created(user_id, device_id)?;
        }
        Ok(())
    }

    pub fn list_devices(&self, user_id: &UserId) -> Result<Vec<Device>> {
        let records = self.db.scan_prefix(&DEVICES, &prefix(&[user_id.as_str()]))?;
        Ok(records
            .into_iter()
            .map(|((_, device_id), record)| Device { device_id: device_id.into(), record })
            .collect())
    }

    pub fn get_device(&self, user_id: &UserId, device_id: &str) -> Result<Option<Device>> {
        let key = (user_id.to_string(), device_id.to_owned());
        Ok(self
            .db
            .get(&DEVICES, &key)?
            .map(|record| Device { device_id: device_id.into(), record }))
    }

    /// Renames a device. Returns false if the user has no such device.
    pub fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        display_name: Option<String>,
    ) -> Result<bool> {
        let key = (user_id.to_string(), device_id.to_owned());
        let Some(mut device) = self.db.get(&DEVICES, &key)? else { return Ok(false) };
        device.display_name = display_name;
        self.db.put(&DEVICES, &key, &device)?;
        Ok(true)
    }

    /// Deletes devices and revokes their access and refresh tokens; device IDs the user does
    /// not have are skipped.
    pub fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> Result<()> {
        let mut batch = self.db.batch();
        let mut deleted = Vec::new();
        {
            let _guard = self.session_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for device_id in device_ids {
                let key = (user_id.to_string(), device_id.clone());
                if let Some(device) = self.db.get(&DEVICES, &key)? {
                    delete_device_in_batch(&mut batch, user_id, device_id, &device);
                    deleted.push(OwnedDeviceId::from(device_id.as_str()));
                }
            }
            self.db.commit(batch)?;
        }
        tracing::info!(user_id = %user_id, count = deleted.len(), "devices deleted");
        self.notify_deleted(user_id, &deleted)
    }

    /// Tells the observers about deleted devices.
    fn notify_deleted(&self, user_id: &UserId, deleted: &[OwnedDeviceId]) -> Result<()> {
        // NOTE: observers run after the commit, so a crash in between leaves their state for
        // the deleted devices behind; key queries skip devices that no longer exist.
        if !deleted.is_empty() {
            for observer in &self.device_observers {
                observer.devices_deleted(user_id, deleted)?;
            }
        }
        Ok(())
    }

    /// Deletes every device of a user except `keep`, revoking their tokens.
    pub fn delete_other_devices(&self, user_id: &UserId, keep: Option<&str>) -> Result<()> {
        let device_ids: Vec<String> = self
            .list_devices(user_id)?
            .into_iter()
            .map(|device| device.device_id.to_string())
            .filter(|device_id| Some(device_id.as_str()) != keep)
            .collect();
        self.delete_devices(user_id, &device_ids)
    }

    /// Deactivates an account: it can no longer log in and all its devices are deleted.
    pub fn deactivate(&self, user_id: &UserId) -> Result<()> {
        self.delete_other_devices(user_id, None)?;
        let mut user = self.get_user(user_id)?.ok_or_else(|| Error::not_found("No such user"))?;
        user.deactivated = true;
        user.password_hash = None;
        self.db.put(&USERS, &user_id.to_string(), &user)?;
        tracing::info!(user_id = %user_id, "account deactivated");
        Ok(())
    }

    /// Records when and from where a device was last used, at most once a minute per device so
    /// that authenticated reads do not each cost a synced write.
    pub fn touch_device(&self, sender: &Sender, ip: Option<String>) -> Result<()> {
        const TOUCH_INTERVAL_MS: u64 = 60_000;
        let key = (sender.user_id.to_string(), sender.device_id.to_string());
        let Some(mut device) = self.db.get(&DEVICES, &key)? else { return Ok(()) };
        let now = now_ms();
        let stale =
            device.last_seen_ts.is_none_or(|seen| now.saturating_sub(seen) >= TOUCH_INTERVAL_MS);
        if stale || (ip.is_some() && device.last_seen_ip != ip) {
            device.last_seen_ts = Some(now);
            if ip.is_some() {
                device.last_seen_ip = ip;
            }
            self.db.put(&DEVICES, &key, &device)?;
        }
        Ok(())
    }

    pub fn list_users(&self) -> Result<Vec<(String, UserRecord)>> {
        Ok(self.db.scan_all(&USERS)?)
    }
}

/// Checks a new password against the length rules.
pub fn check_new_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(Error::new(
            ErrorCode::WeakPassword,
            format!("The password must be at least {MIN_PASSWORD_LENGTH} characters long"),
        ));
    }
    if password.len() > MAX_PASSWORD_LENGTH {
        return Err(Error::new(
            ErrorCode::WeakPassword,
            format!("The password must be at most {MAX_PASSWORD_LENGTH} bytes long"),
        ));
    }
    Ok(())
}

/// Hashes a password with argon2id (the crate's default parameters) off the async threads.
async fn hash_password(password: &str) -> Result<String> {
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|hash| hash.to_string())
    })
    .await?
    .map_err(|error| anyhow::anyhow!("password hashing failed: {error}"))?;
    Ok(hash)
}

/// Adds to `batch` the deletion of a device with its tokens and linked-session entry.
fn delete_device_in_batch(
    batch: &mut Batch<'_>,
    user_id: &UserId,
    device_id: &str,
    device: &DeviceRecord,
) {
    revoke_device_tokens(batch, device);
    let key = (user_id.to_string(), device_id.to_owned());
    batch.delete(&LINKED_SESSIONS, &key);
    batch.delete(&DEVICES, &key);
}

/// Adds to `batch` the deletion of a device's access and refresh tokens.
fn revoke_device_tokens(batch: &mut Batch<'_>, device: &DeviceRecord) {
    if let Some(hash) = &device.access_token_hash {
        batch.delete(&ACCESS_TOKENS, hash);
    }
    for hash in
        [&device.refresh_token_hash, &device.previous_refresh_token_hash].into_iter().flatten()
    {
        batch.delete(&REFRESH_TOKENS, hash);
    }
}

/// SHA-256 of an access, refresh or login token, the only form in which tokens are stored.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Generates an access token: 256 random bits, URL-safe base64 behind a recognisable prefix.
fn generate_access_token() -> String {
    generate_token("cad_")
}

fn generate_refresh_token() -> String {
    generate_token("cadr_")
}

fn generate_login_token() -> String {
    generate_token("cadl_")
}

/// Generates 256 random bits as URL-safe base64 behind `prefix`, which tells the kinds of
/// token apart in logs and bug reports.
fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn generate_device_id() -> OwnedDeviceId {
    let letters = Uniform::new_inclusive(b'A', b'Z');
    let id: String = rand::thread_rng().sample_iter(letters).take(10).map(char::from).collect();
    id.into()
}

/// Generates a random alphanumeric string, for session IDs and registration tokens.
pub fn random_string(length: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(length).map(char::from).collect()
}
