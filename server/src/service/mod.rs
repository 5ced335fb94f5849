//! Domain logic. Each service owns its tables (see `storage::tables`) and no other service
//! opens them; handlers call one service function per request.

pub mod account_data;
pub mod accounts;
pub mod appservices;
pub mod dehydrated_device;
pub mod deletion_requests;
pub mod directory;
pub mod filters;
pub mod gating;
pub mod invitations;
pub mod key_backup;
pub mod keys;
pub mod mail;
pub mod media;
pub mod profiles;
pub mod push_rules;
pub mod rate_limit;
pub mod receipts;
pub mod registration_tokens;
pub mod rooms;
pub mod security;
pub mod session_sweep;
pub mod stream;
pub mod sync;
#[cfg(test)]
pub(crate) mod test_support;
pub mod threepids;
pub mod to_device;
pub mod typing;
pub mod uia;
pub mod verification;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use caduceus_config::Config;
use ruma::{OwnedServerName, OwnedUserId, UserId};

use crate::error::{Error, Result};
use crate::storage::Db;

/// Everything a request handler can reach.
pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub accounts: accounts::Accounts,
    pub uia: uia::Uia,
    pub profiles: profiles::Profiles,
    pub account_data: Arc<account_data::AccountData>,
    pub filters: filters::Filters,
    pub media: media::Media,
    pub push_rules: push_rules::PushRules,
    pub registration_tokens: registration_tokens::RegistrationTokens,
    pub stream: Arc<stream::Stream>,
    pub rooms: Arc<rooms::Rooms>,
    pub receipts: receipts::Receipts,
    pub typing: typing::Typing,
    pub unread: sync::UnreadCache,
    pub security: security::Security,
    pub keys: Arc<keys::Keys>,
    pub to_device: Arc<to_device::ToDevice>,
    pub key_backup: key_backup::KeyBackup,
    pub dehydrated_device: Arc<dehydrated_device::DehydratedDevices>,
    pub directory: Arc<directory::Directory>,
    pub rate_limits: rate_limit::RateLimits,
    pub invitations: invitations::Invitations,
    pub deletion_requests: deletion_requests::DeletionRequests,
    pub mail: mail::Mail,
    pub appservices: Arc<appservices::Appservices>,
    pub threepids: threepids::Threepids,
}

impl Services {
    pub fn new(config: Config, db: Arc<Db>) -> anyhow::Result<Arc<Self>> {
        let server_name = OwnedServerName::try_from(config.server.server_name.as_str())?;
        let stream = Arc::new(stream::Stream::open(db.clone())?);
        let account_data = Arc::new(account_data::AccountData::new(db.clone(), stream.clone()));
        let media = media::Media::open_local(&config, server_name.clone(), db.clone())?;
        let keys = Arc::new(keys::Keys::new(db.clone(), stream.clone(), server_name.clone()));
        let to_device =
            Arc::new(to_device::ToDevice::new(db.clone(), stream.clone(), server_name.clone()));
        let dehydrated_device = Arc::new(dehydrated_device::DehydratedDevices::new(db.clone()));
        let rooms = Arc::new(rooms::Rooms::new(
            db.clone(),
            stream.clone(),
            server_name.clone(),
            &config.storage.data_dir,
            &config.rooms.default_room_version,
        )?);
        keys.set_shared_rooms(rooms.clone());
        let appservices = Arc::new(appservices::Appservices::load(
            &config.appservices,
            &server_name,
            db.clone(),
            rooms.clone(),
            stream.clone(),
        )?);
        let directory = Arc::new(directory::Directory::open(
            db.clone(),
            &config.storage.data_dir.join("directory"),
        )?);
        let mail = mail::Mail::new(&config.email, server_name.as_str())?;
        let threepids = threepids::Threepids::new(db.clone(), &config);
        Ok(Arc::new(Self {
            server_name: server_name.clone(),
            accounts: accounts::Accounts::new(db.clone(), server_name.clone())
                .with_sessions_config(config.sessions.clone())
                .with_device_observer(keys.clone())
                .with_device_observer(to_device.clone())
                .with_device_observer(dehydrated_device.clone()),
            uia: uia::Uia::new(),
            profiles: profiles::Profiles::new(db.clone())
                .with_observer(Arc::new(directory::BlockingObserver(directory.clone()))),
            account_data: account_data.clone(),
            filters: filters::Filters::new(db.clone()),
            media,
            push_rules: push_rules::PushRules::new(account_data),
            registration_tokens: registration_tokens::RegistrationTokens::new(db.clone()),
            rooms,
            receipts: receipts::Receipts::new(db.clone(), stream.clone()),
            typing: typing::Typing::new(stream.clone()),
            unread: sync::UnreadCache::default(),
            security: security::Security::new(db.clone(), config.security.clone()),
            keys,
            to_device,
            key_backup: key_backup::KeyBackup::new(db.clone()),
            dehydrated_device,
            directory,
            rate_limits: rate_limit::RateLimits::new(&config.rate_limits),
            invitations: invitations::Invitations::new(db.clone()),
            deletion_requests: deletion_requests::DeletionRequests::new(db),
            mail,
            appservices,
            threepids,
            stream,
            config,
        }))
    }

    /// Creates the sender account of every application service that has none yet and starts
    /// delivering events to them. Called once by the running server, not by admin commands.
    pub async fn start_appservices(&self) -> anyhow::Result<()> {
        for appservice in self.appservices.all() {
            if self.accounts.get_user(&appservice.sender)?.is_none() {
                let localpart = appservice.sender.localpart();
                self.accounts.create_user(localpart, None, false).await?;
            }
        }
        self.appservices.start_delivery()?;
        Ok(())
    }

    /// Parses a user ID or a bare localpart as a user of this server.
    pub fn local_user_id(&self, user: &str) -> Result<OwnedUserId> {
        let parsed = if user.starts_with('@') {
            UserId::parse(user)
        } else {
            UserId::parse_with_server_name(user.to_lowercase(), &self.server_name)
        };
        match parsed {
            // ruma accepts an empty localpart for historical IDs, but no account can have one.
            Ok(user_id) if user_id.localpart().is_empty() => {
                Err(Error::invalid_param(format!("{user:?} is missing a localpart")))
            }
            Ok(user_id) if user_id.server_name() == self.server_name => Ok(user_id),
            Ok(_) => Err(Error::forbidden("That user is not on this server")),
            Err(_) => Err(Error::invalid_param(format!("{user:?} is not a valid user ID"))),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::test_support;

    #[test]
    fn local_user_id_rejects_empty_localpart() {
        let server = test_support::server();

        assert!(server.services.local_user_id("").is_err());
        assert!(server.services.local_user_id("@:localhost").is_err());
        assert_eq!(server.services.local_user_id("Alice").unwrap().as_str(), "@alice:localhost");
    }
}
