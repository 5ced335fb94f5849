//! The server's ed25519 signing key, generated on first start and kept in the data dir.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use ruma::signatures::Ed25519KeyPair;
use serde::{Deserialize, Serialize};

use super::super::accounts::random_string;

/// The key file's name inside the data dir.
const KEY_FILE: &str = "signing_key.json";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    /// The key version, as in the key ID `ed25519:<version>`.
    version: String,
    /// The PKCS#8 document of the key pair, in standard base64.
    pkcs8: String,
}

/// Loads the signing key, generating and storing it (mode 0600) if the data dir has none.
pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<Ed25519KeyPair> {
    let path = data_dir.join(KEY_FILE);
    let base64 = base64::engine::general_purpose::STANDARD;

    if !path.exists() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let document = Ed25519KeyPair::generate();
        let file = KeyFile {
            version: format!("a_{}", random_string(4)),
            pkcs8: base64.encode(&*document),
        };
        let temp = data_dir.join(format!("{KEY_FILE}.tmp"));
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot write {}", temp.display()))?;
        handle.write_all(&serde_json::to_vec(&file)?)?;
        handle.sync_all()?;
        std::fs::rename(&temp, &path)?;
        tracing::info!(
            key_id = format!("ed25519:{}", file.version),
            "generated the server signing key"
        );
    }

    let file: KeyFile = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a valid key file", path.display()))?;
    let document = base64.decode(&file.pkcs8).context("the signing key is not valid base64")?;
    Ed25519KeyPair::from_der(&document, file.version).map_err(|error| {
        anyhow::anyhow!("the signing key in {} is invalid: {error}", path.display())
    })
}
