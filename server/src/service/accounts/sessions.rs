//! Token checks, refresh tokens, login tokens for linked sessions, and the end of linked
//! sessions.

use std::time::Duration;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};

use super::{
    delete_device_in_batch, generate_access_token, generate_login_token, generate_refresh_token,
    hash_token, Accounts, Sender,
};
use crate::error::{Error, ErrorCode, Result};
use crate::service::now_ms;
use crate::storage::tables::{
    AccessTokenRecord, DeviceKind, LoginTokenRecord, RefreshTokenRecord, ACCESS_TOKENS, DEVICES,
    LINKED_SESSIONS, LOGIN_TOKENS, REFRESH_TOKENS,
};

/// New tokens from `POST /refresh`.
#[derive(Debug)]
pub struct RefreshedTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// How long the new access token is valid.
    pub expires_in: Duration,
}

/// A linked session that reached its end and was removed by the expiry sweep.
#[derive(Debug, Clone)]
pub struct EndedSession {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

fn unknown_refresh_token() -> Error {
    Error::new(
        ErrorCode::UnknownToken { soft_logout: false },
        "The refresh token is unknown or was already replaced; log in again",
    )
}

fn linked_session_ended() -> Error {
    Error::new(
        ErrorCode::UnknownToken { soft_logout: false },
        "This linked session has ended; link this device again from your primary device",
    )
}

impl Accounts {
    /// Looks up the user and device behind an access token. Returns `None` for an unknown
    /// token. An expired token is `M_UNKNOWN_TOKEN` with `soft_logout` (the client can
    /// refresh it), and a token of an ended linked session is `M_UNKNOWN_TOKEN` without.
    pub fn authenticate(&self, access_token: &str) -> Result<Option<Sender>> {
        let token_hash = hash_token(access_token);
        let Some(record) = self.db.get(&ACCESS_TOKENS, &token_hash)? else {
            return Ok(None);
        };
        let now = now_ms();
        if record.session_ends_ts.is_some_and(|end| now >= end) {
            return Err(linked_session_ended());
        }
        if record.expires_ts.is_some_and(|expires| now >= expires) {
            return Err(Error::new(
                ErrorCode::UnknownToken { soft_logout: true },
                "The access token has expired; use the refresh token to get a new one",
            ));
        }
        let user_id = UserId::parse(&record.user_id)
            .map_err(|e| anyhow::anyhow!("stored user ID {:?} is invalid: {e}", record.user_id))?;
        if record.replaces_refresh_token_hash.is_some() {
            self.confirm_refresh(&token_hash)?;
        }
        Ok(Some(Sender {
            user_id,
            device_id: record.device_id.into(),
            access_token_hash: token_hash,
            appservice_id: None,
            rate_limit_exempt: false,
        }))
    }

    /// Revokes the refresh token that an access token replaced, now that the client has used
    /// the new access token and so received the refresh response.
    fn confirm_refresh(&self, token_hash: &[u8]) -> Result<()> {
        let _guard = self.session_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let token_hash = token_hash.to_vec();
        // Reread under the lock: another request may have confirmed or revoked it meanwhile.
        let Some(mut record) = self.db.get(&ACCESS_TOKENS, &token_hash)? else { return Ok(()) };
        let Some(replaced) = record.replaces_refresh_token_hash.take() else { return Ok(()) };
        let mut batch = self.db.batch();
        batch.delete(&REFRESH_TOKENS, &replaced);
        batch.put(&ACCESS_TOKENS, &token_hash, &record);
        let device_key = (record.user_id.clone(), record.device_id.clone());
        if let Some(mut device) = self.db.get(&DEVICES, &device_key)? {
            if device.previous_refresh_token_hash.as_ref() == Some(&replaced) {
                device.previous_refresh_token_hash = None;
                batch.put(&DEVICES, &device_key, &device);
            }
        }
        self.db.commit(batch)?;
        Ok(())
    }

