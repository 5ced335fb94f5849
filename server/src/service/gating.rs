//! Gating: the verification level each way of making contact requires (the `[verification]`
//! settings), each user's own invite permission, and the users these rules never block.
//!
//! Handlers call these checks before they change anything, so a refused request leaves no
//! trace. A refusal is `M_FORBIDDEN` with a message that says what is missing.
//!
//! `keys/query` and `keys/claim` follow the lookup rule: a user below the `lookup` level gets
//! no devices for the people they may not look up.

use caduceus_config::MinimumLevel;
use caduceus_directory::VerificationLevel;
use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::Services;
use crate::error::{Error, Result};

/// Global account data type in which a user limits who may invite them.
pub const INVITE_PERMISSION_TYPE: &str = "org.caduceus.invite_permission";

/// Maximum number of user IDs an invite permission may list as exceptions.
const MAX_EXCEPTIONS: usize = 1000;

/// The step that gets a pending user verified, appended to refusals.
const HOW_TO_VERIFY: &str = "Send your registration number to the verification bot.";

/// Decides whether the gating rules skip a user: such a user is never blocked, and everyone,
/// pending users included, may reach them. These are the `[verification] support_users`.
/// The sender and namespace users of the verification gatekeeper, and of application services
/// marked `org.caduceus.trusted`, are exempt too.
pub fn is_exempt(services: &Services, user_id: &UserId) -> bool {
    services.config.verification.support_users.iter().any(|support| support == user_id.as_str())
        || services.appservices.is_trusted_user(user_id)
}

/// The set of users allowed to invite a user, from their `org.caduceus.invite_permission`
/// account data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitePermission {
    pub allow: InviteAllow,
    /// Users who may invite regardless of `allow`.
    pub exceptions: Vec<OwnedUserId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteAllow {
    /// Every verified user; the default.
    Verified,
    /// Users who share a joined room with the invitee.
    Contacts,
    /// Only the exceptions.
    None,
}

/// Parses and checks the content of an `org.caduceus.invite_permission` account data event:
/// `{"allow": "verified" | "contacts" | "none", "exceptions": ["@user:server", ...]}`.
/// A wrong JSON type is `M_BAD_JSON`, a wrong value `M_INVALID_PARAM`.
pub fn parse_invite_permission(content: &Value) -> Result<InvitePermission> {
    let Some(object) = content.as_object() else {
        return Err(Error::bad_json("The invite permission must be a JSON object"));
    };
    let allow = match object.get("allow") {
        Some(Value::String(allow)) => allow.as_str(),
        Some(_) => return Err(Error::bad_json("\"allow\" must be a string")),
        None => {
            return Err(Error::bad_json(
                "The invite permission needs \"allow\": \"verified\", \"contacts\" or \"none\"",
            ))
        }
    };
    let allow = match allow {
        "verified" => InviteAllow::Verified,
        "contacts" => InviteAllow::Contacts,
        "none" => InviteAllow::None,
        other => {
            return Err(Error::invalid_param(format!(
                "\"allow\" is {other:?}; use \"verified\", \"contacts\" or \"none\""
            )))
        }
    };
    let exceptions = match object.get("exceptions") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_EXCEPTIONS {
                return Err(Error::invalid_param(format!(
                    "\"exceptions\" lists {} users; the maximum is {MAX_EXCEPTIONS}",
                    items.len()
                )));
            }
            let mut exceptions = Vec::with_capacity(items.len());
            for item in items {
                let Some(text) = item.as_str() else {
                    return Err(Error::bad_json("\"exceptions\" must contain only user IDs"));
                };
                let user_id = UserId::parse(text).map_err(|_| {
                    Error::invalid_param(format!("{text:?} in \"exceptions\" is not a user ID"))
                })?;
                exceptions.push(user_id);
            }
            exceptions
        }
        Some(_) => return Err(Error::bad_json("\"exceptions\" must be a list of user IDs")),
    };
    Ok(InvitePermission { allow, exceptions })
}

