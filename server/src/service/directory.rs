//! The professional directory: each user's verification level and directory attributes, stored
//! in RocksDB, and the search index built from them in `<data_dir>/directory`.
//!
//! The `directory_profiles` table is the source of truth. The index is derived from it and the
//! profiles, so a missing, outdated or damaged index is rebuilt at start-up.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use caduceus_directory::{
    DirectoryBackend, DirectoryEntry, DirectoryIndex, IndexConfig, RebuildProgress, SearchRequest,
    SearchResults, VerificationLevel,
};
use ruma::UserId;
use serde_json::json;

use super::profiles::{self, ProfileObserver, Profiles};
use super::rooms::Rooms;
use sha2::{Digest, Sha256};

use super::Services;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::tables::{DirectoryProfileRecord, DIRECTORY_PROFILES};
use crate::storage::Db;

/// Profile field that shows a user's verification level to other users.
pub const VERIFICATION_FIELD: &str = "org.caduceus.verification";

pub struct Directory {
    db: Arc<Db>,
    /// Reads display names and avatars, and sets the verification field.
    profiles: Profiles,
    index: DirectoryIndex,
}

impl Directory {
    /// Opens the index in `path`, recreating it when it is damaged and rebuilding it from the
    /// table when it is missing, outdated or was not closed cleanly.
    pub fn open(db: Arc<Db>, path: &Path) -> anyhow::Result<Self> {
        let (index, needs_rebuild) = match DirectoryIndex::open_or_create(path, index_config()) {
            Ok((index, status)) => (index, status.needs_rebuild()),
            Err(caduceus_directory::Error::Damaged { reason, .. }) => {
                tracing::warn!(path = %path.display(), reason, "the directory index is damaged");
                (DirectoryIndex::recreate(path, index_config())?, true)
            }
            Err(error) => return Err(error.into()),
        };
        let directory = Self { profiles: Profiles::new(db.clone()), db, index };
        if needs_rebuild {
            let progress = directory.rebuild(|_| {})?;
            tracing::info!(
                indexed = progress.indexed,
                skipped = progress.skipped,
                "directory index rebuilt from the stored records"
            );
        }
        Ok(directory)
    }

    /// Returns the verification level of a user; `pending` without a record.
    pub fn level(&self, user_id: &UserId) -> Result<VerificationLevel> {
        Ok(self.record(user_id)?.map_or(VerificationLevel::Pending, |record| record.level))
    }

    pub fn record(&self, user_id: &UserId) -> Result<Option<DirectoryProfileRecord>> {
        Ok(self.db.get(&DIRECTORY_PROFILES, &user_id.to_string())?)
    }

    /// Stores a user's record, sets the verification profile field (removed for pending users,
    /// who have no badge) and updates the index, where pending users have no entry. The index
    /// is committed before this returns, so searches see the change at once. Blocks while the
    /// index rebuilds, so async callers run it on a blocking thread.
    pub fn set_record(&self, user_id: &UserId, record: DirectoryProfileRecord) -> Result<()> {
        let entry = self.entry(user_id, &record)?;
        entry.validate().map_err(index_error)?;
        self.db.put(&DIRECTORY_PROFILES, &user_id.to_string(), &record)?;
        let pending = record.level == VerificationLevel::Pending;
        let badge = (!pending).then(|| json!({ "level": record.level.as_str() }));
        self.profiles.set_field(user_id, VERIFICATION_FIELD, badge)?;
        if pending {
            self.index.remove(user_id.as_str()).map_err(index_error)?;
        } else {
            self.index.upsert(&entry).map_err(index_error)?;
        }
        self.index.commit().map_err(index_error)
    }

    /// Removes a user's record and index entry, as when the account is deactivated. Blocks
    /// while the index rebuilds, so async callers run it on a blocking thread.
    pub fn remove_user(&self, user_id: &UserId) -> Result<()> {
        self.db.delete(&DIRECTORY_PROFILES, &user_id.to_string())?;
        self.index.remove(user_id.as_str()).map_err(index_error)?;
        self.index.commit().map_err(index_error)
    }

