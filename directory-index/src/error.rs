//! The one error type of the directory index.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The index folder contains an index that cannot be used: files are missing or corrupt, or it was
    /// written with another schema. The caller recreates the index and rebuilds it from its store.
    #[error("the directory index at {path} is damaged ({reason}); recreate it and rebuild it from the store")]
    Damaged { path: PathBuf, reason: String },

    /// Another process or another `DirectoryIndex` holds the writer lock of the folder. The index is
    /// not damaged, so it must not be recreated.
    #[error("the directory index at {path} is already open in another process or handle")]
    Locked { path: PathBuf },

    /// An entry failed validation and was not indexed.
    #[error("invalid directory entry for {user_id}: {reason}")]
    InvalidEntry { user_id: String, reason: String },

    /// A search request failed validation.
    #[error("invalid search request: {0}")]
    InvalidRequest(String),

    /// A paging cursor that this index did not issue, or that was issued for another query.
    #[error("invalid or expired cursor; start again from the first page")]
    InvalidCursor,

    /// A specialty or profession filter names no term of the vocabulary.
    #[error("unknown specialty or profession {0:?}")]
    UnknownSpecialty(String),

    /// The specialty vocabulary file is malformed.
    #[error("invalid specialty vocabulary: {0}")]
    Vocabulary(String),

    #[error("directory index I/O failed: {0}")]
    Io(#[from] std::io::Error),

    #[error("directory index operation failed: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}