/// Checks a `/createRoom` request. Below the `create_rooms` level a user may still create a
/// room whose invitees are all exempt, to talk to support. Every invitee is checked like an
/// invite.
pub fn check_create_room(
    services: &Services,
    creator: &UserId,
    invitees: &[OwnedUserId],
) -> Result<()> {
    let rules = &services.config.verification;
    if !is_exempt(services, creator) {
        let required = required_level(rules.create_rooms);
        let only_support =
            !invitees.is_empty() && invitees.iter().all(|invitee| is_exempt(services, invitee));
        if services.directory.level(creator)? < required && !only_support {
            return Err(Error::forbidden(format!(
                "You can create rooms {}. {HOW_TO_VERIFY}",
                once_verified(required)
            )));
        }
    }
    for invitee in invitees {
        check_invite(services, creator, invitee)?;
    }
    Ok(())
}

/// Checks an invite: the inviter needs the `invite` level, the invitee the `be_invited` level,
/// and the invitee's invite permission must admit the inviter. Invites from and to exempt users
/// always pass.
pub fn check_invite(services: &Services, inviter: &UserId, invitee: &UserId) -> Result<()> {
    if is_exempt(services, inviter) || is_exempt(services, invitee) {
        return Ok(());
    }
    let rules = &services.config.verification;
    let required = required_level(rules.invite);
    if services.directory.level(inviter)? < required {
        return Err(Error::forbidden(format!(
            "You can invite colleagues {}. {HOW_TO_VERIFY}",
            once_verified(required)
        )));
    }
    let required = required_level(rules.be_invited);
    if services.directory.level(invitee)? < required {
        return Err(Error::forbidden(format!(
            "{invitee} cannot be invited yet because {}. Invitations are only possible between \
             verified professionals.",
            match required {
                VerificationLevel::Medical => "their professional registration is not verified",
                _ => "their identity is not verified",
            }
        )));
    }
    check_invite_permission(services, inviter, invitee)
}

/// Checks the invitee's own `org.caduceus.invite_permission` setting.
fn check_invite_permission(services: &Services, inviter: &UserId, invitee: &UserId) -> Result<()> {
    let Some(content) = services.account_data.get(invitee, None, INVITE_PERMISSION_TYPE)? else {
        return Ok(());
    };
    let parsed = serde_json::from_str(content.get())
        .map_err(|error| Error::bad_json(error.to_string()))
        .and_then(|value| parse_invite_permission(&value));
    let permission = match parsed {
        Ok(permission) => permission,
        Err(error) => {
            // The type is checked when it is stored, so only data stored before that check
            // existed lands here; it is treated as the default.
            tracing::warn!(%invitee, ?error, "ignoring an invalid stored invite permission");
            return Ok(());
        }
    };
    if permission.exceptions.iter().any(|exception| exception == inviter) {
        return Ok(());
    }
    match permission.allow {
        InviteAllow::Verified => Ok(()),
        InviteAllow::Contacts if shares_joined_room(services, inviter, invitee)? => Ok(()),
        InviteAllow::Contacts => Err(Error::forbidden(
            "This person only accepts invitations from people they already share a room with.",
        )),
        InviteAllow::None => Err(Error::forbidden(
            "This person only accepts invitations from people they have chosen themselves.",
        )),
    }
}

/// Checks a join or a knock. Below the `join_rooms` level a user can join only rooms an exempt
/// user invited them to.
pub fn check_join(services: &Services, user_id: &UserId, room_id: &RoomId) -> Result<()> {
    if is_exempt(services, user_id) {
        return Ok(());
    }
    let required = required_level(services.config.verification.join_rooms);
    if services.directory.level(user_id)? >= required {
        return Ok(());
    }
    if let Some(membership) = services.rooms.membership(room_id, user_id)? {
        if membership.membership == "join" {
            return Ok(());
        }
        if membership.membership == "invite" {
            let event_id = EventId::parse(&membership.event_id)
                .map_err(|error| anyhow::anyhow!("stored invite event ID: {error}"))?;
            let inviter = services.rooms.get_pdu(&event_id)?.map(|pdu| pdu.sender());
            let inviter = inviter.and_then(|inviter| UserId::parse(inviter).ok());
            if inviter.is_some_and(|inviter| is_exempt(services, &inviter)) {
                return Ok(());
            }
        }
    }
    Err(Error::forbidden(format!(
        "You can join rooms {}. Until then you can only join rooms that support or the \
         verification bot invited you to. {HOW_TO_VERIFY}",
        once_verified(required)
    )))
}

