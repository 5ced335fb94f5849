//! Membership changes: join, invite, leave, kick, ban and unban, each an `m.room.member` event
//! that the authorization rules decide on, plus aliases and the public room directory.

use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value};

use super::{unknown_room, EventDraft, Rooms};
use crate::error::{Error, Result};
use crate::storage::tables::{AliasRecord, ALIASES, PUBLISHED_ROOMS};

/// The member event's profile fields, copied from the user's profile at the time of joining.
#[derive(Debug, Default, Clone)]
pub struct MemberProfile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

fn member_content(
    membership: &str,
    profile: Option<&MemberProfile>,
    reason: Option<&str>,
) -> Value {
    let mut content = json!({ "membership": membership });
    if let Some(profile) = profile {
        if let Some(name) = &profile.displayname {
            content["displayname"] = json!(name);
        }
        if let Some(avatar_url) = &profile.avatar_url {
            content["avatar_url"] = json!(avatar_url);
        }
    }
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    content
}

impl Rooms {
    fn ensure_room(&self, room_id: &RoomId) -> Result<()> {
        if self.room(room_id)?.is_none() {
            return Err(unknown_room());
        }
        Ok(())
    }

    /// Joins a room. Joining a room one is already in is allowed and changes nothing visible.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        profile: &MemberProfile,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.ensure_room(room_id)?;
        if let Some(current) = self.membership(room_id, user_id)? {
            if current.membership == "join" {
                return ruma::EventId::parse(&current.event_id)
                    .map_err(|error| Error::Internal(anyhow::anyhow!("stored event ID: {error}")));
            }
        }
        let content = member_content("join", Some(profile), reason);
        self.append(
            room_id,
            user_id,
            EventDraft::state("m.room.member", user_id.as_str(), content),
            None,
        )
        .await
    }

    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        invitee: &UserId,
        is_direct: bool,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.ensure_room(room_id)?;
        let mut content = member_content("invite", None, reason);
        if is_direct {
            content["is_direct"] = json!(true);
        }
        self.append(
            room_id,
            sender,
            EventDraft::state("m.room.member", invitee.as_str(), content),
            None,
        )
        .await
    }

    pub async fn leave(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        self.ensure_room(room_id)?;
        let current = self.membership(room_id, user_id)?;
        if current.as_ref().is_none_or(|m| m.membership == "leave" || m.membership == "ban") {
            // Leaving a room one is not in is a no-op, as clients retry leaves freely.
            return Ok(());
        }
        let content = member_content("leave", None, reason);
        self.append(
            room_id,
            user_id,
            EventDraft::state("m.room.member", user_id.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// Kicks (`leave` set by another user), bans or unbans a member.
    pub async fn set_membership_of(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.ensure_room(room_id)?;
        let current = self.membership(room_id, target)?.map(|m| m.membership);
        match (membership, current.as_deref()) {
            ("leave", Some("join" | "invite" | "knock")) => {}
            ("leave", _) => return Err(Error::forbidden("That user is not in the room")),
            ("unban", Some("ban")) => {}
            ("unban", _) => return Err(Error::forbidden("That user is not banned")),
            _ => {}
        }
        let membership = if membership == "unban" { "leave" } else { membership };
        let content = member_content(membership, None, reason);
        self.append(
            room_id,
            sender,
            EventDraft::state("m.room.member", target.as_str(), content),
            None,
        )
        .await
    }

    pub fn resolve_alias(&self, alias: &str) -> Result<Option<OwnedRoomId>> {
        Ok(self
            .db
            .get(&ALIASES, &alias.to_owned())?
            .and_then(|record| RoomId::parse(&record.room_id).ok()))
    }

    pub fn create_alias(&self, alias: &str, room_id: &RoomId, creator: &UserId) -> Result<()> {
        self.ensure_room(room_id)?;
        if self.db.get(&ALIASES, &alias.to_owned())?.is_some() {
            return Err(Error::with_status(
                crate::error::ErrorCode::Unknown,
                http::StatusCode::CONFLICT,
                "That room alias is already in use",
            ));
        }
        let record = AliasRecord { room_id: room_id.to_string(), creator: creator.to_string() };
        self.db.put(&ALIASES, &alias.to_owned(), &record)?;
        Ok(())
    }

    /// Deletes an alias if the user created it or may change the room's canonical alias.
    pub fn delete_alias(&self, alias: &str, user_id: &UserId, is_admin: bool) -> Result<()> {
        let Some(record) = self.db.get(&ALIASES, &alias.to_owned())? else {
            return Err(Error::not_found("There is no such room alias"));
        };
        if record.creator != user_id.as_str() && !is_admin {
            return Err(Error::forbidden(
                "Only the alias's creator or a server admin can delete it",
            ));
        }
        self.db.delete(&ALIASES, &alias.to_owned())?;
        Ok(())
    }

    pub fn aliases_of_room(&self, room_id: &RoomId) -> Result<Vec<String>> {
        Ok(self
            .db
            .scan_all(&ALIASES)?
            .into_iter()
            .filter(|(_, record)| record.room_id == room_id.as_str())
            .map(|(alias, _)| alias)
            .collect())
    }

    pub fn set_published(&self, room_id: &RoomId, published: bool) -> Result<()> {
        self.ensure_room(room_id)?;
        if published {
            self.db.put(&PUBLISHED_ROOMS, &room_id.to_string(), &true)?;
        } else {
            self.db.delete(&PUBLISHED_ROOMS, &room_id.to_string())?;
        }
        Ok(())
    }

    pub fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        self.ensure_room(room_id)?;
        Ok(self.db.get(&PUBLISHED_ROOMS, &room_id.to_string())?.unwrap_or(false))
    }

    pub fn published_rooms(&self) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .db
            .scan_all(&PUBLISHED_ROOMS)?
            .into_iter()
            .filter_map(|(room_id, _)| RoomId::parse(&room_id).ok())
            .collect())
    }
}
