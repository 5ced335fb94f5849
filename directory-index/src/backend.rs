//! The interface the server programs against, so that the embedded tantivy index can later be
//! replaced by a distributed engine without changing the server.

use std::time::Duration;

use crate::entry::DirectoryEntry;
use crate::error::Result;
use crate::search::{SearchRequest, SearchResults};

/// Progress of a [`DirectoryBackend::rebuild`], reported every few thousand entries and once at
/// the end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebuildProgress {
    /// Entries added so far.
    pub indexed: u64,
    /// Entries left out because they failed validation; each one is logged.
    pub skipped: u64,
    /// Number of entries the iterator announced, when its size hint is exact.
    pub expected: Option<u64>,
    pub elapsed: Duration,
    /// Set on the last report, after the new index is committed and searchable.
    pub finished: bool,
}

/// A searchable directory of healthcare professionals.
///
/// Writes (`upsert`, `remove`) become searchable within one second without a `commit`; `commit`
/// makes them searchable at once. Implementations are shared between threads. Their methods block
/// on I/O and locks, so async callers run them on a blocking thread pool.
pub trait DirectoryBackend: Send + Sync {
    /// Adds an entry, or replaces the entry with the same user ID.
    fn upsert(&self, entry: &DirectoryEntry) -> Result<()>;

    /// Removes the entry of a user; removing an absent user is not an error.
    fn remove(&self, user_id: &str) -> Result<()>;

    /// Makes every earlier write searchable and durable before returning.
    fn commit(&self) -> Result<()>;

    /// Returns the stored entry of a user, listed or not, as of the last commit.
    fn get(&self, user_id: &str) -> Result<Option<DirectoryEntry>>;

    fn search(&self, request: &SearchRequest) -> Result<SearchResults>;

    /// Replaces the whole content with `entries`, which must have distinct user IDs (the
    /// store's key guarantees it). Searches see the old content until the new one is complete.
    /// Writes wait until the rebuild ends; writes made before it started and not yet committed are
    /// dropped, so `entries` must already contain them.
    fn rebuild(
        &self,
        entries: &mut dyn Iterator<Item = DirectoryEntry>,
        progress: &mut dyn FnMut(RebuildProgress),
    ) -> Result<RebuildProgress>;

    /// Number of entries, listed or not, as of the last commit.
    fn num_entries(&self) -> u64;
}