    /// Replaces the index content with entries built from every stored record.
    pub fn rebuild(&self, progress: impl FnMut(RebuildProgress)) -> Result<RebuildProgress> {
        let records = self.db.scan_all(&DIRECTORY_PROFILES)?;
        let mut entries = Vec::with_capacity(records.len());
        for (user_id, record) in records {
            let Ok(user_id) = UserId::parse(&user_id) else {
                tracing::error!(user_id, "skipping a directory record with an invalid user ID");
                continue;
            };
            entries.push(self.entry(&user_id, &record)?);
        }
        self.index.rebuild_from(entries, progress).map_err(index_error)
    }

    /// Updates the index entry of a user with a record, for example after a profile change.
    pub fn refresh(&self, user_id: &UserId) -> Result<()> {
        let Some(record) = self.record(user_id)? else {
            return Ok(());
        };
        let entry = self.entry(user_id, &record)?;
        self.index.upsert(&entry).map_err(index_error)
    }

    /// Searches the directory for the user directory endpoint. Medical users search every listed
    /// user, identity users only those who share a room with them, and pending users none.
    /// Returns the hits and whether more matched than `limit`.
    pub fn search_users(
        &self,
        searcher: &UserId,
        rooms: &Rooms,
        search_term: &str,
        limit: usize,
    ) -> Result<(Vec<DirectoryEntry>, bool)> {
        let restrict_to = match self.level(searcher)? {
            VerificationLevel::Pending => {
                return Err(Error::forbidden(
                    "Only verified professionals can search the directory; verify your \
                     registration first",
                ))
            }
            VerificationLevel::Identity => Some(
                rooms
                    .users_sharing_rooms(searcher)?
                    .into_iter()
                    .map(|user_id| user_id.to_string())
                    .collect::<BTreeSet<_>>(),
            ),
            VerificationLevel::Medical => None,
        };
        // Requesting one extra hit shows whether the result is limited.
        let request = SearchRequest {
            query: search_term.to_owned(),
            restrict_to,
            limit: limit + 1,
            exact_total: false,
            ..SearchRequest::default()
        };
        let mut hits: Vec<_> =
            self.search(&request)?.hits.into_iter().map(|hit| hit.entry).collect();
        let limited = hits.len() > limit;
        hits.truncate(limit);
        Ok((hits, limited))
    }

    pub fn search(&self, request: &SearchRequest) -> Result<SearchResults> {
        self.index.search(request).map_err(index_error)
    }

    /// Returns the entry of a user who appears in searches.
    pub fn listed_entry(&self, user_id: &str) -> Result<Option<DirectoryEntry>> {
        let entry = self.index.get(user_id).map_err(index_error)?;
        Ok(entry.filter(|entry| entry.listed))
    }

    fn entry(&self, user_id: &UserId, record: &DirectoryProfileRecord) -> Result<DirectoryEntry> {
        let profile = self.profiles.get(user_id)?;
        let text = |key: &str| profile.get(key).and_then(|value| value.as_str()).map(str::to_owned);
        Ok(DirectoryEntry {
            user_id: user_id.to_string(),
            display_name: text(profiles::DISPLAYNAME).filter(|name| !name.is_empty()),
            avatar_url: text(profiles::AVATAR_URL).filter(|url| !url.is_empty()),
            professions: record.professions.clone(),
            specialties: record.specialties.clone(),
            organisations: record.organisations.clone(),
            areas: record.areas.clone(),
            level: record.level,
            listed: record.listed && record.level != VerificationLevel::Pending,
        })
    }
}

impl ProfileObserver for Directory {
    fn profile_changed(&self, user_id: &UserId, key: &str) {
        if key != profiles::DISPLAYNAME && key != profiles::AVATAR_URL {
            return;
        }
        if let Err(error) = self.refresh(user_id) {
            tracing::error!(%user_id, ?error, "updating the directory entry failed");
        }
    }
}

/// Runs the profile hook of the directory off the async threads, because an index write may
/// wait for a rebuild to finish.
pub struct BlockingObserver(pub Arc<Directory>);

