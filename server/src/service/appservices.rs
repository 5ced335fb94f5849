//! Application services: the registrations read at start, lookups by token and namespace, the
//! requests the server makes to them (user and alias queries, pings) and the delivery of
//! events, typing notifications and receipts in transactions (`delivery.rs`).
//!
//! Outbound requests go only to the `url` of a registration, which hospital IT wrote; nothing a
//! client sends chooses where the server connects.

pub mod delivery;
pub mod registration;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caduceus_config::AppservicesConfig;
use ruma::{RoomAliasId, ServerName, UserId};
use serde_json::{json, Value};
use tokio::sync::Notify;

pub use self::registration::Appservice;
use super::accounts::Sender;
use super::rooms::Rooms;
use super::stream::Stream;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::Db;

/// The maximum length, in bytes, of an application service's error body that a ping returns.
const MAX_PING_BODY: usize = 4096;

pub struct Appservices {
    list: Vec<Arc<Appservice>>,
    by_as_token: HashMap<String, usize>,
    config: AppservicesConfig,
    http: reqwest::Client,
    db: Arc<Db>,
    rooms: Arc<Rooms>,
    stream: Arc<Stream>,
    /// Typing notifications and receipts waiting for the next transaction, by service ID.
    /// Kept in memory only: they are of no use after a restart.
    ephemeral: Mutex<HashMap<String, VecDeque<Value>>>,
    /// Wakes the delivery tasks when ephemeral events are queued.
    ephemeral_added: Notify,
}

