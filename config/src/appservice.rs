//! Typed settings of `caduceus-appservice`, the verification gatekeeper.
//!
//! Settings come from the defaults here, an optional TOML file, and environment variables named
//! `CADUCEUS_APPSERVICE__SECTION__KEY` (for example `CADUCEUS_APPSERVICE__SERVICE__LISTEN`).
//! Relative paths are taken from the folder of the config file, so a config and its register
//! files can be moved together. `caduceus-appservice.example.toml` beside this crate lists every
//! key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConfigError, LoggingConfig, ENV_SEPARATOR};

/// Prefix of the environment variables that override the gatekeeper's settings.
pub const APPSERVICE_ENV_PREFIX: &str = "CADUCEUS_APPSERVICE";

/// All settings of the verification gatekeeper.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppserviceConfig {
    pub homeserver: HomeserverConfig,
    pub service: ServiceConfig,
    pub bot: BotConfig,
    pub officers: OfficersConfig,
    pub identity: IdentityConfig,
    /// Professional registers whose numbers grant the `medical` level.
    pub registers: Vec<RegisterConfig>,
    /// Staff lists exported by HR whose entries grant the `identity` level.
    pub rosters: Vec<RosterConfig>,
    pub logging: LoggingConfig,
}

/// The homeserver the gatekeeper serves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the homeserver's Client-Server and admin APIs.
    pub url: String,
    /// The homeserver's server name, the part after the colon in user IDs.
    pub server_name: String,
    /// The registration file made by `caduceus-appservice generate-registration`; the tokens
    /// and the bot's localpart are read from it.
    pub registration_file: PathBuf,
}

impl Default for HomeserverConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8008".to_owned(),
            server_name: "localhost".to_owned(),
            registration_file: PathBuf::from("gatekeeper-registration.yaml"),
        }
    }
}

/// The address the application service listens on and the folder of its state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The socket address the homeserver sends transactions to; it must match the `url` of
    /// the registration file.
    pub listen: SocketAddr,
    /// The folder that holds the gatekeeper's state. Created if missing.
    pub data_dir: PathBuf,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8009)),
            data_dir: PathBuf::from("./appservice-data"),
        }
    }
}

/// How often the bot looks for work.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// The display name of the bot user.
    pub display_name: String,
    /// Seconds between two looks at the homeserver's list of new accounts.
    pub users_poll_interval_secs: u64,
    /// Seconds between two passes over all accounts, which grant `identity` to people who
    /// appeared in a roster or validated a trusted email address since they registered.
    pub full_scan_interval_secs: u64,
    /// Seconds between two re-checks of every medical verification against the registers.
    pub recheck_interval_secs: u64,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            display_name: "Verification".to_owned(),
            users_poll_interval_secs: 10,
            full_scan_interval_secs: 600,
            recheck_interval_secs: 24 * 60 * 60,
        }
    }
}

/// Verification officers, who decide the cases the bot cannot decide alone.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfficersConfig {
    /// Matrix IDs of the officers. Only they may approve or reject cases.
    pub users: Vec<String>,
    /// The ID of an existing room where cases are posted; the bot must be invited. Empty
    /// means the bot creates a private room and invites the officers.
    pub room: String,
}

/// Identity checks that do not need a professional register.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Email domains of trusted organisations: a validated address at one of them grants
    /// `identity`. Subdomains count too.
    pub trusted_email_domains: Vec<String>,
}

/// The layout of an exported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    #[default]
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
}

/// One professional register, read from a file exported by the register's publisher.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegisterConfig {
    /// The short name people type before their number, such as `BIG`, `RPPS` or `GMC`.
    pub name: String,
    /// The exported file. It is read again when its size or modification time changes.
    pub path: PathBuf,
    pub format: FileFormat,
    /// The country of every entry, as an ISO 3166 code, when the file has no country column.
    pub country: String,
    /// Separates several values in one cell, such as two specialties.
    pub list_separator: String,
    /// Status values (compared without case) that mark an entry as struck off or suspended.
    pub struck_off_values: Vec<String>,
    /// When not empty, only these status values count as active; any other is struck off.
    pub active_values: Vec<String>,
    pub columns: RegisterColumns,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            path: PathBuf::new(),
            format: FileFormat::Csv,
            country: String::new(),
            list_separator: ";".to_owned(),
            struck_off_values: Vec::new(),
            active_values: Vec::new(),
            columns: RegisterColumns::default(),
        }
    }
}

/// Header names of the register file's columns. An empty name means the file has no such
/// column. Either `name` or `surname` must be given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegisterColumns {
    /// The registration number. Required.
    pub number: String,
    /// The full name in one cell, as "Given Surname" or "Surname, Given".
    pub name: String,
    /// Given names or initials.
    pub given_names: String,
    /// A surname prefix kept in its own column, such as the Dutch "van der".
    pub name_prefix: String,
    pub surname: String,
    pub professions: String,
    pub specialties: String,
    pub organisations: String,
    pub city: String,
    pub postal_code: String,
    pub region: String,
    pub country: String,
    /// The registration status, read with `struck_off_values` and `active_values`.
    pub status: String,
}

