//! Account deletion on request: a user requests it, an administrator approves or rejects, and approval
//! deactivates the account and erases its personal data.
//!
//! What approval erases: the profile (display name, avatar URL and custom fields), the directory
//! record and index entry, account data with push rules, filters, key backups, devices with
//! their keys and queued to-device messages, cross-signing keys, invitations sent or used, and the
//! email addresses in the user's audit events. Events the user sent to rooms stay, as other
//! members' history, and so do the audit events, with user ID and source address, as the record
//! of who did what.

use std::sync::{Arc, Mutex};

use ruma::UserId;
use serde_json::json;

use super::now_ms;
use super::security::AuditSubject;
use super::Services;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::tables::{DeletionRequestRecord, DeletionState, DELETION_REQUESTS};
use crate::storage::Db;

/// The maximum length of a reason from a user or an administrator, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// The kinds of personal data that approval erases, as named in the audit log.
const ERASED: &[&str] = &[
    "profile",
    "directory",
    "account_data",
    "push_rules",
    "filters",
    "key_backups",
    "devices",
    "device_keys",
    "cross_signing_keys",
    "invitations",
    "audit_log_emails",
];

pub struct DeletionRequests {
    db: Arc<Db>,
    /// Serialises reading a request's state with changing it, so one request is decided once.
    lock: Mutex<()>,
}

