//! The application service registration file, in the YAML format that Synapse reads.
//!
//! `generate-registration` writes it once; hospital IT gives the same file to the homeserver
//! (`[appservices] registration_files`) and to the gatekeeper (`homeserver.registration_file`).

use std::path::Path;

use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};

/// The key that marks the registration of the verification gatekeeper. The homeserver grants
/// the privileged verification endpoints only to the application service that carries it.
pub const GATEKEEPER_KEY: &str = "org.caduceus.gatekeeper";

/// One application service registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub url: String,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub namespaces: Namespaces,
    #[serde(default)]
    pub rate_limited: bool,
    #[serde(default)]
    pub receive_ephemeral: bool,
    #[serde(default)]
    pub protocols: Vec<String>,
    #[serde(rename = "org.caduceus.gatekeeper", default)]
    pub gatekeeper: bool,
}

/// The user IDs, room aliases and room IDs the application service is interested in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<Namespace>,
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

/// One namespace: a regular expression and whether only this service may use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: String,
}

/// A registration file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read the registration file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the registration file {path} is not valid: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("the registration file {path} is not valid: {problem}")]
    Invalid { path: String, problem: String },
}

impl Registration {
    /// Makes a gatekeeper registration with fresh random tokens. `server_name`, when given,
    /// limits the bot's exclusive namespace to that server.
    pub fn generate(
        id: &str,
        url: &str,
        sender_localpart: &str,
        server_name: Option<&str>,
    ) -> Self {
        let token = || Alphanumeric.sample_string(&mut rand::thread_rng(), 64);
        let server = server_name.map_or_else(|| ".*".to_owned(), escape_regex);
        Self {
            id: id.to_owned(),
            url: url.to_owned(),
            as_token: token(),
            hs_token: token(),
            sender_localpart: sender_localpart.to_owned(),
            namespaces: Namespaces {
                users: vec![Namespace {
                    exclusive: true,
                    regex: format!("^@{}:{server}$", escape_regex(sender_localpart)),
                }],
                aliases: Vec::new(),
                rooms: Vec::new(),
            },
            rate_limited: false,
            receive_ephemeral: false,
            protocols: Vec::new(),
            gatekeeper: true,
        }
    }

    /// Returns the registration as YAML.
    pub fn to_yaml(&self) -> String {
        // Serialising plain strings, booleans and lists cannot fail.
        serde_yaml::to_string(self).expect("a registration always serialises")
    }

    /// Reads and checks a registration file.
    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| RegistrationError::Read { path: name.clone(), source })?;
        let registration: Self = serde_yaml::from_str(&text)
            .map_err(|source| RegistrationError::Parse { path: name.clone(), source })?;
        let invalid = |problem: &str| RegistrationError::Invalid {
            path: name.clone(),
            problem: problem.to_owned(),
        };
        if registration.as_token.is_empty() || registration.hs_token.is_empty() {
            return Err(invalid("as_token and hs_token must not be empty"));
        }
        if registration.as_token == registration.hs_token {
            return Err(invalid("as_token and hs_token must differ"));
        }
        if registration.sender_localpart.is_empty() {
            return Err(invalid("sender_localpart must not be empty"));
        }
        Ok(registration)
    }
}

/// Escapes the characters that have a meaning in a regular expression.
fn escape_regex(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_registration_parses_back() {
        let registration = Registration::generate(
            "gatekeeper",
            "http://127.0.0.1:8009",
            "verification",
            Some("example.org"),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        std::fs::write(&path, registration.to_yaml()).unwrap();

        let loaded = Registration::load(&path).unwrap();
        assert_eq!(loaded, registration);
        assert_eq!(loaded.namespaces.users[0].regex, "^@verification:example\\.org$");
        assert!(loaded.namespaces.users[0].exclusive);
        assert_eq!(loaded.as_token.len(), 64);
        assert_ne!(loaded.as_token, loaded.hs_token);

        // The keys other registration readers look for are spelled as Synapse spells them.
        let yaml: serde_yaml::Value = serde_yaml::from_str(&registration.to_yaml()).unwrap();
        assert_eq!(yaml["org.caduceus.gatekeeper"], serde_yaml::Value::Bool(true));
        assert_eq!(yaml["sender_localpart"].as_str(), Some("verification"));
        assert!(yaml["namespaces"]["aliases"].as_sequence().unwrap().is_empty());
    }

    #[test]
    fn tokens_differ_between_registrations() {
        let first = Registration::generate("a", "http://127.0.0.1:1", "bot", None);
        let second = Registration::generate("a", "http://127.0.0.1:1", "bot", None);
        assert_ne!(first.as_token, second.as_token);
        assert_eq!(first.namespaces.users[0].regex, "^@bot:.*$");
    }

    #[test]
    fn invalid_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        std::fs::write(&path, "id: x\nurl: y\n").unwrap();
        let error = Registration::load(&path).unwrap_err().to_string();
        assert!(error.contains("as_token"), "{error}");

        let mut registration = Registration::generate("a", "http://127.0.0.1:1", "bot", None);
        registration.hs_token = registration.as_token.clone();
        std::fs::write(&path, registration.to_yaml()).unwrap();
        let error = Registration::load(&path).unwrap_err().to_string();
        assert!(error.contains("must differ"), "{error}");

        let error = Registration::load(&dir.path().join("missing.yaml")).unwrap_err().to_string();
        assert!(error.contains("missing.yaml"), "{error}");
    }
}
