//! Invitations: a verified member invites a colleague by email, and the server mails the
//! colleague a single-use registration token bound to the invitation.

use std::sync::{Arc, Mutex};

use caduceus_directory::VerificationLevel;
use ruma::UserId;

use super::{now_ms, Services};
use crate::error::{Error, Result};
use crate::storage::tables::{InvitationRecord, INVITATIONS};
use crate::storage::Db;

/// The longest email address that SMTP accepts (RFC 5321: a 254-character path without the
/// angle brackets).
const MAX_EMAIL_LENGTH: usize = 254;

pub struct Invitations {
    db: Arc<Db>,
    /// Serialises counting a member's pending invitations with adding one.
    create_lock: Mutex<()>,
}

impl Invitations {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, create_lock: Mutex::new(()) }
    }

    /// Marks the invitation that carried `token`, if one did, as used by `user_id`. Returns the
    /// inviter's user ID.
    pub fn accept(&self, token: &str, user_id: &UserId) -> Result<Option<String>> {
        let key = token.to_owned();
        let Some(mut record) = self.db.get(&INVITATIONS, &key)? else { return Ok(None) };
        record.accepted_by = Some(user_id.to_string());
        self.db.put(&INVITATIONS, &key, &record)?;
        Ok(Some(record.inviter))
    }

    /// Returns the email address that `user_id` was invited at and registered with, if any.
    pub fn email_of(&self, user_id: &UserId) -> Result<Option<String>> {
        let records = self.db.scan_all(&INVITATIONS)?;
        Ok(records
            .into_iter()
            .find(|(_, record)| record.accepted_by.as_deref() == Some(user_id.as_str()))
            .map(|(_, record)| record.email))
    }

    /// Deletes every invitation that `user_id` sent or registered with, since each contains their
    /// user ID next to an email address. Returns the registration tokens of the unused ones,
    /// which the caller revokes.
    pub fn erase_user(&self, user_id: &UserId) -> Result<Vec<String>> {
        let _guard = self.create_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let user = user_id.as_str();
        let mut batch = self.db.batch();
        let mut unused = Vec::new();
        for (token, record) in self.db.scan_all(&INVITATIONS)? {
            if record.inviter != user && record.accepted_by.as_deref() != Some(user) {
                continue;
            }
            if record.accepted_by.is_none() {
                unused.push(token.clone());
            }
            batch.delete(&INVITATIONS, &token);
        }
        self.db.commit(batch)?;
        Ok(unused)
    }

    fn pending(&self, now: u64) -> Result<Vec<(String, InvitationRecord)>> {
        let records = self.db.scan_all(&INVITATIONS)?;
        Ok(records
            .into_iter()
            .filter(|(_, record)| record.accepted_by.is_none() && record.expiry_ts > now)
            .collect())
    }
}

/// Invites the owner of `email` to register: creates a single-use registration token that
/// expires with the invitation, and mails it. Only members verified at the `identity` or
/// `medical` level may invite.
pub async fn invite(
    services: &Services,
    inviter: &UserId,
    email: &str,
) -> Result<InvitationRecord> {
    let level = services.directory.level(inviter)?;
    if level == VerificationLevel::Pending {
        return Err(Error::forbidden(
            "Only verified members can invite colleagues; finish your verification first",
        ));
    }
    let email = normalise_email(email)?;
    let config = &services.config.invitations;
    let now = now_ms();
    let expiry_ts = now + config.expiry_hours * 60 * 60 * 1000;

    let (token, record) = {
        let invitations = &services.invitations;
        let _guard =
            invitations.create_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let pending = invitations.pending(now)?;
        // Mail systems treat local parts without regard to case, so this check does too.
        if pending.iter().any(|(_, record)| record.email.eq_ignore_ascii_case(&email)) {
            return Err(Error::invalid_param(format!(
                "An invitation to {email} is already waiting to be used"
            )));
        }
        let sent = pending.iter().filter(|(_, record)| record.inviter == inviter.as_str()).count();
        if sent >= config.max_pending_per_user as usize {
            return Err(Error::forbidden(format!(
                "You have {sent} unused invitations, the maximum allowed; wait until colleagues \
                 register or the invitations expire"
            )));
        }
        let token = services.registration_tokens.create(None, Some(1), Some(expiry_ts))?;
        let record = InvitationRecord {
            inviter: inviter.to_string(),
            email: email.clone(),
            created_ts: now,
            expiry_ts,
            accepted_by: None,
        };
        invitations.db.put(&INVITATIONS, &token, &record)?;
        (token, record)
    };

    // The invitation is stored before the mail goes out, because the mail carries its token.
    // A failed send withdraws it again, so the member can retry.
    let (subject, body) = invitation_mail(services, inviter, &token)?;
    if let Err(error) = services.mail.send(&email, &subject, &body).await {
        tracing::warn!(inviter = %inviter, error = ?error, "mailing an invitation failed");
        services.invitations.db.delete(&INVITATIONS, &token)?;
        services.registration_tokens.revoke(&token)?;
        return Err(error);
    }
    tracing::info!(inviter = %inviter, "invitation created and mailed");
    Ok(record)
}

/// Writes the invitation mail: who invites, where to register and the token.
fn invitation_mail(services: &Services, inviter: &UserId, token: &str) -> Result<(String, String)> {
    let name = services
        .profiles
        .get_field(inviter, "displayname")?
        .and_then(|name| name.as_str().map(str::to_owned))
        .map_or_else(|| inviter.to_string(), |name| format!("{name} ({inviter})"));
    let hours = services.config.invitations.expiry_hours;
    let validity = if hours.is_multiple_of(24) {
        format!("{} days", hours / 24)
    } else {
        format!("{hours} hours")
    };
    let subject = format!("{name} invites you to {}", services.server_name);
    let body = format!(
        "{name} invites you to {server}, a Matrix messaging service for verified healthcare \
         professionals.\n\n\
         To join, register with a Matrix client (such as Element) at {url} and enter this \
         registration token when the client asks for one:\n\n    {token}\n\n\
         The token admits one registration and expires in {validity}. If you did not expect \
         this invitation, ignore this mail.\n",
        server = services.server_name,
        url = services.config.public_baseurl(),
    );
    Ok((subject, body))
}

/// Checks the form of an email address and lowercases its domain.
fn normalise_email(email: &str) -> Result<String> {
    let invalid = || Error::invalid_param(format!("{email:?} is not a valid email address"));
    let email = email.trim();
    if email.len() > MAX_EMAIL_LENGTH {
        return Err(invalid());
    }
    let Some((local, domain)) = email.rsplit_once('@') else { return Err(invalid()) };
    let local_valid = !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && local.chars().all(|c| c.is_ascii_graphic());
    let domain_valid = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !local_valid || !domain_valid {
        return Err(invalid());
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses() {
        assert_eq!(
            normalise_email(" Jan.Jansen@UMCUtrecht.NL ").unwrap(),
            "Jan.Jansen@umcutrecht.nl"
        );
        for invalid in [
            "",
            "jan",
            "@umcutrecht.nl",
            "jan@",
            "jan@localhost",
            "jan@a..nl",
            "j an@x.nl",
            "a@b@c.nl",
        ] {
            assert!(normalise_email(invalid).is_err(), "{invalid:?} should be invalid");
        }
    }
}
