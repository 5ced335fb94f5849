//! The embedded tantivy implementation of [`DirectoryBackend`].
//!
//! Writes go to a tantivy `IndexWriter` and become searchable at the next commit. A background
//! thread commits `commit_delay` after the first uncommitted write, so a burst of profile changes
//! shares one commit, and reloads the reader right after, so a change is searchable within
//! `commit_delay` plus the commit time (tens of milliseconds). The unit tests check that this stays
//! under one second.
//!
//! Documents are sorted by user ID within each segment. The reader's warmer decodes the columns
//! that searches read per match ([`crate::column_cache`]) whenever a commit or a background merge
//! brings in a segment, which makes opening a million-entry index take a few hundred
//! milliseconds.
//!
//! Durability: the index is derived data, rebuilt from the server's store. A crash loses the
//! writes since the last commit. To let the server notice, a marker file exists while the index is
//! open and is removed by [`DirectoryIndex::close`] (or drop) after the final commit; finding it at
//! open means the last process did not close the index, and [`OpenStatus::Unclean`] tells the
//! caller to rebuild.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::directory::error::{LockError, OpenDirectoryError};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::UserOperation;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{
    Index, IndexReader, IndexSettings, IndexSortByField, IndexWriter, Order, ReloadPolicy,
    TantivyDocument, TantivyError, Term, Warmer,
};
use tracing::{debug, error, info, warn};

use crate::backend::{DirectoryBackend, RebuildProgress};
use crate::collector::{Collected, HitCollector};
use crate::column_cache::ColumnCache;
use crate::cursor::{self, Cursor};
use crate::entry::DirectoryEntry;
use crate::error::{Error, Result};
use crate::query::Planner;
use crate::schema::{self, Fields};
use crate::search::{FacetCount, SearchHit, SearchRequest, SearchResults};
use crate::text;
use crate::vocabulary::Vocabulary;

/// Version of the mapping from entries to documents. Raise it whenever the same entry would be
/// indexed differently (a tokenizer, a field's content), so older indexes report
/// [`OpenStatus::Outdated`].
const FORMAT_VERSION: u32 = 1;

/// File that exists while an index is open; see the module documentation.
const OPEN_MARKER: &str = "caduceus-directory.open";

/// How often a rebuild reports progress.
const PROGRESS_EVERY: u64 = 10_000;

/// Wait before the committer retries a failed commit.
const COMMIT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Settings of a [`DirectoryIndex`].
#[derive(Clone, Debug)]
pub struct IndexConfig {
    /// Memory of the index writer in bytes, shared by its threads (one per core, at most 8).
    /// Larger budgets make a rebuild write fewer, larger segments. Tantivy requires at least
    /// 15 MB per thread.
    pub writer_memory_bytes: usize,
    /// Delay between the first uncommitted write and the background commit.
    pub commit_delay: Duration,
    /// Whether opening reads every index file to verify its checksum. This detects silent
    /// corruption but reads the whole index (hundreds of megabytes for a million entries).
    pub verify_checksums: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            writer_memory_bytes: 256 * 1024 * 1024,
            commit_delay: Duration::from_millis(200),
            verify_checksums: false,
        }
    }
}

/// The state of the folder that [`DirectoryIndex::open_or_create`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenStatus {
    /// An index that was closed cleanly, built with the current format and vocabulary.
    Ready,
    /// No index was there, so an empty one was created.
    Created,
    /// The previous process did not close the index, so writes after its last commit may be
    /// missing.
    Unclean,
    /// The index was built with an older entry mapping or another vocabulary.
    Outdated,
}

impl OpenStatus {
    /// Whether the caller should [`DirectoryBackend::rebuild`] the index from its store. The index
    /// is usable meanwhile, with the content it had.
    pub fn needs_rebuild(self) -> bool {
        self != Self::Ready
    }
}

/// Stored as the payload of every commit.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct CommitPayload {
    format: u32,
    /// Hex-encoded [`Vocabulary::fingerprint`].
    vocabulary: String,
}

