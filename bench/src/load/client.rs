//! A minimal Client-Server API client over plain HTTP, so that the numbers show the server's
//! cost rather than a client library's.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use super::target::LoopbackTarget;

/// The user-interactive authentication stage that a run's users complete at registration.
#[derive(Debug, Clone)]
pub enum RegistrationAuth {
    /// `m.login.registration_token` with this token. Each account spends one use of it.
    Token(String),
    /// `m.login.dummy`, which servers offer when registration is open.
    Open,
}

impl RegistrationAuth {
    fn stage(&self) -> &'static str {
        match self {
            Self::Token(_) => "m.login.registration_token",
            Self::Open => "m.login.dummy",
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
}

/// A failed request, classified so that failures can be counted by kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestFailure {
    /// The server returned an error status and, usually, a Matrix `errcode`.
    Status {
        status: u16,
        errcode: Option<String>,
    },
    TimedOut,
    Connection,
    /// Any other transport or decoding failure, with its message.
    Other(String),
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { status, errcode: Some(errcode) } => write!(f, "HTTP {status} {errcode}"),
            Self::Status { status, errcode: None } => write!(f, "HTTP {status}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Connection => f.write_str("connection failed"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for RequestFailure {}

impl From<reqwest::Error> for RequestFailure {
    fn from(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::TimedOut
        } else if error.is_connect() {
            Self::Connection
        } else {
            Self::Other(error.to_string())
        }
    }
}

/// The parts of a `/sync` response the load tool reads.
#[derive(Debug, Deserialize)]
pub struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub rooms: SyncRooms,
}

#[derive(Debug, Default, Deserialize)]
pub struct SyncRooms {
    #[serde(default)]
    pub join: HashMap<String, JoinedRoom>,
}

#[derive(Debug, Deserialize)]
pub struct JoinedRoom {
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Debug, Default, Deserialize)]
pub struct Timeline {
    #[serde(default)]
    pub events: Vec<TimelineEvent>,
    #[serde(default)]
    pub limited: bool,
}

#[derive(Debug, Deserialize)]
pub struct TimelineEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
}

/// One homeserver, reached through a shared HTTP connection pool.
#[derive(Debug, Clone)]
pub struct Homeserver {
    http: reqwest::Client,
    base: Url,
}

