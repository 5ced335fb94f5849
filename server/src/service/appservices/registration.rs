//! Registration files in Synapse's YAML format: parsing, validation and namespace matching.

use std::path::Path;

use regex::Regex;
use ruma::api::appservice::{Namespace, Registration};
use ruma::{OwnedUserId, RoomAliasId, RoomId, ServerName, UserId};

/// The key that marks the verification gatekeeper in a registration file.
pub const GATEKEEPER_KEY: &str = "org.caduceus.gatekeeper";

/// The key with which hospital IT vouches for a service's users, so the gating rules skip them.
pub const TRUSTED_KEY: &str = "org.caduceus.trusted";

/// The name Synapse and bridges use for `receive_ephemeral` before MSC2409 was merged.
const UNSTABLE_EPHEMERAL_KEY: &str = "de.sorunome.msc2409.push_ephemeral";

/// One namespace regex, compiled.
#[derive(Debug, Clone)]
pub struct NamespaceRegex {
    pub exclusive: bool,
    regex: Regex,
}

impl NamespaceRegex {
    /// Compiles a namespace. Like Synapse, a regex must match from the start of the value but
    /// may leave a tail unmatched, so `@irc_` covers every user ID that begins with it.
    fn compile(namespace: &Namespace) -> Result<Self, String> {
        let regex = Regex::new(&format!("^(?:{})", namespace.regex))
            .map_err(|error| format!("the regex {:?} is invalid: {error}", namespace.regex))?;
        Ok(Self { exclusive: namespace.exclusive, regex })
    }

    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// A registered application service.
#[derive(Debug, Clone)]
pub struct Appservice {
    /// The registration as written, in ruma's type.
    pub registration: Registration,
    /// The file it was read from, for messages.
    pub file: String,
    /// Whether this is the verification gatekeeper (`org.caduceus.gatekeeper: true`).
    pub gatekeeper: bool,
    /// Whether the gating rules skip the service's users (`org.caduceus.trusted: true`).
    pub trusted: bool,
    /// Whether typing notifications and receipts go into its transactions.
    pub receive_ephemeral: bool,
    /// The user the service acts as when it does not masquerade.
    pub sender: OwnedUserId,
    users: Vec<NamespaceRegex>,
    aliases: Vec<NamespaceRegex>,
    rooms: Vec<NamespaceRegex>,
}

impl Appservice {
    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Returns the base URL without a trailing slash, or `None` when the service takes no
    /// traffic.
    pub fn url(&self) -> Option<&str> {
        self.registration.url.as_deref().map(|url| url.trim_end_matches('/'))
    }

    /// Checks whether the service may act as this user: its sender or a user in its user
    /// namespaces.
    pub fn owns_user(&self, user_id: &UserId) -> bool {
        user_id == self.sender || self.users.iter().any(|ns| ns.matches(user_id.as_str()))
    }

    /// Checks whether the user falls in one of the service's exclusive user namespaces.
    pub fn has_exclusive_user(&self, user_id: &UserId) -> bool {
        self.users.iter().any(|ns| ns.exclusive && ns.matches(user_id.as_str()))
    }

    pub fn matches_alias(&self, alias: &RoomAliasId) -> bool {
        self.aliases.iter().any(|ns| ns.matches(alias.as_str()))
    }

    pub fn has_exclusive_alias(&self, alias: &RoomAliasId) -> bool {
        self.aliases.iter().any(|ns| ns.exclusive && ns.matches(alias.as_str()))
    }

    pub fn matches_room(&self, room_id: &RoomId) -> bool {
        self.rooms.iter().any(|ns| ns.matches(room_id.as_str()))
    }

    /// Checks whether the service declares alias namespaces at all, so callers can skip
    /// looking up a room's aliases for services that would never match them.
    pub fn has_alias_namespaces(&self) -> bool {
        !self.aliases.is_empty()
    }
}

/// Reads and checks one registration file. The error names the file and what is wrong.
pub fn load(path: &Path, server_name: &ServerName) -> Result<Appservice, String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!("cannot read the application service registration {file}: {error}")
    })?;
    parse(&text, &file, server_name)
        .map_err(|problem| format!("invalid application service registration {file}: {problem}"))
}

