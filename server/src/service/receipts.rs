//! Read receipts (`m.read`, `m.read.private`, threaded) and the fully-read marker's receipt side.

use std::sync::Arc;

use ruma::{RoomId, UserId};

use super::now_ms;
use super::stream::Stream;
use crate::error::Result;
use crate::storage::codec::prefix;
use crate::storage::tables::{ReceiptRecord, RECEIPTS};
use crate::storage::Db;

pub struct Receipts {
    db: Arc<Db>,
    stream: Arc<Stream>,
}

/// Builds the key part that separates receipts of one type per thread.
fn receipt_key(receipt_type: &str, thread_id: Option<&str>) -> String {
    format!("{receipt_type}|{}", thread_id.unwrap_or(""))
}

impl Receipts {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self { db, stream }
    }

    /// Stores a receipt and returns it. The caller wakes the room's members.
    pub fn set(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        receipt_type: &str,
        thread_id: Option<&str>,
        event_id: &str,
    ) -> Result<ReceiptRecord> {
        let position = self.stream.next()?;
        let record = ReceiptRecord {
            event_id: event_id.to_owned(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread_id.map(str::to_owned),
            ts: now_ms(),
            position: position.get(),
        };
        let key = (room_id.to_string(), user_id.to_string(), receipt_key(receipt_type, thread_id));
        self.db.put(&RECEIPTS, &key, &record)?;
        Ok(record)
    }

    /// Lists every receipt in the room as (user ID, receipt).
    pub fn in_room(&self, room_id: &RoomId) -> Result<Vec<(String, ReceiptRecord)>> {
        let records = self.db.scan_prefix(&RECEIPTS, &prefix(&[room_id.as_str()]))?;
        Ok(records.into_iter().map(|((_, user_id, _), record)| (user_id, record)).collect())
    }

    /// Returns the user's latest unthreaded or main-thread read receipt (public or private) in a room.
    pub fn latest_read(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<ReceiptRecord>> {
        let records =
            self.db.scan_prefix(&RECEIPTS, &prefix(&[room_id.as_str(), user_id.as_str()]))?;
        Ok(records
            .into_iter()
            .map(|(_, record)| record)
            .filter(|record| {
                record.receipt_type.starts_with("m.read")
                    && record.thread_id.as_deref().is_none_or(|thread| thread == "main")
            })
            .max_by_key(|record| record.position))
    }

    /// The user's read receipts (public or private) in a room, as (thread ID, event ID); `None`
    /// for unthreaded receipts, `main` for the main timeline, else a thread root.
    pub fn read_receipts(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Vec<(Option<String>, String)>> {
        let records =
            self.db.scan_prefix(&RECEIPTS, &prefix(&[room_id.as_str(), user_id.as_str()]))?;
        Ok(records
            .into_iter()
            .map(|(_, record)| record)
            .filter(|record| record.receipt_type.starts_with("m.read"))
            .map(|record| (record.thread_id, record.event_id))
            .collect())
    }
}
