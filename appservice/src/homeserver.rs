//! Requests from the gatekeeper to the homeserver: the Client-Server API as the bot user, and
//! the privileged `/_caduceus/admin/v1/` verification endpoints, all authorised by the
//! `as_token`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::registers::Area;

/// A request to the homeserver that failed.
#[derive(Debug, thiserror::Error)]
pub enum HsError {
    /// The homeserver returned a Matrix error.
    #[error("{method} {path} answered {status} {errcode}: {message}")]
    Matrix { method: Method, path: String, status: StatusCode, errcode: String, message: String },
    /// The homeserver could not be reached or its response could not be read.
    #[error("{method} {path} failed: {source}")]
    Transport { method: Method, path: String, source: reqwest::Error },
    /// Encrypting or sending through the bot's encryption layer failed.
    #[error("encrypted messaging failed: {0}")]
    Crypto(#[from] crate::crypto::Error),
}

impl HsError {
    /// Returns the Matrix error code, if the homeserver sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Matrix { errcode, .. } => Some(errcode),
            Self::Crypto(crate::crypto::Error::Server { errcode, .. }) => errcode.as_deref(),
            Self::Transport { .. } | Self::Crypto(_) => None,
        }
    }

    /// Returns whether a later retry may succeed, because the homeserver was unreachable,
    /// overloaded or failed itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Matrix { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Transport { .. } => true,
            Self::Crypto(crate::crypto::Error::Http { .. }) => true,
            Self::Crypto(crate::crypto::Error::Server { status, .. }) => {
                *status >= 500 || *status == 429
            }
            Self::Crypto(_) => false,
        }
    }
}

/// One account in the homeserver's account list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    #[serde(default)]
    pub created_ts: u64,
    #[serde(default)]
    pub deactivated: bool,
    pub level: String,
    #[serde(default)]
    pub displayname: Option<String>,
    #[serde(default)]
    pub emails: Vec<String>,
    /// The application service the account belongs to, for bridge and bot users.
    #[serde(default)]
    pub appservice: Option<String>,
}

/// One page of the account list.
#[derive(Debug, Clone, Deserialize)]
pub struct UsersPage {
    pub users: Vec<UserRecord>,
    #[serde(default)]
    pub next_from: Option<String>,
}

/// The evidence sent with a verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_number: Option<String>,
    pub verified_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_check: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The body of `PUT /_caduceus/admin/v1/users/{userId}/verification`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub level: &'static str,
    pub evidence: Evidence,
    pub professions: Vec<String>,
    pub specialties: Vec<String>,
    pub organisations: Vec<String>,
    pub areas: Vec<Area>,
}

/// A client of one homeserver, acting as the gatekeeper's bot user.
#[derive(Debug)]
pub struct Homeserver {
    http: reqwest::Client,
    base: Url,
    as_token: String,
    bot_user_id: String,
    txn_counter: AtomicU64,
    txn_prefix: u64,
}

impl Homeserver {
    pub fn new(base: &str, as_token: &str, bot_user_id: &str) -> anyhow::Result<Self> {
        let base = Url::parse(base)?;
        let http =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
        Ok(Self {
            http,
            base,
            as_token: as_token.to_owned(),
            bot_user_id: bot_user_id.to_owned(),
            txn_counter: AtomicU64::new(0),
            txn_prefix: crate::now_ms(),
        })
    }

    pub fn bot_user_id(&self) -> &str {
        &self.bot_user_id
    }

