//! Login protection and the audit log: account lockout after wrong passwords, a limit on failed
//! logins per source address, and a record of security events.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caduceus_config::SecurityConfig;
use ruma::UserId;
use serde_json::Value;

use super::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::tables::{AuditRecord, LoginAttemptsRecord, AUDIT_LOG, LOGIN_ATTEMPTS};
use crate::storage::Db;

/// Placeholder for personal data in audit events after an account's erasure.
const ERASED_VALUE: &str = "(erased)";

/// The window over which failed logins per address are counted.
const ADDRESS_WINDOW: Duration = Duration::from_secs(60);

pub struct Security {
    db: Arc<Db>,
    config: SecurityConfig,
    /// Recent failed logins per source address. Kept in memory: a restart clears them, while
    /// the per-account lockouts, which matter more, are stored.
    address_failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// The last audit sequence number handed out.
    audit_sequence: AtomicU64,
}

/// The user, device and address an audit event concerns.
#[derive(Debug, Default, Clone)]
pub struct AuditSubject<'a> {
    pub user_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub address: Option<IpAddr>,
}

fn too_many(retry_after: Duration, message: String) -> Error {
    Error::new(ErrorCode::LimitExceeded { retry_after: Some(retry_after) }, message)
}

fn describe(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 120 {
        format!("{} minutes", seconds.div_ceil(60))
    } else {
        format!("{} seconds", seconds.max(1))
    }
}

impl Security {
    pub fn new(db: Arc<Db>, config: SecurityConfig) -> Self {
        Self {
            db,
            config,
            address_failures: Mutex::new(HashMap::new()),
            audit_sequence: AtomicU64::new(0),
        }
    }

    /// Rejects a login while the account is locked, with the time left.
    pub fn check_locked(&self, user_id: &UserId) -> Result<()> {
        let record = self.db.get(&LOGIN_ATTEMPTS, &user_id.to_string())?.unwrap_or_default();
        let now = now_ms();
        if record.locked_until_ts > now {
            let left = Duration::from_millis(record.locked_until_ts - now);
            return Err(too_many(
                left,
                format!("Too many wrong passwords: this account is locked for {}", describe(left)),
            ));
        }
        Ok(())
    }

    /// Rejects a login from an address that failed too often in the last minute.
    pub fn check_address(&self, address: Option<IpAddr>) -> Result<()> {
        let limit = self.config.failed_logins_per_address_per_minute as usize;
        let Some(address) = address.filter(|_| limit > 0) else { return Ok(()) };
        let mut failures = self.address_failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(recent) = failures.get_mut(&address) else { return Ok(()) };
        while recent.front().is_some_and(|at| at.elapsed() >= ADDRESS_WINDOW) {
            recent.pop_front();
        }
        if recent.len() >= limit {
            let oldest = recent.front().copied().unwrap_or_else(Instant::now);
            let left = ADDRESS_WINDOW.saturating_sub(oldest.elapsed());
            return Err(too_many(
                left,
                format!(
                    "Too many failed logins from this address; try again in {}",
                    describe(left)
                ),
            ));
        }
        Ok(())
    }

    /// Counts a failed login against its source address.
    fn note_address_failure(&self, address: Option<IpAddr>) {
        if let Some(address) = address {
            let mut failures = self.address_failures.lock().unwrap_or_else(|p| p.into_inner());
            failures.entry(address).or_default().push_back(Instant::now());
        }
    }

    /// Records a login that named no possible account of this server, such as an email
    /// address that no account has. It counts against the address like a wrong password.
    pub fn record_unknown_failure(&self, address: Option<IpAddr>) -> Result<()> {
        self.note_address_failure(address);
        let subject = AuditSubject { address, ..Default::default() };
        self.audit("login_failed", &subject, serde_json::json!({ "reason": "unknown user" }))
    }

    /// Records a login attempt refused because the account is locked. It counts against the
    /// address, so guessing on a locked account from one address is slowed too.
    pub fn record_locked_attempt(&self, user_id: &UserId, address: Option<IpAddr>) -> Result<()> {
        self.note_address_failure(address);
        let subject =
            AuditSubject { user_id: Some(user_id.as_str()), address, ..Default::default() };
        self.audit("login_refused_locked", &subject, Value::Null)
    }