#[derive(Default)]
struct CommitState {
    /// Writes were made since the last commit.
    dirty: bool,
    shutdown: bool,
}

struct Shared {
    path: PathBuf,
    fields: Fields,
    vocabulary: &'static Vocabulary,
    payload: String,
    commit_delay: Duration,
    /// Writes take the read side, since tantivy's writer accepts concurrent operations; commits
    /// and rebuilds take the write side, so no write lands half-way through them.
    writer: RwLock<IndexWriter>,
    reader: IndexReader,
    /// Also the reader's warmer, which keeps only a weak reference.
    column_cache: Arc<ColumnCache>,
    state: Mutex<CommitState>,
    wake: Condvar,
}

/// A directory index in a local folder. See the module documentation for when writes become
/// visible and what survives a crash.
pub struct DirectoryIndex {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
}

/// Documents are kept sorted by user ID within each segment, so that document order is the
/// tie-break order of results and a search can stop early (see [`crate::collector`]).
fn index_settings() -> IndexSettings {
    IndexSettings {
        sort_by_field: Some(IndexSortByField {
            field: schema::names::USER_ID.to_owned(),
            order: Order::Asc,
        }),
        ..IndexSettings::default()
    }
}

fn damaged(path: &Path, reason: impl ToString) -> Error {
    Error::Damaged { path: path.to_owned(), reason: reason.to_string() }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Creates or removes the open marker and syncs the folder, so the marker's state survives a
/// crash.
fn set_open_marker(path: &Path, present: bool) -> Result<()> {
    let marker = path.join(OPEN_MARKER);
    if present {
        fs::File::create(&marker)?.sync_all()?;
    } else if let Err(error) = fs::remove_file(&marker) {
        if error.kind() != std::io::ErrorKind::NotFound {
            return Err(error.into());
        }
    }
    fs::File::open(path)?.sync_all()?;
    Ok(())
}

impl DirectoryIndex {
    /// Opens the index in `path`, or creates an empty one when the folder contains none. The folder
    /// is created if needed and belongs to the index alone.
    ///
    /// Fails with [`Error::Damaged`] when the folder contains an index that cannot be read; the
    /// caller then calls [`DirectoryIndex::recreate`] and rebuilds. Fails with [`Error::Locked`]
    /// when another handle has the index open.
    pub fn open_or_create(
        path: &Path,
        config: IndexConfig,
    ) -> Result<(DirectoryIndex, OpenStatus)> {
        fs::create_dir_all(path)?;
        let directory = MmapDirectory::open(path).map_err(|error| match error {
            OpenDirectoryError::IoError { io_error, .. } => {
                Error::Io(std::io::Error::new(io_error.kind(), io_error.to_string()))
            }
            other => damaged(path, other),
        })?;
        let (schema, fields) = schema::build_schema();
        let vocabulary = Vocabulary::builtin();
        let payload = serde_json::to_string(&CommitPayload {
            format: FORMAT_VERSION,
            vocabulary: format!("{:016x}", vocabulary.fingerprint()),
        })
        .map_err(|error| damaged(path, error))?;

        let exists = Index::exists(&directory).map_err(|error| damaged(path, error))?;
        let (index, mut status) = if exists {
            let index = Index::open(directory).map_err(|error| damaged(path, error))?;
            if index.schema() != schema {
                return Err(damaged(path, "it was written with another schema"));
            }
            if index.settings().sort_by_field != index_settings().sort_by_field {
                return Err(damaged(path, "its documents are not sorted by user ID"));
            }
            let metas = index.load_metas().map_err(|error| damaged(path, error))?;
            let status = if metas.payload.as_deref() == Some(payload.as_str()) {
                OpenStatus::Ready
            } else {
                OpenStatus::Outdated
            };
            (index, status)
        } else {
            let index = Index::create(directory, schema, index_settings())?;
            (index, OpenStatus::Created)
        };
        text::register_tokenizers(index.tokenizers());

        // Opening the reader opens every segment, so missing or truncated files fail here.
        // Commits reload the reader at once. The policy also picks up segments merged in the
        // background, which change the index files without a commit of ours.
        let column_cache = Arc::new(ColumnCache::default());
        let warmer: Arc<dyn Warmer> = column_cache.clone();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .warmers(vec![Arc::downgrade(&warmer)])
            .try_into()
            .map_err(|error| damaged(path, error))?;
        if config.verify_checksums && exists {
            let corrupt = index.validate_checksum().map_err(|error| damaged(path, error))?;
            if !corrupt.is_empty() {
                return Err(damaged(path, format!("checksum mismatch in {corrupt:?}")));
            }
        }

        let writer = index.writer(config.writer_memory_bytes).map_err(|error| match error {
            TantivyError::LockFailure(LockError::LockBusy, _) => {
                Error::Locked { path: path.to_owned() }
            }
            other => Error::Tantivy(other),
        })?;

        if status == OpenStatus::Ready && path.join(OPEN_MARKER).exists() {
            status = OpenStatus::Unclean;
        }
        set_open_marker(path, true)?;

        let shared = Arc::new(Shared {
            path: path.to_owned(),
            fields,
            vocabulary,
            payload,
            commit_delay: config.commit_delay,
            writer: RwLock::new(writer),
            reader,
            column_cache,
            state: Mutex::new(CommitState::default()),
            wake: Condvar::new(),
        });
        if status == OpenStatus::Created {
            // Leave a complete empty index with its payload, so the next open finds one.
            shared.commit_now(true)?;
        }

        let committer_shared = Arc::clone(&shared);
        let committer = std::thread::Builder::new()
            .name("directory-commit".to_owned())
            .spawn(move || committer_shared.run_committer())?;
        info!(path = %path.display(), ?status, entries = shared.reader.searcher().num_docs(), "directory index opened");
        Ok((DirectoryIndex { shared, committer: Some(committer) }, status))
    }

    /// Deletes everything in `path` and creates an empty index there, for an index that
    /// [`DirectoryIndex::open_or_create`] reported as damaged.
    pub fn recreate(path: &Path, config: IndexConfig) -> Result<DirectoryIndex> {
        warn!(path = %path.display(), "deleting the directory index to recreate it");
        match fs::remove_dir_all(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
        let (index, _) = Self::open_or_create(path, config)?;
        Ok(index)
    }

    /// Checks that the files of the last commit are still on disk and readable, for a periodic
    /// health check: an index folder deleted or damaged while the server runs is noticed here,
    /// while searches may keep working from memory-mapped files.
    pub fn check(&self) -> Result<()> {
        let path = &self.shared.path;
        let index = Index::open_in_dir(path).map_err(|error| damaged(path, error))?;
        index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|error| damaged(path, error))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Number of segments searches run over, for diagnostics; background merges reduce it.
    pub fn segment_count(&self) -> usize {
        self.shared.reader.searcher().segment_readers().len()
    }

    /// Commits pending writes, stops the background committer and removes the open marker.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(committer) = self.committer.take() else {
            return Ok(());
        };
        lock(&self.shared.state).shutdown = true;
        self.shared.wake.notify_all();
        if committer.join().is_err() {
            error!("the directory commit thread panicked");
        }
        self.shared.commit_now(false)?;
        set_open_marker(&self.shared.path, false)?;
        info!(path = %self.shared.path.display(), "directory index closed");
        Ok(())
    }

    /// Like [`DirectoryBackend::rebuild`], for any iterator and progress callback.
    pub fn rebuild_from<I, F>(&self, entries: I, mut progress: F) -> Result<RebuildProgress>
    where
        I: IntoIterator<Item = DirectoryEntry>,
        F: FnMut(RebuildProgress),
    {
        let mut entries = entries.into_iter();
        self.shared.rebuild(&mut entries, &mut progress)
    }
}