impl Default for RegisterColumns {
    fn default() -> Self {
        Self {
            number: "number".to_owned(),
            name: String::new(),
            given_names: String::new(),
            name_prefix: String::new(),
            surname: String::new(),
            professions: String::new(),
            specialties: String::new(),
            organisations: String::new(),
            city: String::new(),
            postal_code: String::new(),
            region: String::new(),
            country: String::new(),
            status: String::new(),
        }
    }
}

/// A staff list exported by HR. Everyone on it gets the `identity` level.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RosterConfig {
    /// The exported file. It is read again when its size or modification time changes.
    pub path: PathBuf,
    pub format: FileFormat,
    /// The organisation of everyone on the list, when the file has no organisation column.
    pub organisation: String,
    pub columns: RosterColumns,
}

impl Default for RosterConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            format: FileFormat::Csv,
            organisation: String::new(),
            columns: RosterColumns::default(),
        }
    }
}

/// Header names of the roster's columns; an empty name means the file has no such column. A
/// person is matched by a validated email address or by Matrix ID.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RosterColumns {
    pub email: String,
    pub matrix_id: String,
    pub organisation: String,
    pub profession: String,
}

impl Default for RosterColumns {
    fn default() -> Self {
        Self {
            email: "email".to_owned(),
            matrix_id: "matrix_id".to_owned(),
            organisation: String::new(),
            profession: String::new(),
        }
    }
}

