//! Account data: per-user JSON documents, global or per room, keyed by event type.

use std::sync::Arc;

use ruma::UserId;
use serde_json::value::RawValue;

use crate::error::Result;
use crate::storage::codec::prefix;
use crate::storage::tables::ACCOUNT_DATA;
use crate::storage::Db;

pub struct AccountData {
    db: Arc<Db>,
}

/// The room part of the key for global account data.
const GLOBAL: &str = "";

impl AccountData {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    pub fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&str>,
        event_type: &str,
    ) -> Result<Option<Box<RawValue>>> {
        let key =
            (user_id.to_string(), room_id.unwrap_or(GLOBAL).to_owned(), event_type.to_owned());
        Ok(self.db.get(&ACCOUNT_DATA, &key)?)
    }

    pub fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&str>,
        event_type: &str,
        content: &RawValue,
    ) -> Result<()> {
        let key =
            (user_id.to_string(), room_id.unwrap_or(GLOBAL).to_owned(), event_type.to_owned());
        self.db.put(&ACCOUNT_DATA, &key, &content.to_owned())?;
        Ok(())
    }

    /// Every global account data event of a user, as (type, content).
    pub fn list_global(&self, user_id: &UserId) -> Result<Vec<(String, Box<RawValue>)>> {
        let records = self.db.scan_prefix(&ACCOUNT_DATA, &prefix(&[user_id.as_str(), GLOBAL]))?;
        Ok(records.into_iter().map(|((_, _, event_type), content)| (event_type, content)).collect())
    }
}
