//! Schema versions and the migrations between them, run at start-up before anything else reads.

use super::{tables, Db, Result, StorageError, SCHEMA_VERSION};

const VERSION_KEY: &str = "schema_version";

/// Brings the database to [`SCHEMA_VERSION`].
///
/// A new database is stamped with the current version. An older one is migrated step by step,
/// each step committed with its new version number in the same batch, so a crash between steps
/// resumes from the last completed one.
pub fn run(db: &Db) -> Result<()> {
    match stored_version(db)? {
        None => {
            tracing::info!(version = SCHEMA_VERSION, "initialising a new database");
            db.put(&tables::META, &VERSION_KEY.to_owned(), &serde_json::json!(SCHEMA_VERSION))
        }
        Some(found) if found > SCHEMA_VERSION => {
            Err(StorageError::TooNew { found, supported: SCHEMA_VERSION })
        }
        Some(found) => {
            // Version 1 is the first schema; later versions add their steps here as
            // `migrate_to_N(db)` and stamp the version in the same batch.
            if found < SCHEMA_VERSION {
                tracing::info!(from = found, to = SCHEMA_VERSION, "migrating the database");
                db.put(&tables::META, &VERSION_KEY.to_owned(), &serde_json::json!(SCHEMA_VERSION))?;
            }
            Ok(())
        }
    }
}

/// The schema version stored in the database.
pub fn stored_version(db: &Db) -> Result<Option<u32>> {
    Ok(db
        .get(&tables::META, &VERSION_KEY.to_owned())?
        .and_then(|value| value.as_u64())
        .map(|version| version as u32))
}
