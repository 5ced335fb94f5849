//! Account data: per-user JSON documents, global or per room, keyed by event type.

use std::sync::Arc;

use ruma::UserId;
use serde_json::value::RawValue;

use super::stream::Stream;
use crate::error::Result;
use crate::storage::codec::prefix;
use crate::storage::tables::{ACCOUNT_DATA, ACCOUNT_DATA_CHANGES};
use crate::storage::Db;

/// One account data event: room ID (None for global data), event type and content.
pub type AccountDataEvent = (Option<String>, String, Box<RawValue>);

pub struct AccountData {
    db: Arc<Db>,
    stream: Arc<Stream>,
}

/// The room part of the key for global account data.
const GLOBAL: &str = "";

impl AccountData {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self { db, stream }
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
        let room = room_id.unwrap_or(GLOBAL).to_owned();
        let position = self.stream.next()?;
        let mut batch = self.db.batch();
        batch.put(
            &ACCOUNT_DATA,
            &(user_id.to_string(), room.clone(), event_type.to_owned()),
            &content.to_owned(),
        );
        batch.put(
            &ACCOUNT_DATA_CHANGES,
            &(user_id.to_string(), position.get()),
            &(room, event_type.to_owned()),
        );
        self.db.commit(batch)?;
        drop(position);
        self.stream.notify([user_id]);
        Ok(())
    }

    /// Every global account data event of a user, as (type, content).
    pub fn list_global(&self, user_id: &UserId) -> Result<Vec<(String, Box<RawValue>)>> {
        let records = self.db.scan_prefix(&ACCOUNT_DATA, &prefix(&[user_id.as_str(), GLOBAL]))?;
        Ok(records.into_iter().map(|((_, _, event_type), content)| (event_type, content)).collect())
    }
}

impl AccountData {
    /// Account data changed in `(since, up_to]`, as (room ID or None, type, content), latest
    /// content only.
    pub fn changes(
        &self,
        user_id: &UserId,
        since: u64,
        up_to: u64,
    ) -> Result<Vec<AccountDataEvent>> {
        let start = (user_id.to_string(), since.saturating_add(1));
        let changes =
            self.db.scan_range(&ACCOUNT_DATA_CHANGES, &start, &prefix(&[user_id.as_str()]))?;
        let mut seen = std::collections::BTreeSet::new();
        let mut output = Vec::new();
        for ((_, position), (room, event_type)) in changes {
            if position > up_to || !seen.insert((room.clone(), event_type.clone())) {
                continue;
            }
            let room_id = (!room.is_empty()).then_some(room);
            if let Some(content) = self.get(user_id, room_id.as_deref(), &event_type)? {
                output.push((room_id, event_type, content));
            }
        }
        Ok(output)
    }

    /// Every account data event of a user, global and per room.
    pub fn all(&self, user_id: &UserId) -> Result<Vec<AccountDataEvent>> {
        let records = self.db.scan_prefix(&ACCOUNT_DATA, &prefix(&[user_id.as_str()]))?;
        Ok(records
            .into_iter()
            .map(|((_, room, event_type), content)| {
                ((!room.is_empty()).then_some(room), event_type, content)
            })
            .collect())
    }

    /// Deletes every account data event of a user, global and per room, push rules included,
    /// and the change log that `/sync` reads them from.
    pub fn erase_user(&self, user_id: &UserId) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete_prefix(&ACCOUNT_DATA, &prefix(&[user_id.as_str()]))?;
        batch.delete_prefix(&ACCOUNT_DATA_CHANGES, &prefix(&[user_id.as_str()]))?;
        self.db.commit(batch)?;
        Ok(())
    }
}