    /// Issues a new access token and refresh token for the device behind `refresh_token`.
    ///
    /// The presented refresh token stays valid until the new access token or the new refresh
    /// token is used, so a client that lost the response can retry; retrying revokes the
    /// tokens the lost response carried. The old access token stops working at once. A linked
    /// session's new access token never outlives the session.
    pub fn refresh(&self, refresh_token: &str) -> Result<RefreshedTokens> {
        let presented = hash_token(refresh_token);
        let _guard = self.session_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(record) = self.db.get(&REFRESH_TOKENS, &presented)? else {
            return Err(unknown_refresh_token());
        };
        let device_key = (record.user_id.clone(), record.device_id.clone());
        let Some(mut device) = self.db.get(&DEVICES, &device_key)? else {
            self.db.delete(&REFRESH_TOKENS, &presented)?;
            return Err(unknown_refresh_token());
        };
        let is_current = device.refresh_token_hash.as_ref() == Some(&presented);
        let is_previous = device.previous_refresh_token_hash.as_ref() == Some(&presented);
        if !is_current && !is_previous {
            self.db.delete(&REFRESH_TOKENS, &presented)?;
            return Err(unknown_refresh_token());
        }
        let now = now_ms();
        if device.session_ends_ts.is_some_and(|end| now >= end) {
            return Err(linked_session_ended());
        }

        let access_token = generate_access_token();
        let access_hash = hash_token(&access_token);
        let new_refresh_token = generate_refresh_token();
        let new_refresh_hash = hash_token(&new_refresh_token);
        let lifetime_ms = self.sessions_config.access_token_lifetime_secs * 1000;
        let expires_ts =
            device.session_ends_ts.map_or(now + lifetime_ms, |end| end.min(now + lifetime_ms));

        let mut batch = self.db.batch();
        if let Some(old_access) = device.access_token_hash.take() {
            batch.delete(&ACCESS_TOKENS, &old_access);
        }
        if is_current {
            // Using the current refresh token proves the previous refresh response arrived.
            if let Some(previous) = device.previous_refresh_token_hash.take() {
                batch.delete(&REFRESH_TOKENS, &previous);
            }
        } else if let Some(unused) = device.refresh_token_hash.take() {
            // A retry with the previous token: the tokens of the lost response never reached
            // the client.
            batch.delete(&REFRESH_TOKENS, &unused);
        }
        device.previous_refresh_token_hash = Some(presented.clone());
        device.refresh_token_hash = Some(new_refresh_hash.clone());
        device.access_token_hash = Some(access_hash.clone());
        batch.put(&DEVICES, &device_key, &device);
        batch.put(
            &ACCESS_TOKENS,
            &access_hash,
            &AccessTokenRecord {
                user_id: record.user_id.clone(),
                device_id: record.device_id.clone(),
                created_ts: now,
                expires_ts: Some(expires_ts),
                session_ends_ts: device.session_ends_ts,
                replaces_refresh_token_hash: Some(presented),
            },
        );
        batch.put(
            &REFRESH_TOKENS,
            &new_refresh_hash,
            &RefreshTokenRecord {
                user_id: record.user_id.clone(),
                device_id: record.device_id.clone(),
                created_ts: now,
            },
        );
        self.db.commit(batch)?;
        tracing::debug!(user_id = %record.user_id, device_id = %record.device_id, "access token refreshed");
        Ok(RefreshedTokens {
            access_token,
            refresh_token: new_refresh_token,
            expires_in: Duration::from_millis(expires_ts - now),
        })
    }

    /// Checks that a device may link new sessions: only primary devices may, so that a linked
    /// session cannot extend itself by linking another.
    pub fn check_can_link_sessions(&self, sender: &Sender) -> Result<()> {
        let device = self.get_device(&sender.user_id, sender.device_id.as_str())?;
        match device {
            Some(device) if device.record.kind == DeviceKind::Primary => Ok(()),
            _ => Err(Error::forbidden(
                "Only your primary device (the one you signed in on with your password) can \
                 link new sessions; scan the code or request the login token there",
            )),
        }
    }

    /// Returns whether a device may link new sessions, for the `m.get_login_token`
    /// capability.
    pub fn can_link_sessions(&self, sender: &Sender) -> Result<bool> {
        let device = self.get_device(&sender.user_id, sender.device_id.as_str())?;
        Ok(device.is_some_and(|device| device.record.kind == DeviceKind::Primary))
    }