impl ProfileObserver for BlockingObserver {
    fn profile_changed(&self, user_id: &UserId, key: &str) {
        let directory = self.0.clone();
        let user_id = user_id.to_owned();
        let key = key.to_owned();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || directory.profile_changed(&user_id, &key));
            }
            Err(_) => directory.profile_changed(&user_id, &key),
        }
    }
}

/// Checks the bearer credential of a directory REST API request: a configured API key, or the
/// access token of a user verified at the medical level.
pub fn authorize_api(services: &Services, bearer: Option<&str>) -> Result<()> {
    let Some(bearer) = bearer else {
        return Err(Error::new(
            ErrorCode::MissingToken,
            "This endpoint requires an API key or an access token as Authorization: Bearer",
        ));
    };
    let bearer_hash = Sha256::digest(bearer.as_bytes());
    let key_matches = services.config.directory.api_keys.iter().fold(false, |found, key| {
        found | hashes_equal(&Sha256::digest(key.as_bytes()), &bearer_hash)
    });
    if key_matches {
        return Ok(());
    }
    let Some(sender) = services.accounts.authenticate(bearer)? else {
        return Err(Error::new(
            ErrorCode::UnknownToken { soft_logout: false },
            "Unknown API key or access token",
        ));
    };
    if services.directory.level(&sender.user_id)? != VerificationLevel::Medical {
        return Err(Error::forbidden(
            "Only users verified at the medical level or API keys can use the directory API",
        ));
    }
    Ok(())
}

/// Compares two digests in time that does not depend on where they differ.
fn hashes_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left.iter().zip(right).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

fn index_config() -> IndexConfig {
    // NOTE: tantivy needs at least 15 MB per writer thread and uses up to 8 threads; 128 MB
    // covers that on any machine while keeping many test servers within memory.
    IndexConfig { writer_memory_bytes: 128 * 1024 * 1024, ..IndexConfig::default() }
}

