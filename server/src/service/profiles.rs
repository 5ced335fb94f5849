//! Profiles: display name, avatar URL and extensible fields with namespaced keys.

use std::sync::Arc;

use ruma::UserId;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorCode, Result};
use crate::storage::tables::{ProfileRecord, PROFILES};
use crate::storage::Db;

pub const DISPLAYNAME: &str = "displayname";
pub const AVATAR_URL: &str = "avatar_url";

/// Keys under this namespace are set by the server (the verification badge) and read-only for
/// users.
pub const SERVER_NAMESPACE: &str = "org.caduceus.";

/// Longest profile field key, in bytes, as the specification sets it.
pub const MAX_KEY_BYTES: usize = 255;

/// Largest profile as serialised JSON, in bytes, as the specification sets it.
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// Learns of every stored profile change, such as the directory that indexes display names.
pub trait ProfileObserver: Send + Sync {
    /// Called after the field `key` of the user's profile was set or removed.
    fn profile_changed(&self, user_id: &UserId, key: &str);
}

pub struct Profiles {
    db: Arc<Db>,
    observers: Vec<Arc<dyn ProfileObserver>>,
}

impl Profiles {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, observers: Vec::new() }
    }

    pub fn with_observer(mut self, observer: Arc<dyn ProfileObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    pub fn get(&self, user_id: &UserId) -> Result<Map<String, Value>> {
        let record = self.db.get(&PROFILES, &user_id.to_string())?.unwrap_or_default();
        Ok(record.fields.into_iter().collect())
    }

    pub fn get_field(&self, user_id: &UserId, key: &str) -> Result<Option<Value>> {
        let record = self.db.get(&PROFILES, &user_id.to_string())?.unwrap_or_default();
        Ok(record.fields.get(key).cloned())
    }

    /// Sets (or with `None`, removes) a field that the user controls.
    pub fn set_field_by_user(
        &self,
        user_id: &UserId,
        key: &str,
        value: Option<Value>,
    ) -> Result<()> {
        check_user_key(key)?;
        if let Some(value) = &value {
            check_value(key, value)?;
        }
        self.set_field(user_id, key, value)
    }

    /// Sets or removes a field without the user-facing key rules, for the server's own fields.
    pub fn set_field(&self, user_id: &UserId, key: &str, value: Option<Value>) -> Result<()> {
        let mut record = self.db.get(&PROFILES, &user_id.to_string())?.unwrap_or_default();
        match value {
            Some(value) => {
                record.fields.insert(key.to_owned(), value);
            }
            None => {
                record.fields.remove(key);
            }
        }
        let size = serde_json::to_vec(&record.fields).map(|bytes| bytes.len()).unwrap_or(0);
        if size > MAX_PROFILE_BYTES {
            return Err(Error::new(
                ErrorCode::ProfileTooLarge,
                format!("The profile would be {size} bytes; the limit is {MAX_PROFILE_BYTES}"),
            ));
        }
        self.db.put(&PROFILES, &user_id.to_string(), &record)?;
        for observer in &self.observers {
            observer.profile_changed(user_id, key);
        }
        Ok(())
    }

    /// Removes every field, as on deactivation.
    pub fn clear(&self, user_id: &UserId) -> Result<()> {
        self.db.put(&PROFILES, &user_id.to_string(), &ProfileRecord::default())?;
        Ok(())
    }
}

fn check_user_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_param("The profile field key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorCode::KeyTooLarge,
            format!("Profile field keys are limited to {MAX_KEY_BYTES} bytes"),
        ));
    }
    let spec_defined = [DISPLAYNAME, AVATAR_URL, "m.tz"].contains(&key);
    if !spec_defined && !is_namespaced_identifier(key) {
        return Err(Error::invalid_param(format!(
            "The profile field key {key:?} must be displayname, avatar_url, m.tz or a namespaced \
             identifier such as org.example.field"
        )));
    }
    if key.starts_with(SERVER_NAMESPACE) {
        return Err(Error::forbidden(format!(
            "Profile fields under {SERVER_NAMESPACE} are set by the server and cannot be changed"
        )));
    }
    Ok(())
}

/// Checks the common namespaced identifier grammar: dot-separated lowercase segments in
/// reverse-DNS style, at least two, outside the `m.` namespace that the spec reserves.
fn is_namespaced_identifier(key: &str) -> bool {
    let segments: Vec<&str> = key.split('.').collect();
    segments.len() >= 2
        && !key.starts_with("m.")
        && segments.iter().all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

fn check_value(key: &str, value: &Value) -> Result<()> {
    match key {
        DISPLAYNAME | AVATAR_URL if !value.is_string() && !value.is_null() => {
            Err(Error::bad_json(format!("The profile field {key} must be a string")))
        }
        AVATAR_URL => {
            let url = value.as_str().unwrap_or_default();
            if !url.is_empty() && !url.starts_with("mxc://") {
                return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