    /// Sends a request to the path made of `segments` (each one percent-encoded) and returns
    /// the JSON body of a successful response.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, HsError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let path = url.path().to_owned();
        let mut request = self.http.request(method.clone(), url).bearer_auth(&self.as_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport =
            |source| HsError::Transport { method: method.clone(), path: path.clone(), source };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(HsError::Matrix {
            method,
            path,
            status,
            errcode: value["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
            message: value["error"].as_str().unwrap_or(&text).to_owned(),
        })
    }

    /// Logs the bot in with `m.login.application_service` to get a device for end-to-end
    /// encryption. Returns the access token and the device ID.
    pub async fn login(&self, device_id: Option<&str>) -> Result<(String, String), HsError> {
        let mut body = json!({
            "type": "m.login.application_service",
            "identifier": { "type": "m.id.user", "user": self.bot_user_id },
            "initial_device_display_name": "Caduceus verification gatekeeper",
        });
        if let Some(device_id) = device_id {
            body["device_id"] = json!(device_id);
        }
        let answer = self
            .call(Method::POST, &["_matrix", "client", "v3", "login"], &[], Some(&body))
            .await?;
        let field = |name: &str| answer[name].as_str().unwrap_or_default().to_owned();
        Ok((field("access_token"), field("device_id")))
    }

    pub async fn set_display_name(&self, name: &str) -> Result<(), HsError> {
        let segments = ["_matrix", "client", "v3", "profile", &self.bot_user_id, "displayname"];
        self.call(Method::PUT, &segments, &[], Some(&json!({ "displayname": name }))).await?;
        Ok(())
    }

    /// Returns a user's display name, or `None` when they have none.
    pub async fn display_name(&self, user_id: &str) -> Result<Option<String>, HsError> {
        let segments = ["_matrix", "client", "v3", "profile", user_id, "displayname"];
        match self.call(Method::GET, &segments, &[], None).await {
            Ok(answer) => Ok(answer["displayname"].as_str().map(str::to_owned)),
            Err(error) if error.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates a private room with the bot and invites `invite`. `direct` marks it as a direct
    /// chat; `encrypted` turns on end-to-end encryption from the start.
    pub async fn create_room(
        &self,
        invite: &[String],
        direct: bool,
        encrypted: bool,
        name: Option<&str>,
    ) -> Result<String, HsError> {
        let mut body = json!({
            "preset": "private_chat",
            "is_direct": direct,
            "invite": invite,
        });
        if direct {
            body["preset"] = json!("trusted_private_chat");
        }
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        if encrypted {
            body["initial_state"] = json!([{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" },
            }]);
        }
        let answer = self
            .call(Method::POST, &["_matrix", "client", "v3", "createRoom"], &[], Some(&body))
            .await?;
        Ok(answer["room_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Replaces the bot's `m.direct` account data: user ID to direct chat room IDs.
    pub async fn set_direct_rooms(&self, direct: &Value) -> Result<(), HsError> {
        let segments =
            ["_matrix", "client", "v3", "user", &self.bot_user_id, "account_data", "m.direct"];
        self.call(Method::PUT, &segments, &[], Some(direct)).await?;
        Ok(())
    }

    pub async fn join(&self, room_id: &str) -> Result<(), HsError> {
        self.call(
            Method::POST,
            &["_matrix", "client", "v3", "join", room_id],
            &[],
            Some(&json!({})),
        )
        .await?;
        Ok(())
    }

    pub async fn leave(&self, room_id: &str) -> Result<(), HsError> {
        let segments = ["_matrix", "client", "v3", "rooms", room_id, "leave"];
        self.call(Method::POST, &segments, &[], Some(&json!({}))).await?;
        Ok(())
    }

    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), HsError> {
        let segments = ["_matrix", "client", "v3", "rooms", room_id, "invite"];
        self.call(Method::POST, &segments, &[], Some(&json!({ "user_id": user_id }))).await?;
        Ok(())
    }

    /// Returns the user IDs of the members who have joined a room or are invited to it: the
    /// people a room key must reach.
    pub async fn joined_and_invited(&self, room_id: &str) -> Result<Vec<String>, HsError> {
        let segments = ["_matrix", "client", "v3", "rooms", room_id, "members"];
        let answer =
            self.call(Method::GET, &segments, &[("not_membership", "leave")], None).await?;
        let chunk = answer["chunk"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(chunk
            .iter()
            .filter(|event| {
                matches!(event["content"]["membership"].as_str(), Some("join" | "invite"))
            })
            .filter_map(|event| event["state_key"].as_str().map(str::to_owned))
            .collect())
    }

    /// Returns whether the room has `m.room.encryption` state.
    pub async fn is_encrypted(&self, room_id: &str) -> Result<bool, HsError> {
        let segments =
            ["_matrix", "client", "v3", "rooms", room_id, "state", "m.room.encryption", ""];
        match self.call(Method::GET, &segments, &[], None).await {
            Ok(_) => Ok(true),
            Err(error) if error.errcode() == Some("M_NOT_FOUND") => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Sends an event of `event_type` to a room as it is; the content may already be encrypted.
    pub async fn send_event(
        &self,
        room_id: &str,
        event_type: &str,
        content: &Value,
    ) -> Result<String, HsError> {
        let txn_id =
            format!("gk{}-{}", self.txn_prefix, self.txn_counter.fetch_add(1, Ordering::Relaxed));
        let segments = ["_matrix", "client", "v3", "rooms", room_id, "send", event_type, &txn_id];
        let answer = self.call(Method::PUT, &segments, &[], Some(content)).await?;
        Ok(answer["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// One page of the account list, oldest first, starting after `from`.
    pub async fn users(&self, from: Option<&str>, limit: u32) -> Result<UsersPage, HsError> {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        let answer =
            self.call(Method::GET, &["_caduceus", "admin", "v1", "users"], &query, None).await?;
        serde_json::from_value(answer.clone()).map_err(|error| HsError::Matrix {
            method: Method::GET,
            path: "/_caduceus/admin/v1/users".to_owned(),
            status: StatusCode::OK,
            errcode: "M_UNKNOWN".to_owned(),
            message: format!("unexpected answer {answer}: {error}"),
        })
    }

    /// Returns the verification record of a user.
    pub async fn verification(&self, user_id: &str) -> Result<Value, HsError> {
        let segments = ["_caduceus", "admin", "v1", "users", user_id, "verification"];
        self.call(Method::GET, &segments, &[], None).await
    }

    /// Sets the level, evidence and directory attributes of a user.
    pub async fn set_verification(
        &self,
        user_id: &str,
        verification: &Verification,
    ) -> Result<(), HsError> {
        let segments = ["_caduceus", "admin", "v1", "users", user_id, "verification"];
        let body = serde_json::to_value(verification).expect("a verification always serialises");
        self.call(Method::PUT, &segments, &[], Some(&body)).await?;
        Ok(())
    }

    /// Takes a user back to `pending`.
    pub async fn revoke_verification(&self, user_id: &str, reason: &str) -> Result<(), HsError> {
        let segments = ["_caduceus", "admin", "v1", "users", user_id, "verification"];
        self.call(Method::DELETE, &segments, &[], Some(&json!({ "reason": reason }))).await?;
        Ok(())
    }
}