    /// Issues a single-use login token for the sender's account. Returns the token and how
    /// long it stays valid.
    pub fn issue_login_token(&self, sender: &Sender) -> Result<(String, Duration)> {
        self.check_can_link_sessions(sender)?;
        let lifetime = Duration::from_secs(self.sessions_config.login_token_lifetime_secs);
        let token = generate_login_token();
        let now = now_ms();
        let record = LoginTokenRecord {
            user_id: sender.user_id.to_string(),
            issued_by_device_id: sender.device_id.to_string(),
            created_ts: now,
            expires_ts: now + lifetime.as_millis() as u64,
        };
        self.db.put(&LOGIN_TOKENS, &hash_token(&token), &record)?;
        tracing::info!(user_id = %sender.user_id, device_id = %sender.device_id, "login token issued");
        Ok((token, lifetime))
    }

    /// Spends a login token and returns its user. Each token admits one login, used or not
    /// within its lifetime; an unknown, spent or expired token is `M_FORBIDDEN`.
    pub fn consume_login_token(&self, token: &str) -> Result<OwnedUserId> {
        let invalid = || Error::forbidden("The login token is invalid, expired or already used");
        let hash = hash_token(token);
        let record = {
            let _guard = self.session_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(record) = self.db.get(&LOGIN_TOKENS, &hash)? else {
                return Err(invalid());
            };
            self.db.delete(&LOGIN_TOKENS, &hash)?;
            record
        };
        if now_ms() >= record.expires_ts {
            return Err(invalid());
        }
        let user_id = UserId::parse(&record.user_id)
            .map_err(|e| anyhow::anyhow!("stored user ID {:?} is invalid: {e}", record.user_id))?;
        Ok(user_id)
    }

    /// Deletes the linked sessions whose time is up, with the same cleanup as signing out, and
    /// the expired login tokens. Returns the sessions it ended.
    pub fn end_expired_sessions(&self) -> Result<Vec<EndedSession>> {
        let now = now_ms();
        let expired_tokens: Vec<Vec<u8>> = self
            .db
            .scan_all(&LOGIN_TOKENS)?
            .into_iter()
            .filter(|(_, record)| now >= record.expires_ts)
            .map(|(hash, _)| hash)
            .collect();
        if !expired_tokens.is_empty() {
            let mut batch = self.db.batch();
            for hash in &expired_tokens {
                batch.delete(&LOGIN_TOKENS, hash);
            }
            self.db.commit(batch)?;
        }

        let mut ended = Vec::new();
        for ((user_id, device_id), ends_ts) in self.db.scan_all(&LINKED_SESSIONS)? {
            if now < ends_ts {
                continue;
            }
            let Ok(user_id) = UserId::parse(&user_id) else {
                tracing::error!(user_id, "a linked session has an invalid stored user ID");
                continue;
            };
            if self.end_session_if_expired(&user_id, &device_id, now)? {
                tracing::info!(user_id = %user_id, device_id, "linked session ended");
                ended.push(EndedSession { user_id, device_id: device_id.into() });
            }
        }
        Ok(ended)
    }

    /// Deletes a linked session's device if the session is still due to end at `now`: a
    /// password login on the same device ID meanwhile makes it primary and keeps it.
    fn end_session_if_expired(&self, user_id: &UserId, device_id: &str, now: u64) -> Result<bool> {
        let key = (user_id.to_string(), device_id.to_owned());
        let existed = {
            let _guard = self.session_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = self.db.get(&LINKED_SESSIONS, &key)?.is_some_and(|end| now >= end);
            if !due {
                return Ok(false);
            }
            let mut batch = self.db.batch();
            let device = self.db.get(&DEVICES, &key)?;
            match &device {
                Some(device) => delete_device_in_batch(&mut batch, user_id, device_id, device),
                None => batch.delete(&LINKED_SESSIONS, &key),
            }
            self.db.commit(batch)?;
            device.is_some()
        };
        if existed {
            self.notify_deleted(user_id, &[OwnedDeviceId::from(device_id)])?;
        }
        Ok(existed)
    }
}