impl Drop for DirectoryIndex {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            error!(path = %self.shared.path.display(), %error, "closing the directory index failed");
        }
    }
}

impl Shared {
    fn mark_dirty(&self) {
        let mut state = lock(&self.state);
        if !state.dirty {
            state.dirty = true;
            self.wake.notify_all();
        }
    }

    /// Commits pending writes, or all writes when `force`, and reloads the reader.
    fn commit_now(&self, force: bool) -> Result<()> {
        let mut writer = self.writer.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        {
            let mut state = lock(&self.state);
            if !state.dirty && !force {
                return Ok(());
            }
            // Cleared before the commit: the write lock keeps writes out until it is done.
            state.dirty = false;
        }
        let started = Instant::now();
        let result = Self::commit_writer(&mut writer, &self.payload);
        drop(writer);
        if let Err(error) = result {
            lock(&self.state).dirty = true;
            return Err(error);
        }
        self.reader.reload()?;
        debug!(elapsed_ms = started.elapsed().as_millis() as u64, "directory index committed");
        Ok(())
    }

    fn commit_writer(writer: &mut IndexWriter, payload: &str) -> Result<()> {
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(payload);
        prepared.commit()?;
        Ok(())
    }

    fn run_committer(&self) {
        loop {
            let mut state = lock(&self.state);
            while !state.dirty && !state.shutdown {
                state = self.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.shutdown {
                return;
            }
            // Let more writes join this commit; a shutdown ends the wait early.
            let (state, _) = self
                .wake
                .wait_timeout_while(state, self.commit_delay, |state| !state.shutdown)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if state.shutdown {
                return;
            }
            drop(state);

            if let Err(error) = self.commit_now(false) {
                error!(path = %self.path.display(), %error, "committing the directory index failed; retrying");
                std::thread::sleep(COMMIT_RETRY_DELAY);
            }
        }
    }

    fn upsert(&self, entry: &DirectoryEntry) -> Result<()> {
        entry.validate()?;
        let document = schema::document(entry, &self.fields, self.vocabulary)?;
        let term = Term::from_field_text(self.fields.user_id, &entry.user_id);
        {
            let writer = self.writer.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            // One batch, so that no commit contains the delete without the add.
            writer.run([UserOperation::Delete(term), UserOperation::Add(document)])?;
        }
        self.mark_dirty();
        Ok(())
    }

    fn remove(&self, user_id: &str) -> Result<()> {
        let term = Term::from_field_text(self.fields.user_id, user_id);
        {
            let writer = self.writer.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            writer.delete_term(term);
        }
        self.mark_dirty();
        Ok(())
    }

    fn get(&self, user_id: &str) -> Result<Option<DirectoryEntry>> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.user_id, user_id),
            IndexRecordOption::Basic,
        );
        let addresses = searcher.search(&query, &DocSetCollector)?;
        match addresses.into_iter().next() {
            Some(address) => Ok(Some(self.load_entry(&searcher.doc(address)?)?)),
            None => Ok(None),
        }
    }

    fn load_entry(&self, document: &TantivyDocument) -> Result<DirectoryEntry> {
        let source = document
            .get_first(self.fields.source)
            .and_then(|value| value.as_bytes())
            .ok_or_else(|| damaged(&self.path, "a document has no stored source"))?;
        serde_json::from_slice(source).map_err(|error| {
            damaged(&self.path, format!("a stored source is not valid JSON: {error}"))
        })
    }

    fn search(&self, request: &SearchRequest) -> Result<SearchResults> {
        request.validate()?;
        let limit = request.effective_limit();
        let fingerprint = cursor::request_fingerprint(request);
        let after = match &request.cursor {
            Some(cursor) => Some(Cursor::decode(cursor, fingerprint)?),
            None => None,
        };

        let searcher = self.reader.searcher();
        let mut analyzer = text::words_analyzer();
        let plan = Planner {
            searcher: &searcher,
            fields: &self.fields,
            vocabulary: self.vocabulary,
            analyzer: &mut analyzer,
        }
        .build(request)?;
        // Stopping early leaves the total and the facet counts incomplete.
        let stop_at_score = if request.exact_total || !request.facets.is_empty() {
            None
        } else {
            Some(plan.max_score)
        };
        let collector = HitCollector {
            keep: limit + 1,
            after,
            near: request.filters.near,
            facets: request.facets.clone(),
            stop_at_score,
            column_cache: Arc::clone(&self.column_cache),
        };

        let Collected { mut hits, total, total_is_exact, facets } =
            searcher.search(&*plan.query, &collector)?;

        let next_cursor = if hits.len() > limit {
            hits.truncate(limit);
            hits.last().map(|last| {
                Cursor { score: last.score, user_id: last.user_id.clone() }.encode(fingerprint)
            })
        } else {
            None
        };

        let mut results = Vec::with_capacity(hits.len());
        for hit in hits {
            let entry = self.load_entry(&searcher.doc(hit.address)?)?;
            results.push(SearchHit { entry, score: hit.score, distance_km: hit.distance_km });
        }

        let facets = facets
            .into_iter()
            .map(|(dimension, counts)| {
                let mut counts: Vec<FacetCount> =
                    counts.into_iter().map(|(value, count)| FacetCount { value, count }).collect();
                counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
                counts.truncate(request.facet_limit);
                (dimension, counts)
            })
            .collect::<BTreeMap<_, _>>();

        Ok(SearchResults { hits: results, total, total_is_exact, facets, next_cursor })
    }

    fn rebuild(
        &self,
        entries: &mut dyn Iterator<Item = DirectoryEntry>,
        progress: &mut dyn FnMut(RebuildProgress),
    ) -> Result<RebuildProgress> {
        let started = Instant::now();
        let expected = match entries.size_hint() {
            (lower, Some(upper)) if lower == upper => Some(lower as u64),
            _ => None,
        };
        let mut report = RebuildProgress {
            indexed: 0,
            skipped: 0,
            expected,
            elapsed: Duration::ZERO,
            finished: false,
        };
        info!(path = %self.path.display(), ?expected, "rebuilding the directory index");

        let mut writer = self.writer.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        lock(&self.state).dirty = false;
        // Uncommitted writes are dropped: the entries come from the store, which has them.
        writer.rollback()?;
        writer.delete_all_documents()?;

        let result = (|| -> Result<()> {
            for entry in entries {
                if let Err(error) = entry.validate() {
                    warn!(%error, "leaving an invalid entry out of the directory index");
                    report.skipped += 1;
                    continue;
                }
                writer.add_document(schema::document(&entry, &self.fields, self.vocabulary)?)?;
                report.indexed += 1;
                if report.indexed.is_multiple_of(PROGRESS_EVERY) {
                    report.elapsed = started.elapsed();
                    progress(report);
                }
            }
            Self::commit_writer(&mut writer, &self.payload)
        })();

        if let Err(error) = result {
            // Searches keep the previous content: nothing of the rebuild was committed.
            if let Err(rollback_error) = writer.rollback() {
                error!(error = %rollback_error, "rolling back a failed rebuild failed");
            }
            return Err(error);
        }
        drop(writer);
        self.reader.reload()?;

        report.elapsed = started.elapsed();
        report.finished = true;
        progress(report);
        info!(
            indexed = report.indexed,
            skipped = report.skipped,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "directory index rebuilt"
        );
        Ok(report)
    }
}

impl DirectoryBackend for DirectoryIndex {
    fn upsert(&self, entry: &DirectoryEntry) -> Result<()> {
        self.shared.upsert(entry)
    }

    fn remove(&self, user_id: &str) -> Result<()> {
        self.shared.remove(user_id)
    }

    fn commit(&self) -> Result<()> {
        self.shared.commit_now(false)
    }

    fn get(&self, user_id: &str) -> Result<Option<DirectoryEntry>> {
        self.shared.get(user_id)
    }

    fn search(&self, request: &SearchRequest) -> Result<SearchResults> {
        self.shared.search(request)
    }

    fn rebuild(
        &self,
        entries: &mut dyn Iterator<Item = DirectoryEntry>,
        progress: &mut dyn FnMut(RebuildProgress),
    ) -> Result<RebuildProgress> {
        self.shared.rebuild(entries, progress)
    }

    fn num_entries(&self) -> u64 {
        self.shared.reader.searcher().num_docs()
    }
}
