//! Registration tokens, made by an admin and spent by `/register`'s
//! `m.login.registration_token` stage.

use std::sync::{Arc, Mutex};

use super::accounts::random_string;
use super::now_ms;
use crate::error::{Error, Result};
use crate::storage::tables::{RegistrationTokenRecord, REGISTRATION_TOKENS};
use crate::storage::Db;

/// The characters the spec allows in a registration token, and its maximum length.
const TOKEN_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
const MAX_TOKEN_LENGTH: usize = 64;

pub struct RegistrationTokens {
    db: Arc<Db>,
    /// Serialises check-and-spend, so a single-use token admits exactly one registration.
    spend_lock: Mutex<()>,
}

impl RegistrationTokens {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, spend_lock: Mutex::new(()) }
    }

    /// Creates a token; `token` None generates a random one.
    pub fn create(
        &self,
        token: Option<String>,
        uses_allowed: Option<u64>,
        expiry_ts: Option<u64>,
    ) -> Result<String> {
        let token = token.unwrap_or_else(|| random_string(16));
        if token.is_empty()
            || token.len() > MAX_TOKEN_LENGTH
            || !token.chars().all(|c| TOKEN_CHARS.contains(c))
        {
            return Err(Error::invalid_param(format!(
                "A registration token is 1 to {MAX_TOKEN_LENGTH} characters from [A-Za-z0-9._~-]"
            )));
        }
        if self.db.get(&REGISTRATION_TOKENS, &token)?.is_some() {
            return Err(Error::invalid_param("That registration token already exists"));
        }
        let record = RegistrationTokenRecord {
            uses_allowed,
            completed: 0,
            expiry_ts,
            created_ts: now_ms(),
            revoked: false,
        };
        self.db.put(&REGISTRATION_TOKENS, &token, &record)?;
        tracing::info!(?uses_allowed, "registration token created");
        Ok(token)
    }

    pub fn list(&self) -> Result<Vec<(String, RegistrationTokenRecord)>> {
        Ok(self.db.scan_all(&REGISTRATION_TOKENS)?)
    }

    /// Revokes a token. Returns false if there is no such token.
    pub fn revoke(&self, token: &str) -> Result<bool> {
        let _guard = self.spend_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(mut record) = self.db.get(&REGISTRATION_TOKENS, &token.to_owned())? else {
            return Ok(false);
        };
        record.revoked = true;
        self.db.put(&REGISTRATION_TOKENS, &token.to_owned(), &record)?;
        tracing::info!("registration token revoked");
        Ok(true)
    }

    /// Whether the token exists and can still be used.
    pub fn is_valid(&self, token: &str) -> Result<bool> {
        let record = self.db.get(&REGISTRATION_TOKENS, &token.to_owned())?;
        Ok(record.is_some_and(|record| usable(&record)))
    }

    /// Spends one use of the token. Returns false if it is no longer valid.
    pub fn spend(&self, token: &str) -> Result<bool> {
        let _guard = self.spend_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(mut record) = self.db.get(&REGISTRATION_TOKENS, &token.to_owned())? else {
            return Ok(false);
        };
        if !usable(&record) {
            return Ok(false);
        }
        record.completed += 1;
        self.db.put(&REGISTRATION_TOKENS, &token.to_owned(), &record)?;
        Ok(true)
    }
}

fn usable(record: &RegistrationTokenRecord) -> bool {
    !record.revoked
        && record.uses_allowed.is_none_or(|allowed| record.completed < allowed)
        && record.expiry_ts.is_none_or(|expiry| now_ms() < expiry)
}
