//! The storage of media bytes: the [`MediaStore`] trait, and [`LocalMediaStore`], which keeps
//! blobs in the data dir.
//!
//! Blobs are content-addressed: each is named by the lowercase hex SHA-256 of its bytes, so two
//! uploads of the same file share one blob and a blob never changes once written.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWriteExt};

/// A blob store. The local filesystem is the embedded default; an S3-compatible object store
/// can implement the same trait.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Starts a new blob. Its bytes stay invisible until [`BlobWriter::commit`]; a writer that
    /// is dropped without committing leaves nothing behind.
    async fn create(&self) -> io::Result<Box<dyn BlobWriter>>;

    /// Opens the blob named `sha256`, or returns `None` when there is none.
    async fn open(&self, sha256: &str) -> io::Result<Option<Blob>>;
}

/// A blob being written.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: &[u8]) -> io::Result<()>;

    /// Makes the bytes durable and visible under `sha256`, the hash of everything written.
    /// When a blob of that name exists already, it contains the same bytes and is kept.
    async fn commit(self: Box<Self>, sha256: &str) -> io::Result<()>;
}

/// A blob opened for reading.
pub struct Blob {
    /// Size in bytes.
    pub size: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

/// Blobs under `<root>/blobs/<first two hex digits>/<sha256>`, staged in `<root>/tmp`.
///
/// Crash safety: a blob is written to a file in `tmp`, fsynced, renamed into `blobs` and the
/// directory is fsynced, so a blob under `blobs` is always complete. A crash mid-write leaves
/// only a file in `tmp`, which no media ID points to and [`LocalMediaStore::open`] deletes.
pub struct LocalMediaStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl LocalMediaStore {
    /// Opens the store under `root`, creating its folders, and deletes files left in `tmp` by
    /// an upload that a crash interrupted.
    ///
    /// Call it only while holding the database lock, as the server does at start: that lock
    /// ensures no other process is writing into `tmp`.
    pub fn open(root: &Path) -> io::Result<Self> {
        let store = Self { blobs: root.join("blobs"), tmp: root.join("tmp") };
        for dir in [&store.blobs, &store.tmp] {
            std::fs::create_dir_all(dir).map_err(|error| with_path(error, dir))?;
        }
        let removed = store.clean_tmp()?;
        if removed > 0 {
            tracing::info!(removed, dir = %store.tmp.display(), "deleted unfinished uploads");
        }
        Ok(store)
    }

    fn clean_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.tmp).map_err(|error| with_path(error, &self.tmp))? {
            let path = entry?.path();
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            result.map_err(|error| with_path(error, &path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir_blocking(&self.tmp)?;
        }
        Ok(removed)
    }

    /// The path of the blob named `sha256`, or `None` if that is not a blob name.
    fn blob_path(&self, sha256: &str) -> Option<PathBuf> {
        is_blob_name(sha256).then(|| self.blobs.join(&sha256[..2]).join(sha256))
    }
}

#[async_trait]
impl MediaStore for LocalMediaStore {
    async fn create(&self) -> io::Result<Box<dyn BlobWriter>> {
        let name = format!("{}.part", crate::service::accounts::random_string(24));
        let path = self.tmp.join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|error| with_path(error, &path))?;
        Ok(Box::new(LocalBlobWriter {
            file: Some(tokio::io::BufWriter::new(file)),
            path,
            blobs: self.blobs.clone(),
        }))
    }

    async fn open(&self, sha256: &str) -> io::Result<Option<Blob>> {
        let Some(path) = self.blob_path(sha256) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{sha256:?} is not a SHA-256 blob name"),
            ));
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(with_path(error, &path)),
        };
        let size = file.metadata().await?.len();
        Ok(Some(Blob { size, reader: Box::pin(file) }))
    }
}

struct LocalBlobWriter {
    /// The temp file, or `None` once committed, in which case `Drop` has nothing to delete.
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    path: PathBuf,
    blobs: PathBuf,
}

#[async_trait]
impl BlobWriter for LocalBlobWriter {
    async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(chunk).await,
            None => Err(io::Error::other("the blob is already committed")),
        }
    }

    async fn commit(mut self: Box<Self>, sha256: &str) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("the blob is already committed"));
        };
        if !is_blob_name(sha256) {
            let _ = tokio::fs::remove_file(&self.path).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{sha256:?} is not a SHA-256 blob name"),
            ));
        }
        let shard = self.blobs.join(&sha256[..2]);
        let target = shard.join(sha256);

        // The bytes reach the disk before the rename makes them visible, so a crash can never
        // expose a blob with missing content under its final name.
        let result = async {
            file.flush().await?;
            file.get_ref().sync_all().await?;
            drop(file);

            if tokio::fs::try_exists(&target).await? {
                // Same name, same bytes: keep the existing blob, which may be in use.
                tokio::fs::remove_file(&self.path).await?;
                return Ok(());
            }
            if !tokio::fs::try_exists(&shard).await? {
                tokio::fs::create_dir_all(&shard).await?;
                sync_dir(&self.blobs).await?;
            }
            tokio::fs::rename(&self.path, &target).await?;
            sync_dir(&shard).await
        }
        .await;

        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.path).await;
        }
        result.map_err(|error| with_path(error, &target))
    }
}

impl Drop for LocalBlobWriter {
    fn drop(&mut self) {
        // An abandoned upload (a client error, a closed connection) deletes its partial file at
        // once. A crash skips this, and the next start cleans `tmp` instead.
        if self.file.take().is_some() {
            if let Err(error) = std::fs::remove_file(&self.path) {
                tracing::warn!(error = %error, path = %self.path.display(), "cannot delete an unfinished upload");
            }
        }
    }
}

/// Whether `name` is a SHA-256 in lowercase hex, the only form of blob name, so that no name can
/// reach outside the store.
fn is_blob_name(name: &str) -> bool {
    name.len() == 64
        && name.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Fsyncs a directory, so that renames and new entries in it survive a crash.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

fn sync_dir_blocking(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}
