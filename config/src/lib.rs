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
    pub sessions: SessionsConfig,
    pub logging: LoggingConfig,
    pub directory: DirectoryConfig,
    pub rate_limits: RateLimitsConfig,
    pub invitations: InvitationsConfig,
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

/// Device and session policy: the primary device, linked sessions and token lifetimes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Keeps one primary device per account: a password login on a new device signs the
    /// previous primary device out. When false, every password login adds a device and any of
    /// them may link sessions.
    pub single_primary_device: bool,
    /// How long a token from `POST /_matrix/client/v1/login/get_token` can be used, in seconds.
    pub login_token_lifetime_secs: u64,
    /// How long a session linked with a login token lasts after its login, in seconds. Refresh
    /// tokens do not extend it.
    pub linked_session_lifetime_secs: u64,
    /// How long an access token lasts, in seconds, for clients that asked for a refresh token.
    /// Access tokens of clients without refresh tokens do not expire.
    pub access_token_lifetime_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            single_primary_device: true,
            login_token_lifetime_secs: 2 * 60,
            linked_session_lifetime_secs: 6 * 60 * 60,
            access_token_lifetime_secs: 60 * 60,
        }
    }
}

impl SessionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let lifetimes = [
            ("sessions.login_token_lifetime_secs", self.login_token_lifetime_secs),
            ("sessions.linked_session_lifetime_secs", self.linked_session_lifetime_secs),
            ("sessions.access_token_lifetime_secs", self.access_token_lifetime_secs),
        ];
        for (key, seconds) in lifetimes {
            if seconds == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "is 0 but must be at least 1 second".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Request rate limits, one token bucket per class and per user or source address. A request
/// beyond its bucket is rejected with `M_LIMIT_EXCEEDED` and the delay after which to retry.
/// Counters live in memory, so a restart refills every bucket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RateLimitsFile")]
pub struct RateLimitsConfig {
    /// `POST /register` requests per source address. Completing a registration takes two
    /// requests (the authentication challenge, then the token).
    pub registration: RateLimit,
    /// `POST /login` requests per source address, successful or not. All staff of a hospital
    /// may share one address behind its gateway, so this allows many logins.
    pub login_per_address: RateLimit,
    /// `POST /login` requests per target account, successful or not.
    pub login_per_user: RateLimit,
    /// Events a user sends: messages (`/send`), state events and redactions.
    pub messages: RateLimit,
    /// Joins, invites and knocks per user.
    pub membership: RateLimit,
}

/// A token bucket: `burst` requests at once, refilled at `per_second` requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// The sustained rate, in requests per second (fractions allowed, 0.5 is one every two
    /// seconds). 0 turns the limit off.
    pub per_second: f64,
    /// The number of requests allowed at once when the bucket is full (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// Returns whether the limit applies at all (`per_second` above 0).
    pub fn is_enabled(&self) -> bool {
        self.per_second > 0.0
    }

    fn validate(&self, key: &'static str) -> Result<(), ConfigError> {
        if !self.per_second.is_finite() || self.per_second < 0.0 {
            return Err(ConfigError::Invalid {
                key,
                problem: format!(
                    "has per_second = {} but it must be 0 (off) or a positive number",
                    self.per_second
                ),
            });
        }
        if self.is_enabled() && self.burst == 0 {
            return Err(ConfigError::Invalid {
                key,
                problem: "has burst = 0 but it must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            // Two requests per account: 30 colleagues can register at once from one hospital
            // gateway, then one more every four seconds.
            registration: RateLimit { per_second: 0.5, burst: 60 },
            login_per_address: RateLimit { per_second: 1.0, burst: 60 },
            // A phone, a desktop and a web session, each logged in a few times, fit the burst;
            // after that one login every ten seconds.
            login_per_user: RateLimit { per_second: 0.1, burst: 10 },
            // Nobody types two messages a second for long; the burst covers a client sending
            // what it queued while offline.
            messages: RateLimit { per_second: 2.0, burst: 30 },
            // Creating a case room and inviting a whole team fits the burst.
            membership: RateLimit { per_second: 0.5, burst: 30 },
        }
    }
}

/// `[rate_limits]` as written: each class and each of its two values may be left out, so that
/// `CADUCEUS__RATE_LIMITS__MESSAGES__BURST=100` alone keeps the default rate.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RateLimitsFile {
    registration: RateLimitFile,
    login_per_address: RateLimitFile,
    login_per_user: RateLimitFile,
    messages: RateLimitFile,
    membership: RateLimitFile,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RateLimitFile {
    per_second: Option<f64>,
    burst: Option<u32>,
}

impl RateLimitFile {
    fn or(self, default: RateLimit) -> RateLimit {
        RateLimit {
            per_second: self.per_second.unwrap_or(default.per_second),
            burst: self.burst.unwrap_or(default.burst),
        }
    }
}

impl From<RateLimitsFile> for RateLimitsConfig {
    fn from(file: RateLimitsFile) -> Self {
        let defaults = Self::default();
        Self {
            registration: file.registration.or(defaults.registration),
            login_per_address: file.login_per_address.or(defaults.login_per_address),
            login_per_user: file.login_per_user.or(defaults.login_per_user),
            messages: file.messages.or(defaults.messages),
            membership: file.membership.or(defaults.membership),
        }
    }
}

impl RateLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.registration.validate("rate_limits.registration")?;
        self.login_per_address.validate("rate_limits.login_per_address")?;
        self.login_per_user.validate("rate_limits.login_per_user")?;
        self.messages.validate("rate_limits.messages")?;
        self.membership.validate("rate_limits.membership")
    }
}