    /// Records a wrong password. Returns how long the account is now locked, if this failure
    /// locked it.
    pub fn record_failure(
        &self,
        user_id: &UserId,
        address: Option<IpAddr>,
    ) -> Result<Option<Duration>> {
        self.note_address_failure(address);

        let key = user_id.to_string();
        let mut record = self.db.get(&LOGIN_ATTEMPTS, &key)?.unwrap_or_default();
        record.failures += 1;
        let mut locked_for = None;
        if record.failures >= self.config.lockout_threshold {
            let seconds = if record.lockouts == 0 {
                self.config.first_lockout_secs
            } else {
                self.config.later_lockout_secs
            };
            let duration = Duration::from_secs(seconds);
            record.lockouts += 1;
            record.failures = 0;
            record.locked_until_ts = now_ms() + duration.as_millis() as u64;
            locked_for = Some(duration);
        }
        self.db.put(&LOGIN_ATTEMPTS, &key, &record)?;

        let subject =
            AuditSubject { user_id: Some(user_id.as_str()), address, ..Default::default() };
        self.audit("login_failed", &subject, Value::Null)?;
        if let Some(duration) = locked_for {
            tracing::warn!(user_id = %user_id, seconds = duration.as_secs(), "account locked after wrong passwords");
            let detail =
                serde_json::json!({ "seconds": duration.as_secs(), "lockout": record.lockouts });
            self.audit("account_locked", &subject, detail)?;
        }
        Ok(locked_for)
    }

    /// Clears the failure count after a successful login.
    pub fn record_success(&self, user_id: &UserId) -> Result<()> {
        let key = user_id.to_string();
        if self.db.get(&LOGIN_ATTEMPTS, &key)?.is_some() {
            self.db.put(&LOGIN_ATTEMPTS, &key, &LoginAttemptsRecord::default())?;
        }
        Ok(())
    }

    /// Lifts a lockout and clears the failure counts, so the next wrong password starts from
    /// the first lockout again. Returns whether the account was locked.
    pub fn unlock(&self, user_id: &UserId) -> Result<bool> {
        let key = user_id.to_string();
        let Some(record) = self.db.get(&LOGIN_ATTEMPTS, &key)? else { return Ok(false) };
        self.db.put(&LOGIN_ATTEMPTS, &key, &LoginAttemptsRecord::default())?;
        Ok(record.locked_until_ts > now_ms())
    }

    /// Builds the error for the attempt that locked the account.
    pub fn locked_error(&self, duration: Duration) -> Error {
        too_many(
            duration,
            format!("Too many wrong passwords: this account is locked for {}", describe(duration)),
        )
    }

    /// Appends a security event to the audit log.
    pub fn audit(&self, kind: &str, subject: &AuditSubject<'_>, detail: Value) -> Result<()> {
        let ts = now_ms();
        let candidate = ts << 16;
        let sequence = self
            .audit_sequence
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(candidate.max(last + 1)))
            .map(|last| candidate.max(last + 1))
            .unwrap_or(candidate);
        let record = AuditRecord {
            ts,
            kind: kind.to_owned(),
            user_id: subject.user_id.map(str::to_owned),
            device_id: subject.device_id.map(str::to_owned),
            address: subject.address.map(|address| address.to_string()),
            detail,
        };
        self.db.put(&AUDIT_LOG, &sequence, &record)?;
        Ok(())
    }

    /// Replaces the email addresses in a user's audit events with `(erased)`, keeping the events
    /// themselves. Returns how many events changed. Reads the whole log, which is fine for the
    /// rare account deletion.
    pub fn erase_emails(&self, user_id: &UserId) -> Result<usize> {
        let mut batch = self.db.batch();
        let mut changed = 0;
        for (sequence, mut record) in self.db.scan_all(&AUDIT_LOG)? {
            if record.user_id.as_deref() != Some(user_id.as_str()) {
                continue;
            }
            let Some(email) = record.detail.get_mut("email") else { continue };
            *email = Value::from(ERASED_VALUE);
            batch.put(&AUDIT_LOG, &sequence, &record);
            changed += 1;
        }
        self.db.commit(batch)?;
        Ok(changed)
    }

    /// Returns the newest `limit` audit events, oldest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let records = self.db.scan_all(&AUDIT_LOG)?;
        let skip = records.len().saturating_sub(limit);
        Ok(records.into_iter().skip(skip).map(|(_, record)| record).collect())
    }
}
