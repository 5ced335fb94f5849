//! RocksDB storage: one column family per table, typed handles, synced writes.
//!
//! Durability contract: every write goes through [`Db::commit`] with `sync = true`, so RocksDB
//! has the batch in its fsynced write-ahead log before the call returns. Handlers acknowledge a
//! client only after that, which is what lets acknowledged data survive `kill -9`. RocksDB groups
//! concurrent synced writers into one fsync, so this does not serialise writers on the disk.

pub mod codec;
mod migrations;
pub mod tables;

use std::marker::PhantomData;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use codec::KeyCodec;

/// The schema version that this build writes. [`migrations`] upgrades older data dirs to it.
pub const SCHEMA_VERSION: u32 = 1;

/// A failure of the storage layer. These are our own failures, never a client's mistake.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create the database folder {path}: {error}")]
    CreateDir { path: std::path::PathBuf, error: std::io::Error },
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("a record in table `{table}` could not be decoded: {message}")]
    Corrupt { table: &'static str, message: String },
    #[error("the data dir has schema version {found}, newer than {supported} which this build supports; run a newer Caduceus")]
    TooNew { found: u32, supported: u32 },
    #[error("the database is in use by another process (is a Caduceus server running on this data dir?): {0}")]
    Locked(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A typed table: a column family whose keys and values have fixed codecs.
///
/// Tables are declared once in [`tables`]; code never names a column family by string.
pub struct Table<K, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Self { name, _types: PhantomData }
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// The open database.
pub struct Db {
    rocks: rocksdb::DB,
}

impl Db {
    /// Opens (or creates) the database under `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|error| StorageError::CreateDir { path: path.to_owned(), error })?;

        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(5);

        let descriptors =
            tables::ALL.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let rocks = rocksdb::DB::open_cf_descriptors(&options, path, descriptors).map_err(|e| {
            let message = e.to_string();
            if message.contains("lock") {
                StorageError::Locked(message)
            } else {
                StorageError::Rocks(e)
            }
        })?;

        let db = Self { rocks };
        migrations::run(&db)?;
        Ok(db)
    }

    fn cf<K, V>(&self, table: &Table<K, V>) -> &rocksdb::ColumnFamily {
        // Every table in `tables::ALL` is created at open, so a missing handle is a programming
        // error: a table declared without being listed.
        self.rocks
            .cf_handle(table.name)
            .unwrap_or_else(|| panic!("table `{}` is not listed in tables::ALL", table.name))
    }

    /// Reads one record.
    pub fn get<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<Option<V>> {
        match self.rocks.get_pinned_cf(self.cf(table), key.encode_key())? {
            Some(bytes) => decode_value(table.name, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Reads every record whose key starts with the encoded `prefix`, in key order.
    pub fn scan_prefix<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        prefix: &[u8],
    ) -> Result<Vec<(K, V)>> {
        let mut records = Vec::new();
        let iter =
            self.rocks.iterator_cf(self.cf(table), IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            let key = K::decode_key(&key)
                .map_err(|message| StorageError::Corrupt { table: table.name, message })?;
            records.push((key, decode_value(table.name, &value)?));
        }
        Ok(records)
    }

    /// Reads the records from `start` on, in key order, while their keys start with `within`.
    pub fn scan_range<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        start: &K,
        within: &[u8],
    ) -> Result<Vec<(K, V)>> {
        let start = start.encode_key();
        let mut records = Vec::new();
        let iter =
            self.rocks.iterator_cf(self.cf(table), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(within) {
                break;
            }
            let key = K::decode_key(&key)
                .map_err(|message| StorageError::Corrupt { table: table.name, message })?;
            records.push((key, decode_value(table.name, &value)?));
        }
        Ok(records)
    }

    /// Reads the records whose encoded keys lie in `start..end`, in key order.
    pub fn scan_between<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<(K, V)>> {
        let mut records = Vec::new();
        let iter =
            self.rocks.iterator_cf(self.cf(table), IteratorMode::From(start, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            if &*key >= end {
                break;
            }
            let key = K::decode_key(&key)
                .map_err(|message| StorageError::Corrupt { table: table.name, message })?;
            records.push((key, decode_value(table.name, &value)?));
        }
        Ok(records)
    }

    /// Reads every record of a table, in key order.
    pub fn scan_all<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
    ) -> Result<Vec<(K, V)>> {
        self.scan_prefix(table, &[])
    }

    /// Writes one record durably.
    pub fn put<K: KeyCodec, V: Serialize>(
        &self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<()> {
        let mut batch = self.batch();
        batch.put(table, key, value);
        self.commit(batch)
    }

    /// Deletes one record durably.
    pub fn delete<K: KeyCodec, V>(&self, table: &Table<K, V>, key: &K) -> Result<()> {
        let mut batch = self.batch();
        batch.delete(table, key);
        self.commit(batch)
    }

    /// Starts a batch of writes that [`Db::commit`] applies atomically.
    pub fn batch(&self) -> Batch<'_> {
        Batch { db: self, inner: WriteBatch::default() }
    }

    /// Applies a batch atomically and returns once it is in the synced write-ahead log.
    pub fn commit(&self, batch: Batch<'_>) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.rocks.write_opt(batch.inner, &options)?;
        Ok(())
    }
}

/// Writes that are applied together or not at all.
pub struct Batch<'db> {
    db: &'db Db,
    inner: WriteBatch,
}

impl Batch<'_> {
    pub fn put<K: KeyCodec, V: Serialize>(&mut self, table: &Table<K, V>, key: &K, value: &V) {
        // Serialising our own record types to JSON fails only for maps with non-string keys,
        // which no record has.
        let bytes = serde_json::to_vec(value).expect("records serialise to JSON");
        self.inner.put_cf(self.db.cf(table), key.encode_key(), bytes);
    }

    pub fn delete<K: KeyCodec, V>(&mut self, table: &Table<K, V>, key: &K) {
        self.inner.delete_cf(self.db.cf(table), key.encode_key());
    }

    /// Deletes every record whose key starts with the encoded `prefix`.
    pub fn delete_prefix<K: KeyCodec, V>(
        &mut self,
        table: &Table<K, V>,
        prefix: &[u8],
    ) -> Result<()> {
        let cf = self.db.cf(table);
        let iter = self.db.rocks.iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (key, _) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            self.inner.delete_cf(cf, key);
        }
        Ok(())
    }
}

fn decode_value<V: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<V> {
    serde_json::from_slice(bytes)
        .map_err(|error| StorageError::Corrupt { table, message: error.to_string() })
}

#[cfg(test)]
mod tests;
