//! Setting and revoking verification levels with their evidence, for the admin API and
//! `caduceus admin set-verification`.
//!
//! A change takes effect before the call returns: the directory entry and the profile badge are
//! updated, and when the level drops below what inviting needs, the user's pending invites are
//! withdrawn. Every change is written to the audit log with the actor.

use caduceus_directory::{Area, VerificationLevel};
use ruma::{EventId, OwnedUserId, UserId};
use serde_json::json;

use super::security::AuditSubject;
use super::{gating, now_ms, Services};
use crate::error::{Error, Result};
use crate::storage::tables::{DirectoryProfileRecord, EvidenceSource, VerificationEvidence};

/// Maximum length of a register name and of a registration number, in bytes.
const MAX_IDENTIFIER_BYTES: usize = 64;

/// Maximum length of an evidence note, in bytes.
const MAX_NOTE_BYTES: usize = 2000;

/// The reason given on the `leave` events that withdraw a revoked user's invites.
const WITHDRAWN_REASON: &str =
    "The invitation was withdrawn because the inviter is no longer verified";

/// A new verification level and what comes with it.
#[derive(Debug, Clone, Default)]
pub struct VerificationUpdate {
    pub level: Option<VerificationLevel>,
    pub evidence: Option<VerificationEvidence>,
    pub professions: Vec<String>,
    pub specialties: Vec<String>,
    pub organisations: Vec<String>,
    pub areas: Vec<Area>,
    /// `None` keeps the stored choice, which is listed for a user without a record.
    pub listed: Option<bool>,
}

/// Checks evidence values that serde cannot: lengths, and that a register match names the
/// register and the number.
pub fn check_evidence(evidence: &VerificationEvidence) -> Result<()> {
    let identifiers =
        [("register", &evidence.register), ("registration_number", &evidence.registration_number)];
    for (name, value) in identifiers {
        if let Some(value) = value {
            if value.trim().is_empty() || value.len() > MAX_IDENTIFIER_BYTES {
                return Err(Error::invalid_param(format!(
                    "evidence.{name} must be 1 to {MAX_IDENTIFIER_BYTES} bytes"
                )));
            }
        }
    }
    if evidence.note.as_ref().is_some_and(|note| note.len() > MAX_NOTE_BYTES) {
        return Err(Error::invalid_param(format!(
            "evidence.note is longer than {MAX_NOTE_BYTES} bytes"
        )));
    }
    if evidence.source == EvidenceSource::Register
        && (evidence.register.is_none() || evidence.registration_number.is_none())
    {
        return Err(Error::invalid_param(
            "Evidence from a register needs evidence.register and evidence.registration_number",
        ));
    }
    Ok(())
}

/// Sets a user's level, evidence and directory attributes, replacing the stored ones. A
/// `pending` level clears evidence and attributes. `actor` names who made the change in the
/// audit log; `reason` is recorded with it. Returns the stored record.
pub async fn set_verification(
    services: &Services,
    actor: &str,
    user_id: &UserId,
    update: VerificationUpdate,
    reason: Option<&str>,
) -> Result<DirectoryProfileRecord> {
    let level = update.level.unwrap_or(VerificationLevel::Pending);
    let Some(user) = services.accounts.get_user(user_id)? else {
        return Err(Error::not_found(format!("The user {user_id} does not exist")));
    };
    if user.deactivated && level != VerificationLevel::Pending {
        return Err(Error::not_found(format!("The user {user_id} is deactivated")));
    }
    if let Some(evidence) = &update.evidence {
        check_evidence(evidence)?;
    }
    let previous = services.directory.record(user_id)?;
    let previous_level =
        previous.as_ref().map_or(VerificationLevel::Pending, |record| record.level);
    let listed = update.listed.or(previous.map(|record| record.listed)).unwrap_or(true);
    let record = if level == VerificationLevel::Pending {
        DirectoryProfileRecord {
            level,
            professions: Vec::new(),
            specialties: Vec::new(),
            organisations: Vec::new(),
            areas: Vec::new(),
            listed,
            updated_ts: now_ms(),
            evidence: None,
        }
    } else {
        DirectoryProfileRecord {
            level,
            professions: update.professions,
            specialties: update.specialties,
            organisations: update.organisations,
            areas: update.areas,
            listed,
            updated_ts: now_ms(),
            evidence: update.evidence,
        }
    };

    let directory = services.directory.clone();
    let stored = record.clone();
    let stored_user_id = user_id.to_owned();
    tokio::task::spawn_blocking(move || directory.set_record(&stored_user_id, stored)).await??;

    let evidence = record.evidence.as_ref();
    let detail = json!({
        "actor": actor,
        "from": previous_level.as_str(),
        "to": level.as_str(),
        "source": evidence.map(|evidence| evidence.source.as_str()),
        "register": evidence.and_then(|evidence| evidence.register.as_deref()),
        "reason": reason,
    });
    let subject = AuditSubject { user_id: Some(user_id.as_str()), ..Default::default() };
    services.security.audit("verification_changed", &subject, detail)?;
    tracing::info!(%user_id, actor, from = previous_level.as_str(), to = level.as_str(), "verification level changed");

    let may_invite = gating::allows(services.config.verification.invite, level);
    if level < previous_level && !may_invite {
        let withdrawn = withdraw_invites(services, user_id).await?;
        if withdrawn > 0 {
            tracing::info!(%user_id, withdrawn, "pending invites of a revoked user withdrawn");
        }
    }
    Ok(record)
}

/// Withdraws the invites a user sent that are still pending, except those to exempt users,
/// whom everyone may reach. Returns how many were withdrawn.
///
/// The inviter rescinds each invite with a `leave` for the invitee, which the authorization
/// rules allow when the inviter may kick. Otherwise the invite is declined in the invitee's
/// name, which the rules always allow for an invited user; the reason says why.
async fn withdraw_invites(services: &Services, inviter: &UserId) -> Result<usize> {
    let mut withdrawn = 0;
    for (room_id, membership) in services.rooms.rooms_of_user(inviter)? {
        if membership.membership != "join" {
            continue;
        }
        let mut invitees: Vec<OwnedUserId> = Vec::new();
        for (member, record) in services.rooms.members(&room_id)? {
            if record.membership != "invite" || gating::is_exempt(services, &member) {
                continue;
            }
            let event_id = EventId::parse(&record.event_id)
                .map_err(|error| anyhow::anyhow!("stored invite event ID: {error}"))?;
            let sender = services.rooms.get_pdu(&event_id)?.map(|pdu| pdu.sender());
            if sender.as_deref() == Some(inviter.as_str()) {
                invitees.push(member);
            }
        }
        for invitee in invitees {
            let rescinded = services
                .rooms
                .set_membership_of(&room_id, inviter, &invitee, "leave", Some(WITHDRAWN_REASON))
                .await;
            match rescinded {
                Ok(_) => {}
                Err(Error::Matrix { code: crate::error::ErrorCode::Forbidden, .. }) => {
                    services.rooms.leave(&room_id, &invitee, Some(WITHDRAWN_REASON)).await?;
                }
                Err(error) => return Err(error),
            }
            withdrawn += 1;
        }
    }
    Ok(withdrawn)
}
