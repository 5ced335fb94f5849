//! Typed settings for Caduceus.
//!
//! Settings come from three layers, each overriding the one before: the defaults in this crate
//! (enough to start a server on `localhost` with no file), an optional TOML file, and environment
//! variables named `CADUCEUS__SECTION__KEY` (for example `CADUCEUS__SERVER__LISTEN=127.0.0.1:9000`).
//! `caduceus.example.toml` beside this crate lists every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod appservice;

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "CADUCEUS";

/// Separator between the prefix, the section and the key in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// A setting that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or has the wrong type.
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),

    /// A value has the right type but is not allowed.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// All settings of the homeserver.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub registration: RegistrationConfig,
    pub media: MediaConfig,
    pub rooms: RoomsConfig,
    pub security: SecurityConfig,
    pub logging: LoggingConfig,
    pub directory: DirectoryConfig,
    pub email: EmailConfig,
    pub verification: VerificationConfig,
    pub appservices: AppservicesConfig,
}

/// Identity of the server and how it listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The server name in user IDs (`@alice:SERVER_NAME`). It cannot change once users exist.
    pub server_name: String,
    /// The socket address the client API listens on.
    pub listen: SocketAddr,
    /// The URL clients use to reach this server, advertised in `/.well-known/matrix/client`.
    /// Empty means `http://` followed by the `listen` address.
    pub public_baseurl: String,
    /// The largest request body the client API accepts, in bytes.
    pub max_request_body_bytes: usize,
}

/// Storage location.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The folder that contains the RocksDB database and the signing key. Created if missing.
    pub data_dir: PathBuf,
}

/// Registration policy: which `/register` stages are offered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Allows registration with a token made by `caduceus admin registration-token create`
    /// (the `m.login.registration_token` stage).
    pub token: bool,
    /// Allows anyone to register without a token (the `m.login.dummy` stage). Off by default,
    /// because only verified professionals should reach the server.
    pub open: bool,
    /// Email domains whose addresses may register after validating the address with an emailed
    /// code (the `m.login.email.identity` stage); subdomains count too. Empty turns registration
    /// by email off.
    pub trusted_email_domains: Vec<String>,
}

/// The media repository: uploads, downloads and thumbnails.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The largest file a client may upload, in bytes. Larger uploads are rejected with
    /// `M_TOO_LARGE`. Clients learn this value from `/_matrix/client/v1/media/config`.
    pub max_upload_bytes: u64,
    /// How many uploads (`POST /upload` and `POST /create`) one user may start per minute.
    /// Requests beyond it are rejected with `M_LIMIT_EXCEEDED` and a retry delay.
    pub uploads_per_minute: u32,
    /// How many media IDs from `POST /_matrix/media/v1/create` one user may hold without
    /// having uploaded their content yet.
    pub max_pending_uploads: u32,
}

/// Protection of logins against password guessing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Wrong passwords in a row that lock an account.
    pub lockout_threshold: u32,
    /// How long the first lockout lasts, in seconds.
    pub first_lockout_secs: u64,
    /// How long every later lockout lasts, in seconds, until a successful login resets the count.
    pub later_lockout_secs: u64,
    /// Failed logins one source address may make per minute, across all accounts, before its
    /// attempts are rejected with `M_LIMIT_EXCEEDED`; 0 turns the check off.
    pub failed_logins_per_address_per_minute: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            lockout_threshold: 3,
            first_lockout_secs: 3 * 60,
            later_lockout_secs: 15 * 60,
            failed_logins_per_address_per_minute: 10,
        }
    }
}

/// Defaults for new rooms.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// The room version of rooms created without one: "10", "11" or "12".
    pub default_room_version: String,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_room_version: "11".to_owned() }
    }
}

/// The directory REST API for hospital systems.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Keys that authorise a system to call /_caduceus/directory/v1 as
    /// `Authorization: Bearer KEY`. Access tokens of medical users are accepted too.
    pub api_keys: Vec<String>,
}