impl Appservices {
    /// Reads every registration file in the config. An invalid file is an error that names it.
    pub fn load(
        config: &AppservicesConfig,
        server_name: &ServerName,
        db: Arc<Db>,
        rooms: Arc<Rooms>,
        stream: Arc<Stream>,
    ) -> anyhow::Result<Self> {
        let mut list = Vec::new();
        for path in &config.registration_files {
            list.push(registration::load(path, server_name).map_err(anyhow::Error::msg)?);
        }
        registration::check_together(&list).map_err(anyhow::Error::msg)?;
        for appservice in &list {
            tracing::info!(
                id = appservice.id(),
                file = %appservice.file,
                gatekeeper = appservice.gatekeeper,
                "application service registered"
            );
        }
        let by_as_token = list
            .iter()
            .enumerate()
            .map(|(index, appservice)| (appservice.registration.as_token.clone(), index))
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self {
            list: list.into_iter().map(Arc::new).collect(),
            by_as_token,
            config: config.clone(),
            http,
            db,
            rooms,
            stream,
            ephemeral: Mutex::new(HashMap::new()),
            ephemeral_added: Notify::new(),
        })
    }

    pub fn all(&self) -> &[Arc<Appservice>] {
        &self.list
    }

    /// Looks up the application service whose `as_token` this is.
    pub fn by_as_token(&self, token: &str) -> Option<&Arc<Appservice>> {
        self.by_as_token.get(token).map(|index| &self.list[*index])
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Appservice>> {
        self.list.iter().find(|appservice| appservice.id() == id)
    }

    /// Returns the application service whose `as_token` authenticated `sender`, for
    /// `m.login.application_service`. `action` ("Registering", "Logging in") starts the
    /// message of the error when the request carried no token.
    pub fn of_sender(&self, sender: Option<&Sender>, action: &str) -> Result<&Arc<Appservice>> {
        let Some(sender) = sender else {
            return Err(Error::new(
                ErrorCode::MissingToken,
                format!(
                    "{action} with m.login.application_service needs the application \
                     service's token"
                ),
            ));
        };
        sender.appservice_id.as_deref().and_then(|id| self.by_id(id)).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownToken { soft_logout: false },
                "The access token is not an application service's token",
            )
        })
    }

    /// Returns the verification gatekeeper, the registration marked
    /// `org.caduceus.gatekeeper: true`.
    pub fn gatekeeper(&self) -> Option<&Arc<Appservice>> {
        self.list.iter().find(|appservice| appservice.gatekeeper)
    }

    /// Returns the ID of the application service whose sender the user is or whose user
    /// namespaces cover the user, if any.
    pub fn owner_of(&self, user_id: &UserId) -> Option<&str> {
        self.list.iter().find(|appservice| appservice.owns_user(user_id)).map(|a| a.id())
    }

    /// Checks whether the user belongs to the gatekeeper or to a service marked
    /// `org.caduceus.trusted`, whose users the gating rules skip.
    pub fn is_trusted_user(&self, user_id: &UserId) -> bool {
        self.list.iter().any(|appservice| {
            (appservice.gatekeeper || appservice.trusted) && appservice.owns_user(user_id)
        })
    }

    /// Checks whether the user falls in an exclusive user namespace of any application service.
    pub fn is_exclusive_user(&self, user_id: &UserId) -> bool {
        self.list.iter().any(|appservice| appservice.has_exclusive_user(user_id))
    }

    /// Rejects with `M_EXCLUSIVE` a user ID in an exclusive namespace of an application service
    /// other than `acting`.
    pub fn check_user_free(&self, user_id: &UserId, acting: Option<&str>) -> Result<()> {
        let owner = self.list.iter().find(|appservice| {
            Some(appservice.id()) != acting && appservice.has_exclusive_user(user_id)
        });
        match owner {
            Some(_) => Err(Error::new(
                ErrorCode::Exclusive,
                "That user ID is reserved for an application service",
            )),
            None => Ok(()),
        }
    }

    /// Rejects with `M_EXCLUSIVE` a room alias in an exclusive namespace of an application
    /// service other than `acting`.
    pub fn check_alias_free(&self, alias: &RoomAliasId, acting: Option<&str>) -> Result<()> {
        let owner = self.list.iter().find(|appservice| {
            Some(appservice.id()) != acting && appservice.has_exclusive_alias(alias)
        });
        match owner {
            Some(_) => Err(Error::new(
                ErrorCode::Exclusive,
                "That room alias is reserved for an application service",
            )),
            None => Ok(()),
        }
    }

    /// Asks the application services whose user namespaces cover `user_id` whether the user
    /// exists, so they can create it. Returns true once one of them responds with 200. Failures
    /// are logged and count as "no".
    pub async fn query_user(&self, user_id: &UserId) -> bool {
        let path = format!("/_matrix/app/v1/users/{}", encode_segment(user_id.as_str()));
        for appservice in &self.list {
            if appservice.owns_user(user_id) && self.query(appservice, &path, "user").await {
                return true;
            }
        }
        false
    }

    /// Asks the application services whose alias namespaces cover `alias` whether it exists,
    /// so they can create the room. Returns true once one of them responds with 200.
    pub async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        let path = format!("/_matrix/app/v1/rooms/{}", encode_segment(alias.as_str()));
        for appservice in &self.list {
            if appservice.matches_alias(alias) && self.query(appservice, &path, "alias").await {
                return true;
            }
        }
        false
    }

    async fn query(&self, appservice: &Appservice, path: &str, kind: &str) -> bool {
        let Some(url) = appservice.url() else { return false };
        let response = self
            .http
            .get(format!("{url}{path}"))
            .bearer_auth(&appservice.registration.hs_token)
            .send()
            .await;
        match response {
            Ok(response) if response.status() == reqwest::StatusCode::OK => true,
            Ok(response) => {
                tracing::debug!(id = appservice.id(), kind, status = %response.status(), "application service query returned no match");
                false
            }
            Err(error) => {
                tracing::warn!(id = appservice.id(), kind, error = %without_url(error), "application service query failed");
                false
            }
        }
    }

    /// Calls `POST /_matrix/app/v1/ping` on the application service and returns how long it
    /// took. Failures carry the errcodes the spec gives the client's ping endpoint.
    pub async fn ping(&self, appservice: &Appservice, txn_id: Option<&str>) -> Result<Duration> {
        let Some(url) = appservice.url() else {
            return Err(Error::new(
                ErrorCode::UrlNotSet,
                "This application service has no URL in its registration",
            ));
        };
        let mut body = serde_json::Map::new();
        if let Some(txn_id) = txn_id {
            body.insert("transaction_id".to_owned(), json!(txn_id));
        }
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{url}/_matrix/app/v1/ping"))
            .bearer_auth(&appservice.registration.hs_token)
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Err(Error::new(
                    ErrorCode::ConnectionTimeout,
                    "The application service did not answer in time",
                ))
            }
            Err(error) => {
                tracing::warn!(id = appservice.id(), error = %without_url(error), "ping failed");
                return Err(Error::new(
                    ErrorCode::ConnectionFailed,
                    "The server could not connect to the application service",
                ));
            }
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) if error.is_timeout() => {
                return Err(Error::new(
                    ErrorCode::ConnectionTimeout,
                    "The application service did not answer in time",
                ))
            }
            Err(_) => String::new(),
        };
        let duration = started.elapsed();
        if status != reqwest::StatusCode::OK {
            let mut body = text;
            if body.len() > MAX_PING_BODY {
                let mut end = MAX_PING_BODY;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                body.truncate(end);
            }
            return Err(Error::new(
                ErrorCode::BadStatus { status: status.as_u16(), body },
                format!(
                    "The application service answered the ping with status {}",
                    status.as_u16()
                ),
            ));
        }
        Ok(duration)
    }
}

/// Percent-encodes one path segment, leaving only unreserved characters as they are.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Strips the URL from a request error, because its path contains a user ID or an alias.
fn without_url(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

#[cfg(test)]
mod tests {
    use super::encode_segment;

    #[test]
    fn encodes_ids_as_one_segment() {
        assert_eq!(encode_segment("@a/b:localhost"), "%40a%2Fb%3Alocalhost");
        assert_eq!(encode_segment("#ward-1:host"), "%23ward-1%3Ahost");
    }
}