/// Parses the text of a registration file; `file` is kept for messages.
pub fn parse(text: &str, file: &str, server_name: &ServerName) -> Result<Appservice, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|error| format!("not valid YAML: {error}"))?;
    if !value.is_mapping() {
        return Err("the file must hold a YAML mapping of registration keys".to_owned());
    }
    let flag = |key: &str| -> Result<bool, String> {
        match value.get(key) {
            None | Some(serde_yaml::Value::Null) => Ok(false),
            Some(serde_yaml::Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(format!("`{key}` must be true or false")),
        }
    };
    let gatekeeper = flag(GATEKEEPER_KEY)?;
    let trusted = flag(TRUSTED_KEY)?;
    let unstable_ephemeral = flag(UNSTABLE_EPHEMERAL_KEY)?;
    let registration: Registration =
        serde_yaml::from_value(value.clone()).map_err(|error| error.to_string())?;

    for (key, token) in [("as_token", &registration.as_token), ("hs_token", &registration.hs_token)]
    {
        if token.trim().is_empty() {
            return Err(format!("`{key}` must not be empty"));
        }
    }
    if registration.as_token == registration.hs_token {
        return Err("`as_token` and `hs_token` must differ".to_owned());
    }
    if registration.id.trim().is_empty() {
        return Err("`id` must not be empty".to_owned());
    }
    if let Some(url) = &registration.url {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!("`url` is {url:?} but must start with http:// or https://"));
        }
    }
    let localpart = registration.sender_localpart.as_str();
    let valid_localpart = !localpart.is_empty()
        && localpart
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b));
    let sender = UserId::parse_with_server_name(localpart, server_name)
        .ok()
        .filter(|_| valid_localpart)
        .ok_or_else(|| format!("`sender_localpart` {localpart:?} is not a valid localpart"))?;

    let compile = |list: &[Namespace], kind: &str| -> Result<Vec<NamespaceRegex>, String> {
        list.iter()
            .map(|namespace| {
                NamespaceRegex::compile(namespace)
                    .map_err(|problem| format!("in namespaces.{kind}: {problem}"))
            })
            .collect()
    };
    let users = compile(&registration.namespaces.users, "users")?;
    let aliases = compile(&registration.namespaces.aliases, "aliases")?;
    let rooms = compile(&registration.namespaces.rooms, "rooms")?;

    Ok(Appservice {
        receive_ephemeral: registration.receive_ephemeral || unstable_ephemeral,
        registration,
        file: file.to_owned(),
        gatekeeper,
        trusted,
        sender,
        users,
        aliases,
        rooms,
    })
}