impl Homeserver {
    /// Builds a client for `target` with no proxy and no redirects, so that every request goes
    /// to the loopback address the target names and nowhere else.
    pub fn new(target: &LoopbackTarget, request_timeout: Duration) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(request_timeout)
            .tcp_nodelay(true);
        if let Some((name, address)) = &target.localhost_address {
            builder = builder.resolve(name, *address);
        }
        let http = builder.build().context("failed to build the HTTP client")?;
        Ok(Self { http, base: target.url.clone() })
    }

    /// Builds the URL of a Client-Server API endpoint, percent-encoding each path segment.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            // A base URL always has path segments, because only `http` URLs get this far.
            let mut path = url.path_segments_mut().expect("an http URL has a path");
            path.pop_if_empty().extend(["_matrix", "client"]).extend(segments);
        }
        url
    }

    async fn request_json(
        &self,
        method: Method,
        url: Url,
        access_token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), RequestFailure> {
        let mut request = self.http.request(method, url);
        if let Some(token) = access_token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|error| {
                RequestFailure::Other(format!(
                    "HTTP {status} with a body that is not JSON: {error}"
                ))
            })?
        };
        Ok((status, value))
    }

    /// Fails unless `status` is a success, keeping the Matrix `errcode` from the body.
    fn check(status: StatusCode, body: Value) -> Result<Value, RequestFailure> {
        if status.is_success() {
            Ok(body)
        } else {
            Err(status_failure(status, &body))
        }
    }

    /// Registers `username` through user-interactive authentication with `auth` and returns the
    /// new session.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        auth: &RegistrationAuth,
    ) -> anyhow::Result<Session> {
        let url = self.endpoint(&["v3", "register"]);
        let mut body = json!({
            "username": username,
            "password": password,
            "initial_device_display_name": "caduceus-bench load",
        });

        // The first request opens a UIA session and returns the offered flows with HTTP 401.
        let (status, challenge) = self
            .request_json(Method::POST, url.clone(), None, Some(&body))
            .await
            .map_err(|failure| anyhow!("registration of {username} failed: {failure}"))?;
        if status != StatusCode::UNAUTHORIZED {
            bail!(
                "registration of {username} returned HTTP {status} instead of an authentication \
                 challenge: {challenge}"
            );
        }
        let session = challenge
            .get("session")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the registration challenge has no session: {challenge}"))?;
        let offered = challenge
            .get("flows")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|flow| flow.get("stages").and_then(Value::as_array))
            .any(|stages| stages.len() == 1 && stages[0].as_str() == Some(auth.stage()));
        if !offered {
            let hint = match auth {
                RegistrationAuth::Open => "pass --registration-token if the server uses tokens",
                RegistrationAuth::Token(_) => "the server may have token registration disabled",
            };
            bail!(
                "the server does not offer registration with the single stage {}; {hint} \
                 (offered flows: {})",
                auth.stage(),
                challenge.get("flows").cloned().unwrap_or_default()
            );
        }

        body["auth"] = match auth {
            RegistrationAuth::Token(token) => {
                json!({ "type": auth.stage(), "token": token, "session": session })
            }
            RegistrationAuth::Open => json!({ "type": auth.stage(), "session": session }),
        };
        let (status, response) = self
            .request_json(Method::POST, url, None, Some(&body))
            .await
            .map_err(|failure| anyhow!("registration of {username} failed: {failure}"))?;
        if !status.is_success() {
            bail!("registration of {username} failed with HTTP {status}: {response}");
        }
        let field = |name: &str| {
            response
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("the registration response has no {name}: {response}"))
        };
        Ok(Session { user_id: field("user_id")?, access_token: field("access_token")? })
    }

    /// Creates a public room named `name` and returns its ID.
    pub async fn create_room(&self, session: &Session, name: &str) -> anyhow::Result<String> {
        let url = self.endpoint(&["v3", "createRoom"]);
        let body = json!({ "preset": "public_chat", "name": name });
        let (status, response) = self
            .request_json(Method::POST, url, Some(&session.access_token), Some(&body))
            .await
            .map_err(|failure| anyhow!("createRoom failed: {failure}"))?;
        if !status.is_success() {
            bail!("createRoom by {} failed with HTTP {status}: {response}", session.user_id);
        }
        response
            .get("room_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the createRoom response has no room_id: {response}"))
    }

    /// Joins the room `room_id`.
    pub async fn join(&self, session: &Session, room_id: &str) -> anyhow::Result<()> {
        let url = self.endpoint(&["v3", "rooms", room_id, "join"]);
        let (status, response) = self
            .request_json(Method::POST, url, Some(&session.access_token), Some(&json!({})))
            .await
            .map_err(|failure| anyhow!("joining {room_id} failed: {failure}"))?;
        if !status.is_success() {
            bail!("{} could not join {room_id}: HTTP {status}: {response}", session.user_id);
        }
        Ok(())
    }

    /// Sends an `m.room.message` event with `content` and returns its event ID.
    pub async fn send_message(
        &self,
        session: &Session,
        room_id: &str,
        txn_id: &str,
        content: &Value,
    ) -> Result<String, RequestFailure> {
        let url = self.endpoint(&["v3", "rooms", room_id, "send", "m.room.message", txn_id]);
        let (status, response) =
            self.request_json(Method::PUT, url, Some(&session.access_token), Some(content)).await?;
        let response = Self::check(status, response)?;
        response.get("event_id").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            RequestFailure::Other(format!("the send response has no event_id: {response}"))
        })
    }

    /// Calls `/sync` and returns the response with the instant its body was fully received.
    pub async fn sync(
        &self,
        session: &Session,
        since: Option<&str>,
        filter: &str,
        timeout: Duration,
    ) -> Result<(SyncResponse, Instant), RequestFailure> {
        let mut url = self.endpoint(&["v3", "sync"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("filter", filter);
            query.append_pair("timeout", &timeout.as_millis().to_string());
            if let Some(since) = since {
                query.append_pair("since", since);
            }
        }
        let response = self.http.get(url).bearer_auth(&session.access_token).send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let received = Instant::now();
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(status_failure(status, &body));
        }
        let sync = serde_json::from_slice(&bytes).map_err(|error| {
            RequestFailure::Other(format!("the /sync response could not be parsed: {error}"))
        })?;
        Ok((sync, received))
    }
}

fn status_failure(status: StatusCode, body: &Value) -> RequestFailure {
    let errcode = body.get("errcode").and_then(Value::as_str).map(str::to_owned);
    RequestFailure::Status { status: status.as_u16(), errcode }
}