/// Invitations by which verified members bring colleagues onto the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvitationsConfig {
    /// How long the registration token in an invitation stays valid, in hours.
    pub expiry_hours: u64,
    /// How many unused, unexpired invitations one member may have at a time.
    pub max_pending_per_user: u32,
}

impl Default for InvitationsConfig {
    fn default() -> Self {
        Self { expiry_hours: 7 * 24, max_pending_per_user: 20 }
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
        self.sessions.validate()?;
        self.rate_limits.validate()?;
        if self.invitations.expiry_hours == 0 {
            return Err(ConfigError::Invalid {
                key: "invitations.expiry_hours",
                problem: "is 0 but must be at least 1".to_owned(),
            });
        }

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
    fn rate_limits_are_checked() {
        let config = Config::load_with_env(
            None,
            env(&[
                ("CADUCEUS__RATE_LIMITS__MESSAGES__PER_SECOND", "0.25"),
                ("CADUCEUS__RATE_LIMITS__MESSAGES__BURST", "3"),
                ("CADUCEUS__RATE_LIMITS__MEMBERSHIP__PER_SECOND", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(config.rate_limits.messages, RateLimit { per_second: 0.25, burst: 3 });
        assert!(!config.rate_limits.membership.is_enabled());

        let error = Config::load_with_env(
            None,
            env(&[("CADUCEUS__RATE_LIMITS__LOGIN_PER_USER__PER_SECOND", "-1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("rate_limits.login_per_user"), "{error}");

        let error = Config::load_with_env(
            None,
            env(&[("CADUCEUS__RATE_LIMITS__REGISTRATION__BURST", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("rate_limits.registration"), "{error}");
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
    fn session_lifetimes_are_checked() {
        let config = Config::load_with_env(
            None,
            env(&[
                ("CADUCEUS__SESSIONS__SINGLE_PRIMARY_DEVICE", "false"),
                ("CADUCEUS__SESSIONS__LINKED_SESSION_LIFETIME_SECS", "2"),
            ]),
        )
        .unwrap();
        assert!(!config.sessions.single_primary_device);
        assert_eq!(config.sessions.linked_session_lifetime_secs, 2);
        assert_eq!(config.sessions.access_token_lifetime_secs, 3600);

        let error = Config::load_with_env(
            None,
            env(&[("CADUCEUS__SESSIONS__ACCESS_TOKEN_LIFETIME_SECS", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("sessions.access_token_lifetime_secs"), "{error}");
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
