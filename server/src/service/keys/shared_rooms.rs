//! Room membership for key distribution, read through the rooms service's public functions.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId};

use super::{SharedRoomChanges, SharedRooms};
use crate::error::Result;
use crate::service::rooms::Rooms;

impl SharedRooms for Rooms {
    fn users_sharing_rooms(&self, user_id: &UserId) -> Result<BTreeSet<OwnedUserId>> {
        let mut users: BTreeSet<OwnedUserId> =
            Rooms::users_sharing_rooms(self, user_id)?.into_iter().collect();
        users.remove(user_id);
        Ok(users)
    }

    /// Looks at every membership with a position in `since + 1 ..= until` in the rooms the user
    /// is or was in: the user's own (a room joined or left brings all its members along) and
    /// the other members'.
    // NOTE: this reads every member of every room of the user on each incremental sync. A log of
    // membership changes by position would make the cost follow the changes instead.
    fn shared_room_changes(
        &self,
        user_id: &UserId,
        since: u64,
        until: u64,
    ) -> Result<SharedRoomChanges> {
        let in_range = |position: u64| position > since && position <= until;
        let mut candidates: BTreeSet<OwnedUserId> = BTreeSet::new();
        for (room_id, own) in self.rooms_of_user(user_id)? {
            let own_changed = in_range(own.position);
            if !own_changed && own.membership != "join" {
                continue;
            }
            for (member, record) in self.members(&room_id)? {
                if own_changed || in_range(record.position) {
                    candidates.insert(member);
                }
            }
        }
        candidates.remove(user_id);

        let sharing = SharedRooms::users_sharing_rooms(self, user_id)?;
        let (joined, left) = candidates.into_iter().partition(|user| sharing.contains(user));
        Ok(SharedRoomChanges { joined, left })
    }
}