/// Checks a membership event sent through `PUT /state/m.room.member/{userId}`, which must obey
/// the same rules as the dedicated endpoints.
pub fn check_member_event(
    services: &Services,
    sender: &UserId,
    room_id: &RoomId,
    target: &str,
    content: &Value,
) -> Result<()> {
    let target = UserId::parse(target)
        .map_err(|_| Error::invalid_param(format!("{target:?} is not a user ID")))?;
    match content.get("membership").and_then(Value::as_str) {
        Some("invite") => check_invite(services, sender, &target),
        Some("join" | "knock") if target == sender => check_join(services, sender, room_id),
        _ => Ok(()),
    }
}

/// Checks a lookup of another person by Matrix ID, such as a profile request. Below the
/// `lookup` level a user can still look up themselves, exempt users and the people they share
/// a joined room with.
pub fn check_lookup(services: &Services, viewer: &UserId, target: &UserId) -> Result<()> {
    if can_look_up(services, viewer, target)? {
        return Ok(());
    }
    let required = required_level(services.config.verification.lookup);
    Err(Error::forbidden(format!(
        "You can look up colleagues {}. {HOW_TO_VERIFY}",
        once_verified(required)
    )))
}

/// Checks whether `viewer` may look up `target` by Matrix ID, by the rules of
/// [`check_lookup`]. Key queries and claims use it to leave out the users a viewer may not
/// look up, as if they had no devices.
pub fn can_look_up(services: &Services, viewer: &UserId, target: &UserId) -> Result<bool> {
    if viewer == target || is_exempt(services, viewer) || is_exempt(services, target) {
        return Ok(true);
    }
    let required = required_level(services.config.verification.lookup);
    Ok(services.directory.level(viewer)? >= required
        || shares_joined_room(services, viewer, target)?)
}

/// Checks a to-device message. Below the `invite` level a user can send only to themselves,
/// exempt users and people they share a joined room with, because a direct message to a
/// stranger is contact just like an invite.
pub fn check_to_device(services: &Services, sender: &UserId, target: &UserId) -> Result<()> {
    if sender == target || is_exempt(services, sender) || is_exempt(services, target) {
        return Ok(());
    }
    let required = required_level(services.config.verification.invite);
    if services.directory.level(sender)? >= required
        || shares_joined_room(services, sender, target)?
    {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "You can contact colleagues outside your rooms {}. {HOW_TO_VERIFY}",
        once_verified(required)
    )))
}

/// Returns whether an action that needs `minimum` is open to a user at `level`.
pub fn allows(minimum: MinimumLevel, level: VerificationLevel) -> bool {
    level >= required_level(minimum)
}

fn required_level(minimum: MinimumLevel) -> VerificationLevel {
    match minimum {
        MinimumLevel::Pending => VerificationLevel::Pending,
        MinimumLevel::Identity => VerificationLevel::Identity,
        MinimumLevel::Medical => VerificationLevel::Medical,
    }
}

fn once_verified(required: VerificationLevel) -> &'static str {
    match required {
        VerificationLevel::Medical => "once your professional registration is verified",
        _ => "once your identity is verified",
    }
}

/// Returns whether two users are both joined to at least one room.
fn shares_joined_room(services: &Services, user: &UserId, other: &UserId) -> Result<bool> {
    for (room_id, membership) in services.rooms.rooms_of_user(user)? {
        if membership.membership == "join" && services.rooms.is_joined(&room_id, other)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn invite_permission_shapes() {
        let parsed = parse_invite_permission(&json!({
            "allow": "contacts",
            "exceptions": ["@anna:localhost"],
        }))
        .unwrap();
        assert_eq!(parsed.allow, InviteAllow::Contacts);
        assert_eq!(parsed.exceptions, vec![UserId::parse("@anna:localhost").unwrap()]);

        let cases = [
            (json!([]), ErrorCode::BadJson),
            (json!({}), ErrorCode::BadJson),
            (json!({ "allow": 1 }), ErrorCode::BadJson),
            (json!({ "allow": "friends" }), ErrorCode::InvalidParam),
            (json!({ "allow": "none", "exceptions": "@anna:localhost" }), ErrorCode::BadJson),
            (json!({ "allow": "none", "exceptions": [1] }), ErrorCode::BadJson),
            (json!({ "allow": "none", "exceptions": ["anna"] }), ErrorCode::InvalidParam),
        ];
        for (content, code) in cases {
            let error = parse_invite_permission(&content).unwrap_err();
            assert_eq!(error.code(), code, "content {content}");
        }
    }
}
