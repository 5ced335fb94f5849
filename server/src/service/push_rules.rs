//! Push rules, kept as the user's `m.push_rules` account data so that `/sync` can carry them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ruma::push::Ruleset;
use ruma::UserId;
use serde::{Deserialize, Serialize};

use super::account_data::AccountData;
use crate::error::Result;

pub const EVENT_TYPE: &str = "m.push_rules";

/// The content of the `m.push_rules` account data event.
#[derive(Serialize, Deserialize)]
struct PushRulesContent {
    global: Ruleset,
}

pub struct PushRules {
    account_data: Arc<AccountData>,
    /// Serialises read-modify-write of rulesets, so concurrent changes are not lost.
    update_lock: Mutex<()>,
    /// Increases with every change of any user's rules, so cached evaluations can tell they are
    /// stale.
    generation: AtomicU64,
}

impl PushRules {
    pub fn new(account_data: Arc<AccountData>) -> Self {
        Self { account_data, update_lock: Mutex::new(()), generation: AtomicU64::new(0) }
    }

    /// The user's ruleset: what they stored, or the spec's defaults if they changed nothing.
    pub fn get(&self, user_id: &UserId) -> Result<Ruleset> {
        match self.account_data.get(user_id, None, EVENT_TYPE)? {
            Some(raw) => match serde_json::from_str::<PushRulesContent>(raw.get()) {
                Ok(content) => Ok(content.global),
                Err(error) => {
                    tracing::error!(user_id = %user_id, error = %error, "stored push rules are unreadable; serving the defaults");
                    Ok(Ruleset::server_default(user_id))
                }
            },
            None => Ok(Ruleset::server_default(user_id)),
        }
    }

    /// The number of rule changes so far on this server.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Applies `change` to the user's ruleset and stores the result if it succeeds.
    pub fn update<T>(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<T>,
    ) -> Result<T> {
        let _guard = self.update_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ruleset = self.get(user_id)?;
        let output = change(&mut ruleset)?;
        let content = serde_json::value::to_raw_value(&PushRulesContent { global: ruleset })
            .map_err(|error| anyhow::anyhow!("push rules do not serialise: {error}"))?;
        self.account_data.set(user_id, None, EVENT_TYPE, &content)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(output)
    }
}