/// Checks that a set of registrations can run side by side: distinct IDs and tokens, and at
/// most one gatekeeper.
pub fn check_together(appservices: &[Appservice]) -> Result<(), String> {
    for (index, appservice) in appservices.iter().enumerate() {
        for earlier in &appservices[..index] {
            let clash = |what: &str| {
                format!(
                    "invalid application service registration {}: its {what} is also used by {}",
                    appservice.file, earlier.file
                )
            };
            if earlier.id() == appservice.id() {
                return Err(clash("`id`"));
            }
            let mine = [&appservice.registration.as_token, &appservice.registration.hs_token];
            let theirs = [&earlier.registration.as_token, &earlier.registration.hs_token];
            if mine.iter().any(|token| theirs.contains(token)) {
                return Err(clash("token"));
            }
            if earlier.gatekeeper && appservice.gatekeeper {
                return Err(format!(
                    "invalid application service registration {}: only one application service \
                     may be the gatekeeper, and {} already is",
                    appservice.file, earlier.file
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> &'static ServerName {
        <&ServerName>::try_from("hospital.example").unwrap()
    }

    const VALID: &str = r##"
id: "bridge"
url: "http://127.0.0.1:9000"
as_token: "as-secret"
hs_token: "hs-secret"
sender_localpart: "bridgebot"
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
org.caduceus.gatekeeper: true
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:hospital\\.example"
    - exclusive: false
      regex: "@shared_"
  aliases:
    - exclusive: true
      regex: "#bridge_.*"
  rooms: []
protocols: ["pager"]
"##;

    #[test]
    fn parses_synapse_format_with_extra_keys() {
        let appservice = parse(VALID, "bridge.yaml", server()).unwrap();
        assert_eq!(appservice.id(), "bridge");
        assert_eq!(appservice.url(), Some("http://127.0.0.1:9000"));
        assert!(appservice.gatekeeper);
        assert!(!appservice.trusted, "trust is off unless the file turns it on");
        assert!(appservice.receive_ephemeral);
        assert_eq!(appservice.sender.as_str(), "@bridgebot:hospital.example");
        assert_eq!(appservice.registration.protocols.as_deref(), Some(&["pager".to_owned()][..]));
    }

    #[test]
    fn matches_user_namespaces_from_the_start() {
        let appservice = parse(VALID, "bridge.yaml", server()).unwrap();
        let user = |id: &str| UserId::parse(id).unwrap();
        assert!(appservice.owns_user(&user("@bridgebot:hospital.example")));
        assert!(appservice.owns_user(&user("@bridge_alice:hospital.example")));
        assert!(appservice.has_exclusive_user(&user("@bridge_alice:hospital.example")));
        // The non-exclusive namespace is a prefix: the rest of the ID need not match.
        assert!(appservice.owns_user(&user("@shared_bob:hospital.example")));
        assert!(!appservice.has_exclusive_user(&user("@shared_bob:hospital.example")));
        // The regex is anchored at the start, so a match inside the ID does not count.
        assert!(!appservice.owns_user(&user("@x_bridge_alice:hospital.example")));
        assert!(!appservice.owns_user(&user("@bridge_alice:elsewhere.example")));
        // The sender is not in an exclusive namespace by itself.
        assert!(!appservice.has_exclusive_user(&user("@bridgebot:hospital.example")));
    }

    #[test]
    fn matches_alias_namespaces() {
        let appservice = parse(VALID, "bridge.yaml", server()).unwrap();
        let alias = RoomAliasId::parse("#bridge_ward:hospital.example").unwrap();
        assert!(appservice.matches_alias(&alias));
        assert!(appservice.has_exclusive_alias(&alias));
        assert!(!appservice.matches_alias(&RoomAliasId::parse("#ward:hospital.example").unwrap()));
        assert!(!appservice.matches_room(&RoomId::parse("!abc:hospital.example").unwrap()));
    }

    #[test]
    fn url_may_be_null() {
        let text = VALID.replace("url: \"http://127.0.0.1:9000\"", "url: null");
        let appservice = parse(&text, "bridge.yaml", server()).unwrap();
        assert_eq!(appservice.url(), None);
    }

    #[test]
    fn rejects_invalid_files_with_the_reason() {
        let cases = [
            ("id: [unclosed", "not valid YAML"),
            ("- a list", "mapping"),
            (&VALID.replace("as_token: \"as-secret\"\n", ""), "as_token"),
            (&VALID.replace("url: \"http://127.0.0.1:9000\"\n", ""), "url"),
            (&VALID.replace("hs-secret", "as-secret"), "must differ"),
            (&VALID.replace("@shared_", "@shared_(["), "regex"),
            (&VALID.replace("\"bridgebot\"", "\"bad:bot\""), "sender_localpart"),
            (&VALID.replace("http://127.0.0.1:9000", "127.0.0.1:9000"), "http://"),
            (&VALID.replace("gatekeeper: true", "gatekeeper: \"yes\""), GATEKEEPER_KEY),
            (&format!("{VALID}{TRUSTED_KEY}: 1\n"), TRUSTED_KEY),
        ];
        for (text, expected) in cases {
            let error = parse(text, "bridge.yaml", server()).unwrap_err();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }

    #[test]
    fn rejects_duplicate_ids_tokens_and_gatekeepers() {
        let first = parse(VALID, "a.yaml", server()).unwrap();
        let other = |from: &str, to: &str| {
            let mut text = VALID.replace("id: \"bridge\"", "id: \"other\"");
            text = text.replace("as-secret", "as-other").replace("hs-secret", "hs-other");
            text = text.replace("org.caduceus.gatekeeper: true", "org.caduceus.gatekeeper: false");
            parse(&text.replace(from, to), "b.yaml", server()).unwrap()
        };
        assert!(check_together(&[first.clone(), other("", "")]).is_ok());
        let error = check_together(&[first.clone(), other("\"other\"", "\"bridge\"")]).unwrap_err();
        assert!(error.contains("b.yaml") && error.contains("`id`"), "{error}");
        let error = check_together(&[first.clone(), other("as-other", "as-secret")]).unwrap_err();
        assert!(error.contains("token"), "{error}");
        let error = check_together(&[first.clone(), other("as-other", "hs-secret")]).unwrap_err();
        assert!(error.contains("token"), "{error}");
        let error =
            check_together(&[first, other("gatekeeper: false", "gatekeeper: true")]).unwrap_err();
        assert!(error.contains("gatekeeper"), "{error}");
    }
}
