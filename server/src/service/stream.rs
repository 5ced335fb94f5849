//! The global stream: one increasing position orders everything a client can sync (events,
//! receipts, typing, to-device messages, device-list changes, account data), and a per-user
//! notifier wakes waiting `/sync` requests.
//!
//! Positions are handed out from blocks reserved in the database: before the first position of
//! a block is used, the end of the block is stored with a synced write. After a crash the next
//! start continues after the reserved block, so a position is never reused, at the cost of a gap.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ruma::{OwnedUserId, UserId};
use tokio::sync::Notify;

use crate::error::Result;
use crate::storage::tables::META;
use crate::storage::Db;

const RESERVED_KEY: &str = "stream_reserved_up_to";

/// How many positions one synced reservation covers.
const BLOCK: u64 = 10_000;

pub struct Stream {
    db: Arc<Db>,
    /// The last position handed out.
    current: AtomicU64,
    /// The end of the reserved block; guarded so only one caller reserves the next block.
    reserved_up_to: Mutex<u64>,
    /// Positions handed out whose records are not committed yet.
    in_flight: Mutex<BTreeSet<u64>>,
    waiters: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
}

/// A position being written. Dropping it, after the commit or on failure, makes it visible.
pub struct Position<'a> {
    stream: &'a Stream,
    value: u64,
}

impl Position<'_> {
    pub fn get(&self) -> u64 {
        self.value
    }
}

impl Drop for Position<'_> {
    fn drop(&mut self) {
        let mut in_flight =
            self.stream.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        in_flight.remove(&self.value);
    }
}

impl Stream {
    pub fn open(db: Arc<Db>) -> Result<Self> {
        let reserved =
            db.get(&META, &RESERVED_KEY.to_owned())?.and_then(|value| value.as_u64()).unwrap_or(0);
        Ok(Self {
            db,
            current: AtomicU64::new(reserved),
            reserved_up_to: Mutex::new(reserved),
            in_flight: Mutex::new(BTreeSet::new()),
            waiters: Mutex::new(HashMap::new()),
        })
    }

    /// The highest position below which every position handed out is committed or abandoned.
    /// `/sync` reads up to this position and reports it as `next_batch`, so a record committed
    /// late with a lower position is never skipped.
    pub fn visible(&self) -> u64 {
        let in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match in_flight.first() {
            Some(first) => first - 1,
            None => self.current.load(Ordering::SeqCst),
        }
    }

    /// Hands out the next position. The caller writes its record with it and then drops the
    /// returned handle (after the commit), which makes the position visible.
    pub fn next(&self) -> Result<Position<'_>> {
        let position = {
            let mut in_flight =
                self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let position = self.current.fetch_add(1, Ordering::SeqCst) + 1;
            in_flight.insert(position);
            position
        };
        let handle = Position { stream: self, value: position };

        let mut reserved =
            self.reserved_up_to.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if position > *reserved {
            let new_end = position + BLOCK;
            self.db.put(&META, &RESERVED_KEY.to_owned(), &serde_json::json!(new_end))?;
            *reserved = new_end;
        }
        Ok(handle)
    }

    fn notify_handle(&self, user_id: &UserId) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        waiters.entry(user_id.to_owned()).or_insert_with(|| Arc::new(Notify::new())).clone()
    }

    /// Returns the handle a `/sync` request waits on. Create the `notified()` future and
    /// `enable()` it before checking for new data, so a notification between the check and the
    /// wait is not lost.
    pub fn subscribe(&self, user_id: &UserId) -> Arc<Notify> {
        self.notify_handle(user_id)
    }

    /// Wakes every waiting `/sync` of these users.
    pub fn notify<'a>(&self, user_ids: impl IntoIterator<Item = &'a UserId>) {
        let waiters = self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for user_id in user_ids {
            if let Some(notify) = waiters.get(user_id) {
                notify.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_increase_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let stream = Stream::open(Arc::new(Db::open(dir.path()).unwrap())).unwrap();
            let first = stream.next().unwrap().get();
            let second = stream.next().unwrap().get();
            assert!(second > first);
            second
        };
        let stream = Stream::open(Arc::new(Db::open(dir.path()).unwrap())).unwrap();
        assert!(stream.next().unwrap().get() > last);
    }

    #[test]
    fn visible_waits_for_lower_positions() {
        let dir = tempfile::tempdir().unwrap();
        let stream = Stream::open(Arc::new(Db::open(dir.path()).unwrap())).unwrap();
        let start = stream.visible();
        let first = stream.next().unwrap();
        let second = stream.next().unwrap();
        drop(second);
        assert_eq!(stream.visible(), start, "the uncommitted lower position hides the higher one");
        drop(first);
        assert_eq!(stream.visible(), start + 2);
    }

    #[tokio::test]
    async fn notify_wakes_enabled_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let stream = Stream::open(Arc::new(Db::open(dir.path()).unwrap())).unwrap();
        let user_id = ruma::user_id!("@a:localhost");

        let handle = stream.subscribe(user_id);
        let notified = handle.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        stream.notify([user_id]);
        tokio::time::timeout(std::time::Duration::from_secs(1), notified)
            .await
            .expect("the waiter must wake");
    }
}
