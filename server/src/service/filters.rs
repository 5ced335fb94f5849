//! Stored sync filters.

use std::sync::{Arc, Mutex};

use ruma::UserId;
use serde_json::value::RawValue;

use crate::error::Result;
use crate::storage::codec::prefix;
use crate::storage::tables::FILTERS;
use crate::storage::Db;

pub struct Filters {
    db: Arc<Db>,
    /// Serialises filter ID allocation per server; IDs are per user and increase from 0.
    allocate_lock: Mutex<()>,
}

impl Filters {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, allocate_lock: Mutex::new(()) }
    }

    /// Stores a filter and returns its new ID.
    pub fn create(&self, user_id: &UserId, filter: &RawValue) -> Result<String> {
        let _guard = self.allocate_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let existing = self.db.scan_prefix(&FILTERS, &prefix(&[user_id.as_str()]))?;
        let next = existing
            .iter()
            .filter_map(|((_, filter_id), _)| filter_id.parse::<u64>().ok())
            .max()
            .map_or(0, |max| max + 1);
        let filter_id = next.to_string();
        self.db.put(&FILTERS, &(user_id.to_string(), filter_id.clone()), &filter.to_owned())?;
        Ok(filter_id)
    }

    pub fn get(&self, user_id: &UserId, filter_id: &str) -> Result<Option<Box<RawValue>>> {
        Ok(self.db.get(&FILTERS, &(user_id.to_string(), filter_id.to_owned()))?)
    }

    /// Deletes every stored filter of a user.
    pub fn erase_user(&self, user_id: &UserId) -> Result<()> {
        let _guard = self.allocate_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut batch = self.db.batch();
        batch.delete_prefix(&FILTERS, &prefix(&[user_id.as_str()]))?;
        self.db.commit(batch)?;
        Ok(())
    }
}
