//! Typing notifications, kept in memory: they expire within seconds and need not survive a
//! restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::stream::Stream;

/// The maximum typing timeout a client may set.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// Stream position of the last change, so `/sync` can tell whether to send the list.
    position: u64,
}

pub struct Typing {
    stream: Arc<Stream>,
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
}

impl Typing {
    pub fn new(stream: Arc<Stream>) -> Self {
        Self { stream, rooms: Mutex::new(HashMap::new()) }
    }

    /// Starts (with a timeout) or stops a user's typing notification.
    pub fn set(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        timeout: Option<Duration>,
    ) -> crate::error::Result<()> {
        let position = self.stream.next()?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = rooms.entry(room_id.to_owned()).or_default();
        match timeout {
            Some(timeout) => {
                room.users.insert(user_id.to_owned(), Instant::now() + timeout.min(MAX_TIMEOUT));
            }
            None => {
                room.users.remove(user_id);
            }
        }
        room.position = position.get();
        Ok(())
    }

    /// Returns the users typing now, and the position of the last change. An expiry noticed here is a
    /// change too and gets a new position, so the next incremental `/sync` reports it.
    pub fn current(&self, room_id: &RoomId) -> crate::error::Result<(Vec<OwnedUserId>, u64)> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(room) = rooms.get_mut(room_id) else { return Ok((Vec::new(), 0)) };
        let now = Instant::now();
        let before = room.users.len();
        room.users.retain(|_, until| *until > now);
        if room.users.len() != before {
            room.position = self.stream.next()?.get();
        }
        let mut users: Vec<OwnedUserId> = room.users.keys().cloned().collect();
        users.sort();
        Ok((users, room.position))
    }

    /// Returns the earliest moment a typing notification in these rooms expires, so a waiting `/sync`
    /// can wake to report it.
    pub fn next_expiry<'a>(
        &self,
        room_ids: impl IntoIterator<Item = &'a RoomId>,
    ) -> Option<Instant> {
        let rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        room_ids
            .into_iter()
            .filter_map(|room_id| rooms.get(room_id))
            .flat_map(|room| room.users.values().copied())
            .min()
    }
}