fn check_reason(reason: Option<&str>) -> Result<()> {
    if reason.is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS) {
        return Err(Error::invalid_param(format!(
            "The reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

fn no_open_request(user_id: &UserId) -> Error {
    Error::not_found(format!("{user_id} has no open deletion request"))
}

impl DeletionRequests {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, lock: Mutex::new(()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the user's request: the open one, or the last decided one.
    pub fn get(&self, user_id: &UserId) -> Result<Option<DeletionRequestRecord>> {
        Ok(self.db.get(&DELETION_REQUESTS, &user_id.to_string())?)
    }

    /// Returns every request, open and decided, oldest first.
    pub fn list(&self) -> Result<Vec<(String, DeletionRequestRecord)>> {
        let mut requests = self.db.scan_all(&DELETION_REQUESTS)?;
        requests.sort_by_key(|(_, record)| record.requested_ts);
        Ok(requests)
    }

    /// Records a request. A user has at most one open request: while one is pending it is
    /// returned unchanged, and `created` is false.
    pub fn open(
        &self,
        user_id: &UserId,
        reason: Option<String>,
    ) -> Result<(DeletionRequestRecord, bool)> {
        check_reason(reason.as_deref())?;
        let _guard = self.lock();
        let key = user_id.to_string();
        if let Some(existing) = self.db.get(&DELETION_REQUESTS, &key)? {
            if existing.state == DeletionState::Pending {
                return Ok((existing, false));
            }
        }
        let record = DeletionRequestRecord {
            state: DeletionState::Pending,
            reason: reason.filter(|reason| !reason.trim().is_empty()),
            requested_ts: now_ms(),
            decided_ts: None,
            decision_reason: None,
        };
        self.db.put(&DELETION_REQUESTS, &key, &record)?;
        Ok((record, true))
    }

    /// Withdraws the user's open request.
    pub fn withdraw(&self, user_id: &UserId) -> Result<DeletionRequestRecord> {
        self.decide(user_id, DeletionState::Withdrawn, None)
    }

    /// Moves an open request to `state`. Fails with `M_NOT_FOUND` when none is open.
    fn decide(
        &self,
        user_id: &UserId,
        state: DeletionState,
        decision_reason: Option<String>,
    ) -> Result<DeletionRequestRecord> {
        check_reason(decision_reason.as_deref())?;
        let _guard = self.lock();
        let key = user_id.to_string();
        let mut record = self
            .db
            .get(&DELETION_REQUESTS, &key)?
            .filter(|record| record.state == DeletionState::Pending)
            .ok_or_else(|| no_open_request(user_id))?;
        record.state = state;
        record.decided_ts = Some(now_ms());
        record.decision_reason = decision_reason.filter(|reason| !reason.trim().is_empty());
        if state == DeletionState::Approved {
            // The user's own words are personal data too.
            record.reason = None;
        }
        self.db.put(&DELETION_REQUESTS, &key, &record)?;
        Ok(record)
    }

    fn check_open(&self, user_id: &UserId) -> Result<()> {
        match self.get(user_id)? {
            Some(record) if record.state == DeletionState::Pending => Ok(()),
            _ => Err(no_open_request(user_id)),
        }
    }
}

/// Records a user's deletion request, after the handler confirmed their password.
pub fn request(
    services: &Services,
    subject: &AuditSubject<'_>,
    user_id: &UserId,
    reason: Option<String>,
) -> Result<DeletionRequestRecord> {
    let (record, created) = services.deletion_requests.open(user_id, reason)?;
    if created {
        tracing::info!(user_id = %user_id, "account deletion requested");
        services.security.audit("deletion_requested", subject, serde_json::Value::Null)?;
    }
    Ok(record)
}

/// Withdraws a user's open deletion request.
pub fn withdraw(
    services: &Services,
    subject: &AuditSubject<'_>,
    user_id: &UserId,
) -> Result<DeletionRequestRecord> {
    let record = services.deletion_requests.withdraw(user_id)?;
    services.security.audit("deletion_withdrawn", subject, serde_json::Value::Null)?;
    Ok(record)
}

/// Rejects an open request; the account stays as it is.
pub fn reject(
    services: &Services,
    user_id: &UserId,
    admin: Option<&UserId>,
    reason: Option<String>,
) -> Result<DeletionRequestRecord> {
    let record = services.deletion_requests.decide(user_id, DeletionState::Rejected, reason)?;
    tracing::info!(user_id = %user_id, "account deletion rejected");
    let subject = AuditSubject { user_id: Some(user_id.as_str()), ..Default::default() };
    services.security.audit("deletion_rejected", &subject, decided_by(admin))?;
    Ok(record)
}

/// Approves an open request: deactivates the account, erases its personal data and records
/// both in the audit log.
pub async fn approve(
    services: &Services,
    user_id: &UserId,
    admin: Option<&UserId>,
) -> Result<DeletionRequestRecord> {
    services.deletion_requests.check_open(user_id)?;
    let invited_at = services.invitations.email_of(user_id)?;

    // The confirmation goes to the account's own address, or else to the address its
    // invitation was sent to; deactivation removes the account's addresses.
    let removed_emails = deactivate(services, user_id).await?;
    let email = removed_emails.first().cloned().or(invited_at);
    erase_personal_data(services, user_id)?;
    let record = services.deletion_requests.decide(user_id, DeletionState::Approved, None)?;

    tracing::info!(user_id = %user_id, "account deletion approved and personal data erased");
    let subject = AuditSubject { user_id: Some(user_id.as_str()), ..Default::default() };
    services.security.audit("deletion_approved", &subject, decided_by(admin))?;
    services.security.audit("personal_data_erased", &subject, json!({ "erased": ERASED }))?;

    if let Some(email) = email {
        // The account is already gone, so a failed mail is logged, not returned.
        let body = format!(
            "As you requested, your account {user_id} on {} has been deleted. Your profile, \
             settings, devices, keys and key backups are erased, and you can no longer log in. \
             Messages you sent stay in their conversations.\n",
            services.server_name
        );
        if let Err(error) = services.mail.send(&email, "Your account has been deleted", &body).await
        {
            tracing::warn!(user_id = %user_id, error = ?error, "mailing the deletion confirmation failed");
        }
    }
    Ok(record)
}

fn decided_by(admin: Option<&UserId>) -> serde_json::Value {
    match admin {
        Some(admin) => json!({ "by": admin.as_str() }),
        None => json!({ "by": "admin CLI" }),
    }
}

/// Deactivates an account: it loses its profile, its devices and access tokens, its password
/// and its directory entry, and can no longer log in.
pub async fn deactivate(services: &Services, user_id: &UserId) -> Result<Vec<String>> {
    if services.accounts.get_user(user_id)?.is_none() {
        return Err(Error::new(ErrorCode::NotFound, format!("No user {user_id} exists")));
    }
    services.profiles.clear(user_id)?;
    services.accounts.deactivate(user_id)?;
    let removed_emails = services.threepids.remove_all(user_id).await?;
    let directory = services.directory.clone();
    let removed_user_id = user_id.to_owned();
    tokio::task::spawn_blocking(move || directory.remove_user(&removed_user_id)).await??;
    Ok(removed_emails)
}

/// Erases what deactivation leaves: account data and push rules, filters, key backups,
/// cross-signing keys, invitations and the email addresses in the audit log.
fn erase_personal_data(services: &Services, user_id: &UserId) -> Result<()> {
    services.account_data.erase_user(user_id)?;
    services.filters.erase_user(user_id)?;
    services.key_backup.erase_user(user_id)?;
    services.keys.erase_cross_signing_keys(user_id)?;
    for token in services.invitations.erase_user(user_id)? {
        services.registration_tokens.revoke(&token)?;
    }
    services.security.erase_emails(user_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use caduceus_directory::VerificationLevel;
    use ruma::serde::Raw;
    use serde_json::value::to_raw_value;

    use super::*;
    use crate::service::test_support::{assert_error, server};
    use crate::storage::tables::DirectoryProfileRecord;

    #[tokio::test]
    async fn approval_erases_personal_data() {
        let server = server();
        let services = &server.services;
        let alice = server.user("alice", &["PHONE", "LAPTOP"]).await;
        let bob = server.user("bob", &["PHONE"]).await;

        services.profiles.set_field(&alice, "displayname", Some(json!("Dr. Alice"))).unwrap();
        let content = to_raw_value(&json!({ "theme": "dark" })).unwrap();
        services.account_data.set(&alice, None, "org.example.settings", &content).unwrap();
        services.account_data.set(&bob, None, "org.example.settings", &content).unwrap();
        services.filters.create(&alice, &to_raw_value(&json!({})).unwrap()).unwrap();
        let algorithm = Raw::from_json(
            to_raw_value(&json!({
                "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                "auth_data": {
                    "public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",
                    "signatures": {},
                },
            }))
            .unwrap(),
        );
        services.key_backup.create_version(&alice, &algorithm).unwrap();
        let record = DirectoryProfileRecord {
            level: VerificationLevel::Identity,
            professions: vec!["physician".to_owned()],
            specialties: Vec::new(),
            organisations: Vec::new(),
            areas: Vec::new(),
            listed: true,
            updated_ts: now_ms(),
            evidence: None,
        };
        services.directory.set_record(&alice, record).unwrap();
        let invitation =
            super::super::invitations::invite(services, &alice, "jan@umc.example").await.unwrap();
        let token = services
            .registration_tokens
            .list()
            .unwrap()
            .into_iter()
            .map(|(token, _)| token)
            .next()
            .expect("the invitation made a token");
        assert_eq!(invitation.inviter, alice.as_str());

        let alice_subject = AuditSubject { user_id: Some(alice.as_str()), ..Default::default() };
        let bob_subject = AuditSubject { user_id: Some(bob.as_str()), ..Default::default() };
        let added = |email: &str| json!({ "email": email });
        services.security.audit("email_added", &alice_subject, added("alice@umc.example")).unwrap();
        services.security.audit("email_added", &bob_subject, added("bob@umc.example")).unwrap();

        let subject = AuditSubject::default();
        request(services, &subject, &alice, Some("I am retiring".to_owned())).unwrap();
        let approved = approve(services, &alice, None).await.unwrap();
        assert_eq!(approved.state, DeletionState::Approved);
        assert_eq!(approved.reason, None, "the user's reason is erased with the account");

        assert!(!services.accounts.is_active(&alice).unwrap());
        assert!(services.accounts.list_devices(&alice).unwrap().is_empty());
        assert!(services.profiles.get(&alice).unwrap().is_empty(), "the profile is empty");
        assert!(services.account_data.all(&alice).unwrap().is_empty());
        assert_eq!(services.account_data.all(&bob).unwrap().len(), 1, "bob keeps his data");
        assert!(services.filters.get(&alice, "0").unwrap().is_none());
        assert_error(services.key_backup.latest_version(&alice), ErrorCode::NotFound);
        assert_eq!(services.directory.record(&alice).unwrap(), None);
        assert!(!services.registration_tokens.is_valid(&token).unwrap(), "the token is revoked");

        let kinds: Vec<String> = services
            .security
            .audit_log(100)
            .unwrap()
            .into_iter()
            .map(|record| record.kind)
            .collect();
        for kind in ["deletion_requested", "deletion_approved", "personal_data_erased"] {
            assert!(kinds.iter().any(|k| k == kind), "the audit log lacks {kind}: {kinds:?}");
        }
        let emails: Vec<(Option<String>, serde_json::Value)> = services
            .security
            .audit_log(100)
            .unwrap()
            .into_iter()
            .filter(|record| record.kind == "email_added")
            .map(|record| (record.user_id, record.detail["email"].clone()))
            .collect();
        assert_eq!(
            emails,
            [
                (Some(alice.to_string()), json!("(erased)")),
                (Some(bob.to_string()), json!("bob@umc.example")),
            ],
            "only the erased account's address is gone from the audit log"
        );
    }

    #[tokio::test]
    async fn one_open_request_per_user() {
        let server = server();
        let services = &server.services;
        let alice = server.user("alice", &["PHONE"]).await;
        let subject = AuditSubject::default();

        let first = request(services, &subject, &alice, Some("first".to_owned())).unwrap();
        let second = request(services, &subject, &alice, Some("second".to_owned())).unwrap();
        assert_eq!(first, second, "the open request is returned unchanged");

        let rejected = reject(services, &alice, None, Some("Open cases".to_owned())).unwrap();
        assert_eq!(rejected.state, DeletionState::Rejected);
        assert_eq!(rejected.decision_reason.as_deref(), Some("Open cases"));
        assert_error(reject(services, &alice, None, None), ErrorCode::NotFound);
        assert_error(approve(services, &alice, None).await, ErrorCode::NotFound);
        assert!(services.accounts.is_active(&alice).unwrap(), "rejection keeps the account");

        let again = request(services, &subject, &alice, None).unwrap();
        assert_eq!(again.state, DeletionState::Pending);
        assert_eq!(withdraw(services, &subject, &alice).unwrap().state, DeletionState::Withdrawn);
        assert_error(withdraw(services, &subject, &alice), ErrorCode::NotFound);

        let long = "x".repeat(MAX_REASON_CHARS + 1);
        assert_error(request(services, &subject, &alice, Some(long)), ErrorCode::InvalidParam);
    }
}
