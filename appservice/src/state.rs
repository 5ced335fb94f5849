//! The gatekeeper's durable state: one JSON file in the data dir, replaced atomically.
//!
//! Every change is written to `state.json.tmp`, flushed to disk, renamed over `state.json`, and
//! the folder is flushed, so after a crash the file contains either the old or the new state, never
//! a mix. The state is small (a few records per account), so rewriting it whole is cheap at the
//! size of a hospital. A transaction is acknowledged to the homeserver only after its events
//! are in the inbox here, so an event the homeserver considers delivered survives a crash.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many transaction IDs are remembered. The homeserver retries only its oldest unsent
/// transaction, so a short history is enough to recognise a repeat.
const REMEMBERED_TXNS: usize = 1000;

const STATE_FILE: &str = "state.json";

/// Everything the gatekeeper must not forget across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The device the bot got from its first login, reused by later logins.
    pub device_id: Option<String>,
    /// The position where the last look at the homeserver's account list stopped.
    pub users_cursor: Option<String>,
    /// IDs of transactions already accepted, oldest first.
    pub processed_txns: VecDeque<String>,
    /// Events accepted from transactions and not handled yet, oldest first.
    pub inbox: VecDeque<InboxItem>,
    /// The direct chat with each user.
    pub dm_rooms: BTreeMap<String, String>,
    /// Messages for people who have not joined the direct chat the bot opened, by room ID,
    /// oldest first. They are sent when the person joins, so the room key of an encrypted
    /// chat reaches the device they joined from.
    pub awaiting_join: BTreeMap<String, Vec<String>>,
    /// Encrypted events whose room key has not arrived yet, oldest first.
    pub awaiting_keys: Vec<AwaitingKey>,
    /// The room where cases are posted to officers.
    pub officers_room: Option<String>,
    /// The number of the next review case.
    pub next_case: u64,
    /// Cases waiting for an officer, by number.
    pub cases: BTreeMap<u64, ReviewCase>,
    /// Medical verifications this gatekeeper granted, by user ID; re-checked periodically.
    pub grants: BTreeMap<String, Grant>,
}

/// One event waiting to be handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    pub event: Value,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
}

/// An encrypted event waiting for its room key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitingKey {
    pub event: Value,
    /// The Megolm session the event was encrypted with, when its content names one.
    pub session_id: Option<String>,
    /// When the bot first failed to decrypt the event, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// An ambiguous name match waiting for an officer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewCase {
    pub user_id: String,
    pub register: String,
    pub number: String,
    pub display_name: String,
    pub register_name: String,
    /// The reason the bot could not decide alone, with the score.
    pub reason: String,
    pub created_ts: u64,
}

/// A medical verification granted by the gatekeeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub register: String,
    pub number: String,
    pub verified_at: u64,
}

/// The state file and the state in memory.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
}

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot access {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is damaged: {source}")]
    Damaged { path: String, source: serde_json::Error },
}

impl Store {
    /// Opens the state in `data_dir`, creating the folder and an empty state if needed.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        // The folder contains the bot's private keys and the messages people sent it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
                .map_err(io(data_dir))?;
        }
        let path = data_dir.join(STATE_FILE);
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Damaged {
                path: path.display().to_string(),
                source,
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(error) => return Err(io(&path)(error)),
        };
        Ok(Self { path, state: Mutex::new(state) })
    }

    /// Returns a value computed from the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state and writes it to disk before returning. If the write fails, the state
    /// in memory stays as it was.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, StoreError> {
        let mut state = self.lock();
        let mut next = state.clone();
        let result = f(&mut next);
        if next != *state {
            self.write(&next)?;
            *state = next;
        }
        Ok(result)
    }

    /// Records a transaction's events in the inbox, unless the transaction was seen before.
    /// Returns whether it was new.
    pub fn accept_transaction(&self, txn_id: &str, events: Vec<Value>) -> Result<bool, StoreError> {
        self.update(|state| {
            if state.processed_txns.iter().any(|seen| seen == txn_id) {
                return false;
            }
            state.processed_txns.push_back(txn_id.to_owned());
            while state.processed_txns.len() > REMEMBERED_TXNS {
                state.processed_txns.pop_front();
            }
            state.inbox.extend(events.into_iter().map(|event| InboxItem { event, attempts: 0 }));
            true
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the last state that was written intact.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, state: &State) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: self.path.display().to_string(), source };
        let bytes = serde_json::to_vec(state).expect("the state always serialises");
        let temporary = self.path.with_extension("json.tmp");
        let mut file = File::create(&temporary).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|dir| dir.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read(|state| state.clone()), State::default());

        store
            .update(|state| {
                state.users_cursor = Some("42".into());
                state.dm_rooms.insert("@a:x".into(), "!r:x".into());
                state.grants.insert(
                    "@a:x".into(),
                    Grant { register: "BIG".into(), number: "1".into(), verified_at: 5 },
                );
            })
            .unwrap();
        assert!(store.accept_transaction("t1", vec![json!({"type": "m.room.message"})]).unwrap());
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let state = store.read(State::clone);
        assert_eq!(state.users_cursor.as_deref(), Some("42"));
        assert_eq!(state.dm_rooms["@a:x"], "!r:x");
        assert_eq!(state.grants["@a:x"].register, "BIG");
        assert_eq!(state.inbox.len(), 1);
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[cfg(unix)]
    #[test]
    fn data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Store::open(&data_dir).unwrap();
        let mode = fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "mode {mode:o}");
    }

    #[test]
    fn repeated_transaction_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events = vec![json!({"event_id": "$1"})];
        assert!(store.accept_transaction("t1", events.clone()).unwrap());
        assert!(!store.accept_transaction("t1", events.clone()).unwrap());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.accept_transaction("t1", events).unwrap(), "remembered across restarts");
        assert_eq!(store.read(|state| state.inbox.len()), 1);

        store
            .update(|state| {
                state.processed_txns.extend((0..REMEMBERED_TXNS + 10).map(|n| format!("x{n}")))
            })
            .unwrap();
        store.accept_transaction("newest", Vec::new()).unwrap();
        assert_eq!(store.read(|state| state.processed_txns.len()), REMEMBERED_TXNS);
    }

    #[test]
    fn damaged_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let error = Store::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("damaged"), "{error}");
    }
}