/// Outgoing email, used to check the email addresses of users.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server that relays mail. Empty means no mail leaves the server: each message
    /// is written to the log at INFO level instead, which suits a developer's machine only.
    pub smtp_host: String,
    /// The SMTP server's port: 587 for STARTTLS submission, 465 for TLS, 25 for plain SMTP.
    pub smtp_port: u16,
    /// The protection of the connection to the SMTP server.
    pub security: SmtpSecurity,
    /// The SMTP user name. Empty means the server does not log in.
    pub username: String,
    /// The SMTP password, used when `username` is set.
    pub password: String,
    /// The sender of every mail, as `Name <address>` or a bare address.
    pub from: String,
    /// How long an emailed validation code stays valid, and how long a validated address may
    /// then be used to register, reset a password or add it to an account, in seconds.
    pub token_lifetime_secs: u64,
    /// How many validation mails one email address may receive per hour. Repeated requests
    /// with the same `send_attempt` send no mail and do not count.
    pub mails_per_address_per_hour: u32,
}

/// The protection of the connection to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP upgraded with the STARTTLS command, which must succeed.
    Starttls,
    /// TLS from the first byte (often port 465).
    Tls,
    /// No encryption, for a relay on the same machine or in tests.
    None,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_host: String::new(),
            smtp_port: 587,
            security: SmtpSecurity::Starttls,
            username: String::new(),
            password: String::new(),
            from: "Caduceus <noreply@localhost>".to_owned(),
            token_lifetime_secs: 60 * 60,
            mails_per_address_per_hour: 5,
        }
    }
}

/// A verification level that an action requires; `pending` means no requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinimumLevel {
    Pending,
    Identity,
    Medical,
}

/// Who may make contact with whom, by verification level. Each key is the lowest level that
/// may take the action. The users in `support_users`, and the verification gatekeeper's
/// application service users, are never blocked and can always be reached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerificationConfig {
    /// Creating rooms. Below it, a user can still create a room whose invitees are all
    /// support users.
    pub create_rooms: MinimumLevel,
    /// Inviting someone, in `/invite` or in `/createRoom`.
    pub invite: MinimumLevel,
    /// Receiving an invitation from anyone but a support user.
    pub be_invited: MinimumLevel,
    /// Joining or knocking on rooms. Below it, a user can join only rooms a support user
    /// invited them to.
    pub join_rooms: MinimumLevel,
    /// Looking up another person's profile by Matrix ID, outside shared rooms.
    pub lookup: MinimumLevel,
    /// Full user IDs of support staff, such as "@support:example.org".
    pub support_users: Vec<String>,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            create_rooms: MinimumLevel::Identity,
            invite: MinimumLevel::Identity,
            be_invited: MinimumLevel::Identity,
            join_rooms: MinimumLevel::Identity,
            lookup: MinimumLevel::Identity,
            support_users: Vec::new(),
        }
    }
}