impl AppserviceConfig {
    /// Loads the defaults, then `file` if given, then the `CADUCEUS_APPSERVICE__*` environment
    /// variables, resolves relative paths and checks the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Loads settings like [`AppserviceConfig::load`], with the environment given as pairs.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env_source = config::Environment::with_prefix(APPSERVICE_ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("officers.users")
            .with_list_parse_key("identity.trusted_email_domains")
            .source(Some(env.into_iter().collect()));

        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file).format(config::FileFormat::Toml).required(true),
            );
        }
        let mut config: Self = builder.add_source(env_source).build()?.try_deserialize()?;
        if let Some(base) = file.and_then(Path::parent) {
            config.resolve_paths(base);
        }
        config.validate()?;
        Ok(config)
    }

    /// Makes every relative path relative to `base`, the folder of the config file.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.homeserver.registration_file);
        resolve(&mut self.service.data_dir);
        self.registers.iter_mut().for_each(|register| resolve(&mut register.path));
        self.rosters.iter_mut().for_each(|roster| resolve(&mut roster.path));
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: String| ConfigError::Invalid { key, problem };
        let url = &self.homeserver.url;
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(invalid(
                "homeserver.url",
                format!("is {url:?} but must start with http:// or https://"),
            ));
        }
        crate::check_server_name(&self.homeserver.server_name)
            .map_err(|problem| invalid("homeserver.server_name", problem))?;
        if self.homeserver.registration_file.as_os_str().is_empty() {
            return Err(invalid("homeserver.registration_file", "must not be empty".to_owned()));
        }
        if self.service.data_dir.as_os_str().is_empty() {
            return Err(invalid("service.data_dir", "must not be empty".to_owned()));
        }
        for (key, value) in [
            ("bot.users_poll_interval_secs", self.bot.users_poll_interval_secs),
            ("bot.full_scan_interval_secs", self.bot.full_scan_interval_secs),
            ("bot.recheck_interval_secs", self.bot.recheck_interval_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "is 0 but must be at least 1".to_owned()));
            }
        }
        for user in &self.officers.users {
            if !user.starts_with('@') || !user.contains(':') {
                return Err(invalid(
                    "officers.users",
                    format!("contains {user:?}, which is not a Matrix user ID"),
                ));
            }
        }
        let room = &self.officers.room;
        let is_room_id = room.starts_with('!') && room.contains(':');
        if !room.is_empty() && !is_room_id {
            return Err(invalid("officers.room", format!("is {room:?}, which is not a room ID")));
        }
        let mut names = Vec::new();
        for register in &self.registers {
            register.validate()?;
            let name = register.name.to_ascii_uppercase();
            if names.contains(&name) {
                return Err(invalid(
                    "registers.name",
                    format!("{:?} is used twice", register.name),
                ));
            }
            names.push(name);
        }
        for roster in &self.rosters {
            if roster.path.as_os_str().is_empty() {
                return Err(invalid("rosters.path", "must not be empty".to_owned()));
            }
            if roster.columns.email.is_empty() && roster.columns.matrix_id.is_empty() {
                return Err(invalid(
                    "rosters.columns",
                    format!(
                        "of {} name neither an email nor a matrix_id column",
                        roster.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl RegisterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: String| ConfigError::Invalid { key, problem };
        let name = &self.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid(
                "registers.name",
                format!("is {name:?} but must be letters, digits or '-', such as \"BIG\""),
            ));
        }
        if self.path.as_os_str().is_empty() {
            return Err(invalid("registers.path", format!("of register {name} must not be empty")));
        }
        if self.columns.number.is_empty() {
            return Err(invalid(
                "registers.columns.number",
                format!("of register {name} must name the column of registration numbers"),
            ));
        }
        if self.columns.name.is_empty() && self.columns.surname.is_empty() {
            return Err(invalid(
                "registers.columns",
                format!("of register {name} must name a `name` or a `surname` column"),
            ));
        }
        if self.list_separator.is_empty() {
            return Err(invalid(
                "registers.list_separator",
                format!("of register {name} must not be empty"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let config = AppserviceConfig::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config, AppserviceConfig::default());
        assert_eq!(config.service.listen.to_string(), "127.0.0.1:8009");
        assert_eq!(config.homeserver.url, "http://127.0.0.1:8008");
    }

    #[test]
    fn example_file_matches_defaults() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("caduceus-appservice.example.toml");
        let config = AppserviceConfig::load_with_env(Some(&example), env(&[])).unwrap();
        // The only difference from the defaults: relative paths now start at the file's folder.
        let base = example.parent().unwrap();
        let mut expected = AppserviceConfig::default();
        expected.resolve_paths(base);
        assert_eq!(config, expected);
    }

    #[test]
    fn environment_overrides_file_and_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gatekeeper.toml");
        std::fs::write(
            &file,
            "[homeserver]\nserver_name = \"file.example\"\n\n\
             [[registers]]\nname = \"BIG\"\npath = \"big.csv\"\n\
             [registers.columns]\nnumber = \"nr\"\nsurname = \"achternaam\"\n",
        )
        .unwrap();
        let config = AppserviceConfig::load_with_env(
            Some(&file),
            env(&[
                ("CADUCEUS_APPSERVICE__HOMESERVER__SERVER_NAME", "env.example"),
                ("CADUCEUS_APPSERVICE__BOT__RECHECK_INTERVAL_SECS", "5"),
                ("CADUCEUS_APPSERVICE__OFFICERS__USERS", "@a:env.example,@b:env.example"),
            ]),
        )
        .unwrap();
        assert_eq!(config.homeserver.server_name, "env.example");
        assert_eq!(config.bot.recheck_interval_secs, 5);
        assert_eq!(config.officers.users, ["@a:env.example", "@b:env.example"]);
        assert_eq!(config.registers[0].path, dir.path().join("big.csv"));
        assert_eq!(config.registers[0].columns.number, "nr");
        assert_eq!(config.registers[0].list_separator, ";");
        assert_eq!(config.service.data_dir, dir.path().join("appservice-data"));
    }

    #[test]
    fn invalid_settings_name_the_key() {
        let cases = [
            ("CADUCEUS_APPSERVICE__HOMESERVER__URL", "ftp://x", "homeserver.url"),
            ("CADUCEUS_APPSERVICE__BOT__RECHECK_INTERVAL_SECS", "0", "bot.recheck_interval_secs"),
            ("CADUCEUS_APPSERVICE__OFFICERS__USERS", "alice", "officers.users"),
            ("CADUCEUS_APPSERVICE__OFFICERS__ROOM", "#officers:x", "officers.room"),
            ("CADUCEUS_APPSERVICE__SERVICE__LISTEN", "nowhere", "service.listen"),
        ];
        for (key, value, expected) in cases {
            let error = AppserviceConfig::load_with_env(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{key}={value}: {error}");
        }
    }

    #[test]
    fn registers_need_a_number_and_a_name_column_and_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gatekeeper.toml");
        let check = |body: &str, expected: &str| {
            std::fs::write(&file, body).unwrap();
            let error =
                AppserviceConfig::load_with_env(Some(&file), env(&[])).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        };
        check(
            "[[registers]]\nname = \"BIG\"\npath = \"a\"\n[registers.columns]\nnumber = \"\"\n",
            "registers.columns.number",
        );
        check("[[registers]]\nname = \"BIG\"\npath = \"a\"\n", "registers.columns");
        check(
            "[[registers]]\nname = \"BIG\"\npath = \"a\"\n[registers.columns]\nname = \"n\"\n\
             [[registers]]\nname = \"big\"\npath = \"b\"\n[registers.columns]\nname = \"n\"\n",
            "used twice",
        );
        check("[[registers]]\nname = \"B I G\"\npath = \"a\"\n", "registers.name");
        check(
            "[[rosters]]\npath = \"r.csv\"\n[rosters.columns]\nemail = \"\"\nmatrix_id = \"\"\n",
            "rosters.columns",
        );
    }
}