fn index_error(error: caduceus_directory::Error) -> Error {
    match error {
        caduceus_directory::Error::InvalidRequest(message) => Error::invalid_param(message),
        caduceus_directory::Error::InvalidEntry { reason, .. } => {
            Error::invalid_param(format!("Invalid directory entry: {reason}"))
        }
        other => Error::Internal(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use caduceus_directory::Area;
    use serde_json::json;

    use super::*;
    use crate::service::test_support::{assert_error, server};

    fn record(level: VerificationLevel, specialty: &str, city: &str) -> DirectoryProfileRecord {
        DirectoryProfileRecord {
            level,
            professions: vec!["physician".to_owned()],
            specialties: vec![specialty.to_owned()],
            organisations: vec!["UMC Utrecht".to_owned()],
            areas: vec![Area {
                city: Some(city.to_owned()),
                country: Some("NL".to_owned()),
                ..Area::default()
            }],
            listed: true,
            updated_ts: 1,
            evidence: None,
        }
    }

    fn user_ids(hits: &[DirectoryEntry]) -> Vec<&str> {
        hits.iter().map(|entry| entry.user_id.as_str()).collect()
    }

    #[tokio::test]
    async fn level_defaults_to_pending() {
        let server = server();
        let user = server.user("anna", &[]).await;
        assert_eq!(server.services.directory.level(&user).unwrap(), VerificationLevel::Pending);
    }

    #[tokio::test]
    async fn set_record_stores_and_sets_profile_field() {
        let server = server();
        let services = &server.services;
        let user = server.user("anna", &[]).await;
        services
            .directory
            .set_record(&user, record(VerificationLevel::Medical, "cardiology", "Utrecht"))
            .unwrap();

        assert_eq!(services.directory.level(&user).unwrap(), VerificationLevel::Medical);
        let field = services.profiles.get_field(&user, VERIFICATION_FIELD).unwrap();
        assert_eq!(field, Some(json!({ "level": "medical" })));
        let entry = services.directory.listed_entry(user.as_str()).unwrap();
        assert_eq!(entry.map(|entry| entry.specialties), Some(vec!["cardiology".to_owned()]));
    }

    #[tokio::test]
    async fn search_by_level() {
        let server = server();
        let services = &server.services;
        let medical = server.user("anna", &[]).await;
        let identity = server.user("bram", &[]).await;
        let pending = server.user("cees", &[]).await;
        let stranger = server.user("dirk", &[]).await;
        let directory = &services.directory;
        directory
            .set_record(&medical, record(VerificationLevel::Medical, "cardiology", "Utrecht"))
            .unwrap();
        directory
            .set_record(&identity, record(VerificationLevel::Identity, "cardiology", "Utrecht"))
            .unwrap();
        directory
            .set_record(&stranger, record(VerificationLevel::Medical, "cardiology", "Utrecht"))
            .unwrap();
        server.shared_room(&identity, &[&medical]).await;

        let (hits, limited) =
            directory.search_users(&medical, &services.rooms, "cardiology", 10).unwrap();
        assert_eq!(user_ids(&hits), vec![medical.as_str(), identity.as_str(), stranger.as_str()]);
        assert!(!limited);

        let (hits, limited) =
            directory.search_users(&medical, &services.rooms, "cardiology", 2).unwrap();
        assert_eq!(hits.len(), 2);
        assert!(limited);

        let (hits, _) =
            directory.search_users(&identity, &services.rooms, "cardiology", 10).unwrap();
        assert_eq!(user_ids(&hits), vec![medical.as_str(), identity.as_str()]);

        let result = directory.search_users(&pending, &services.rooms, "cardiology", 10);
        assert_error(result, ErrorCode::Forbidden);
    }

    #[tokio::test]
    async fn unlisted_and_pending_users_never_match() {
        let server = server();
        let services = &server.services;
        let searcher = server.user("anna", &[]).await;
        let unlisted = server.user("bram", &[]).await;
        let pending = server.user("cees", &[]).await;
        let directory = &services.directory;
        directory
            .set_record(&searcher, record(VerificationLevel::Medical, "surgery", "Utrecht"))
            .unwrap();
        let mut hidden = record(VerificationLevel::Medical, "cardiology", "Utrecht");
        hidden.listed = false;
        directory.set_record(&unlisted, hidden).unwrap();
        directory
            .set_record(&pending, record(VerificationLevel::Pending, "cardiology", "Utrecht"))
            .unwrap();

        let (hits, _) =
            directory.search_users(&searcher, &services.rooms, "cardiology", 10).unwrap();
        assert!(hits.is_empty(), "unexpected hits: {hits:?}");
        assert_eq!(directory.listed_entry(unlisted.as_str()).unwrap(), None);
    }

    #[tokio::test]
    async fn display_name_change_updates_entry() {
        let server = server();
        let services = &server.services;
        let user = server.user("anna", &[]).await;
        services
            .directory
            .set_record(&user, record(VerificationLevel::Medical, "cardiology", "Utrecht"))
            .unwrap();

        services
            .profiles
            .set_field_by_user(&user, profiles::DISPLAYNAME, Some(json!("Anna Jansen")))
            .unwrap();
        // The hook runs on a blocking thread and the index makes writes searchable within a
        // second, so poll.
        let mut display_name = None;
        for _ in 0..50 {
            services.directory.index.commit().unwrap();
            display_name = services
                .directory
                .listed_entry(user.as_str())
                .unwrap()
                .and_then(|entry| entry.display_name);
            if display_name.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(display_name.as_deref(), Some("Anna Jansen"));
    }

    #[tokio::test]
    async fn rebuild_restores_entries_from_table() {
        let server = server();
        let services = &server.services;
        let user = server.user("anna", &[]).await;
        services
            .directory
            .set_record(&user, record(VerificationLevel::Medical, "cardiology", "Utrecht"))
            .unwrap();

        services.directory.index.rebuild_from(Vec::new(), |_| {}).unwrap();
        assert_eq!(services.directory.listed_entry(user.as_str()).unwrap(), None);

        let progress = services.directory.rebuild(|_| {}).unwrap();
        assert_eq!(progress.indexed, 1);
        assert!(services.directory.listed_entry(user.as_str()).unwrap().is_some());
    }
}