/// Application services (bridges, bots and the verification gatekeeper), registered the way
/// Synapse registers them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppservicesConfig {
    /// Registration files in Synapse's YAML format, one per application service. An invalid
    /// file stops the start.
    pub registration_files: Vec<PathBuf>,
    /// The first wait before a failed transaction is sent again, in milliseconds. Each further
    /// failure doubles it up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// The longest wait between two attempts to send a transaction, in milliseconds.
    pub retry_max_ms: u64,
    /// How long the server waits for an application service to answer a user or alias query,
    /// a ping or a transaction, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for AppservicesConfig {
    fn default() -> Self {
        Self {
            registration_files: Vec::new(),
            retry_base_ms: 1000,
            retry_max_ms: 5 * 60 * 1000,
            request_timeout_ms: 10_000,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing` filter directive, such as `info` or `caduceus_server=debug,info`.
    /// The `RUST_LOG` environment variable takes precedence when it is set.
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

/// The output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            public_baseurl: String::new(),
            max_request_body_bytes: 1024 * 1024,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("./data") }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self { token: true, open: false, trusted_email_domains: Vec::new() }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 100 * 1024 * 1024,
            uploads_per_minute: 60,
            max_pending_uploads: 20,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

impl Config {
    /// Loads the defaults, then `file` if given, then the `CADUCEUS__*` environment variables,
    /// and checks the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Loads settings like [`Config::load`], with the environment given as name and value pairs.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env_source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            // Lists are comma-separated, such as CADUCEUS__DIRECTORY__API_KEYS=key1,key2.
            .list_separator(",")
            .with_list_parse_key("directory.api_keys")
            .with_list_parse_key("verification.support_users")
            .with_list_parse_key("appservices.registration_files")
            .with_list_parse_key("registration.trusted_email_domains")
            .source(Some(env.into_iter().collect()));

        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file).format(config::FileFormat::Toml).required(true),
            );
        }
        let config: Config = builder.add_source(env_source).build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Returns the base URL that clients use to reach the server.
    pub fn public_baseurl(&self) -> String {
        if self.server.public_baseurl.is_empty() {
            format!("http://{}", self.server.listen)
        } else {
            self.server.public_baseurl.trim_end_matches('/').to_owned()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_server_name(&self.server.server_name)
            .map_err(|problem| ConfigError::Invalid { key: "server.server_name", problem })?;

        if self.server.max_request_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "server.max_request_body_bytes",
                problem: format!(
                    "is {} but must be at least 1024 bytes",
                    self.server.max_request_body_bytes
                ),
            });
        }

        let baseurl = &self.server.public_baseurl;
        if !baseurl.is_empty()
            && !baseurl.starts_with("http://")
            && !baseurl.starts_with("https://")
        {
            return Err(ConfigError::Invalid {
                key: "server.public_baseurl",
                problem: format!("is {baseurl:?} but must start with http:// or https://"),
            });
        }

        self.media.validate()?;

        if !["10", "11", "12"].contains(&self.rooms.default_room_version.as_str()) {
            return Err(ConfigError::Invalid {
                key: "rooms.default_room_version",
                problem: format!(
                    "is {:?} but must be \"10\", \"11\" or \"12\"",
                    self.rooms.default_room_version
                ),
            });
        }

        if self.security.lockout_threshold == 0 {
            return Err(ConfigError::Invalid {
                key: "security.lockout_threshold",
                problem: "must be at least 1".to_owned(),
            });
        }

        self.email.validate()?;
        for user_id in &self.verification.support_users {
            let valid = user_id.starts_with('@') && user_id[1..].contains(':');
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "verification.support_users",
                    problem: format!(
                        "contains {user_id:?}, which is not a user ID like @support:example.org"
                    ),
                });
            }
        }
        if self.appservices.retry_base_ms == 0
            || self.appservices.retry_max_ms < self.appservices.retry_base_ms
        {
            return Err(ConfigError::Invalid {
                key: "appservices.retry_max_ms",
                problem: "must be at least retry_base_ms, which must be at least 1".to_owned(),
            });
        }
        if self.appservices.request_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "appservices.request_timeout_ms",
                problem: "is 0 but must be at least 1".to_owned(),
            });
        }

        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.data_dir",
                problem: "must not be empty".to_owned(),
            });
        }
        Ok(())
    }
}

impl MediaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_upload_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "media.max_upload_bytes",
                problem: format!("is {} but must be at least 1024 bytes", self.max_upload_bytes),
            });
        }
        if self.uploads_per_minute == 0 {
            return Err(ConfigError::Invalid {
                key: "media.uploads_per_minute",
                problem: "is 0 but must be at least 1".to_owned(),
            });
        }
        if self.max_pending_uploads == 0 {
            return Err(ConfigError::Invalid {
                key: "media.max_pending_uploads",
                problem: "is 0 but must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

impl EmailConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.from.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "email.from",
                problem: "must not be empty".to_owned(),
            });
        }
        if self.token_lifetime_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "email.token_lifetime_secs",
                problem: "is 0 but must be at least 1".to_owned(),
            });
        }
        if self.mails_per_address_per_hour == 0 {
            return Err(ConfigError::Invalid {
                key: "email.mails_per_address_per_hour",
                problem: "is 0 but must be at least 1".to_owned(),
            });
        }
        if self.smtp_port == 0 {
            return Err(ConfigError::Invalid {
                key: "email.smtp_port",
                problem: "is 0 but must be a port from 1 to 65535".to_owned(),
            });
        }
        Ok(())
    }
}

/// Checks a server name against the grammar of the Matrix specification: a DNS name, an IPv4
/// address or a bracketed IPv6 address, optionally followed by `:port`.
fn check_server_name(name: &str) -> Result<(), String> {
    let invalid = |why: &str| Err(format!("is {name:?}, which is not a valid server name: {why}"));
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 255 {
        return invalid("it is longer than 255 characters");
    }

    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return invalid("the IPv6 address has no closing bracket");
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return invalid("the bracketed part is not an IPv6 address");
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return invalid("only ':port' may follow the IPv6 address"),
            },
        }
    } else {
        match name.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(name), None),
        }
    };

    if let Some(host) = host {
        let valid_host = !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid_host {
            return invalid("a host name may contain only letters, digits, '-' and '.'");
        }
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return invalid("the port is not a number from 0 to 65535");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.server.server_name, "localhost");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8008");
        assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(config.public_baseurl(), "http://127.0.0.1:8008");
    }

    #[test]
    fn example_file_matches_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("caduceus.example.toml");
        let config = Config::load_with_env(Some(&example), env(&[])).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("caduceus.toml");
        std::fs::write(&file, "[server]\nserver_name = \"file.example\"\n").unwrap();

        let config = Config::load_with_env(
            Some(&file),
            env(&[
                ("CADUCEUS__SERVER__SERVER_NAME", "env.example"),
                ("CADUCEUS__SERVER__LISTEN", "127.0.0.1:9009"),
                ("CADUCEUS__REGISTRATION__OPEN", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.server_name, "env.example");
        assert_eq!(config.server.listen.port(), 9009);
        assert!(config.registration.open);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let error =
            Config::load_with_env(None, env(&[("CADUCEUS__SERVER__LISTEN", "not-an-address")]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("server.listen"), "{error}");
    }

    #[test]
    fn invalid_server_name_names_the_key() {
        let error =
            Config::load_with_env(None, env(&[("CADUCEUS__SERVER__SERVER_NAME", "bad name")]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("server.server_name"), "{error}");
        assert!(error.contains("bad name"), "{error}");
    }

    #[test]
    fn unknown_key_in_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("caduceus.toml");
        std::fs::write(&file, "[server]\nserver_nam = \"typo.example\"\n").unwrap();
        let error = Config::load_with_env(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(error.contains("server_nam"), "{error}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let error = Config::load_with_env(Some(Path::new("/nonexistent/caduceus.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("caduceus.toml"), "{error}");
    }

    #[test]
    fn media_limits_are_checked() {
        let config = Config::load_with_env(
            None,
            env(&[
                ("CADUCEUS__MEDIA__MAX_UPLOAD_BYTES", "2048"),
                ("CADUCEUS__MEDIA__UPLOADS_PER_MINUTE", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(config.media.max_upload_bytes, 2048);
        assert_eq!(config.media.uploads_per_minute, 5);

        let error =
            Config::load_with_env(None, env(&[("CADUCEUS__MEDIA__MAX_UPLOAD_BYTES", "10")]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("media.max_upload_bytes"), "{error}");

        let error =
            Config::load_with_env(None, env(&[("CADUCEUS__MEDIA__UPLOADS_PER_MINUTE", "0")]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("media.uploads_per_minute"), "{error}");
    }

    #[test]
    fn email_settings_are_read_and_checked() {
        let config = Config::load_with_env(
            None,
            env(&[
                ("CADUCEUS__EMAIL__SMTP_HOST", "127.0.0.1"),
                ("CADUCEUS__EMAIL__SMTP_PORT", "2525"),
                ("CADUCEUS__EMAIL__SECURITY", "none"),
            ]),
        )
        .unwrap();
        assert_eq!(config.email.smtp_host, "127.0.0.1");
        assert_eq!(config.email.smtp_port, 2525);
        assert_eq!(config.email.security, SmtpSecurity::None);

        let error = Config::load_with_env(None, env(&[("CADUCEUS__EMAIL__SECURITY", "ssl")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("email.security"), "{error}");

        let error =
            Config::load_with_env(None, env(&[("CADUCEUS__EMAIL__TOKEN_LIFETIME_SECS", "0")]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("email.token_lifetime_secs"), "{error}");
    }

    #[test]
    fn server_names() {
        for valid in
            ["localhost", "example.org", "example.org:8448", "127.0.0.1:8008", "[::1]:8448"]
        {
            assert!(check_server_name(valid).is_ok(), "{valid} should be valid");
        }
        for invalid in ["", "exa mple.org", "example.org:", "example.org:99999", "[::1", "a/b"] {
            assert!(check_server_name(invalid).is_err(), "{invalid:?} should be invalid");
        }
    }
}
