//! A real service stack on RocksDB in a temp dir, for unit tests.

use std::sync::Arc;

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};

use super::accounts::Sender;
use super::rooms::create::CreateRoomOptions;
use super::rooms::membership::MemberProfile;
use super::Services;
use crate::error::{Error, ErrorCode};
use crate::storage::Db;

pub struct TestServer {
    pub services: Arc<Services>,
    _dir: tempfile::TempDir,
}

/// Opens a fresh database and the services on top of it, for the server `localhost`.
pub fn server() -> TestServer {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = Db::open(dir.path()).expect("the database opens");
    let mut config = caduceus_config::Config::default();
    config.storage.data_dir = dir.path().to_owned();
    let services = Services::new(config, Arc::new(db)).expect("the services start");
    TestServer { services, _dir: dir }
}

impl TestServer {
    /// Creates a user without a password, and devices with the given IDs.
    pub async fn user(&self, localpart: &str, device_ids: &[&str]) -> OwnedUserId {
        let user_id = self.services.accounts.create_user(localpart, None, false).await.unwrap();
        for device_id in device_ids {
            self.services
                .accounts
                .create_session(
                    &user_id,
                    Some((*device_id).into()),
                    Some(format!("{device_id} phone")),
                )
                .unwrap();
        }
        user_id
    }

    /// Creates a public room and has `members` join it.
    pub async fn shared_room(
        &self,
        creator: &OwnedUserId,
        members: &[&OwnedUserId],
    ) -> OwnedRoomId {
        let rooms = &self.services.rooms;
        let options = CreateRoomOptions { preset: "public_chat".to_owned(), ..Default::default() };
        let room_id = rooms.create_room(creator, options, None).await.unwrap();
        for member in members {
            rooms.join(&room_id, member, &MemberProfile::default(), None).await.unwrap();
        }
        room_id
    }

    /// Builds the sender of a request from this user and device.
    pub fn sender(&self, user_id: &OwnedUserId, device_id: &str) -> Sender {
        Sender {
            user_id: user_id.clone(),
            device_id: OwnedDeviceId::from(device_id),
            access_token_hash: Vec::new(),
            appservice_id: None,
        }
    }
}

/// Asserts that `result` failed with the Matrix error `code`, and returns its message.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(result: Result<T, Error>, code: ErrorCode) -> String {
    match result {
        Err(Error::Matrix { code: actual, message, .. }) => {
            assert_eq!(actual, code, "unexpected error code; message: {message}");
            message
        }
        other => panic!("expected the error {}, got {other:?}", code.as_str()),
    }
}
