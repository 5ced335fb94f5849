//! The Application Service API: the requests the homeserver sends to the gatekeeper.
//!
//! - `PUT /_matrix/app/v1/transactions/{txnId}`: events for the bot. They are written to the
//!   inbox of the state file before the response, and a repeated transaction ID adds nothing, so
//!   the homeserver can retry safely and nothing it sent is lost.
//! - `GET /_matrix/app/v1/users/{userId}` and `GET /_matrix/app/v1/rooms/{roomAlias}`: the
//!   gatekeeper creates no users or rooms on demand, so only the bot itself exists.
//! - `POST /_matrix/app/v1/ping`: checks the `hs_token`.
//!
//! Every request must carry the registration's `hs_token` as `Authorization: Bearer`; the
//! deprecated `access_token` query parameter is still accepted from older homeservers. No
//! token is answered with 401 `M_UNAUTHORIZED`, a wrong one with 403 `M_FORBIDDEN`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::state::Store;

/// The state shared by the request handlers.
pub struct ApiState {
    pub hs_token: String,
    pub bot_user_id: String,
    pub store: Arc<Store>,
    /// Woken when new events are in the inbox.
    pub inbox_ready: Arc<Notify>,
}

/// Builds the routes of the Application Service API.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(put_transaction))
        .route("/_matrix/app/v1/users/{user_id}", get(get_user))
        .route("/_matrix/app/v1/rooms/{room_alias}", get(get_room))
        .route("/_matrix/app/v1/ping", post(ping))
        .fallback(unrecognized)
        .with_state(state)
}

/// Builds a Matrix error response.
fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (status, Json(json!({ "errcode": errcode, "error": message }))).into_response()
}

/// Checks the `hs_token`, returning the error response when it is missing or wrong.
fn authorise(
    state: &ApiState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), Box<Response>> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = query.and_then(|query| {
        query.split('&').find_map(|pair| pair.strip_prefix("access_token=")).map(str::to_owned)
    });
    let token = match (from_header, from_query.as_deref()) {
        (Some(token), _) | (None, Some(token)) => token,
        (None, None) => {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                "The request carries no hs_token.",
            )))
        }
    };
    if !constant_time_eq(token.as_bytes(), state.hs_token.as_bytes()) {
        tracing::warn!("rejected a request with a wrong hs_token");
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "The hs_token is not valid.",
        )));
    }
    Ok(())
}

/// Compares two tokens in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn put_transaction(
    State(state): State<Arc<ApiState>>,
    Path(txn_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = authorise(&state, &headers, query.as_deref()) {
        return *response;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "M_NOT_JSON", "The body is not JSON.");
    };
    let Some(events) = body.get("events").and_then(Value::as_array) else {
        return error(StatusCode::BAD_REQUEST, "M_BAD_JSON", "The body has no `events` list.");
    };
    let events: Vec<Value> = events.iter().filter(|event| event.is_object()).cloned().collect();
    let count = events.len();
    // The state file is written synchronously; blocking this worker thread for one small
    // write keeps the acknowledgement honest.
    match state.store.accept_transaction(&txn_id, events) {
        Ok(true) => {
            tracing::debug!(%txn_id, events = count, "accepted transaction");
            state.inbox_ready.notify_one();
        }
        Ok(false) => tracing::debug!(%txn_id, "transaction already accepted"),
        Err(failure) => {
            tracing::error!(%txn_id, error = %failure, "cannot store transaction");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "The transaction could not be stored; send it again.",
            );
        }
    }
    Json(json!({})).into_response()
}

async fn get_user(
    State(state): State<Arc<ApiState>>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorise(&state, &headers, query.as_deref()) {
        return *response;
    }
    if user_id == state.bot_user_id {
        return Json(json!({})).into_response();
    }
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "The gatekeeper has no such user.")
}

async fn get_room(
    State(state): State<Arc<ApiState>>,
    Path(_room_alias): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorise(&state, &headers, query.as_deref()) {
        return *response;
    }
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "The gatekeeper has no room aliases.")
}

async fn ping(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorise(&state, &headers, query.as_deref()) {
        return *response;
    }
    Json(json!({})).into_response()
}

async fn unrecognized() -> Response {
    error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request.")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;

    use super::*;

    /// Sends one request through the router in-process and returns the status and JSON body.
    async fn call(router: &Router, request: Request<Body>) -> (u16, Value) {
        let response = tower::ServiceExt::oneshot(router.clone(), request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn setup() -> (tempfile::TempDir, Arc<ApiState>, Router) {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(ApiState {
            hs_token: "secret".into(),
            bot_user_id: "@verification:localhost".into(),
            store: Arc::new(Store::open(dir.path()).unwrap()),
            inbox_ready: Arc::new(Notify::new()),
        });
        let router = router(state.clone());
        (dir, state, router)
    }

    fn request(method: &str, uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    }

    #[tokio::test]
    async fn transactions_need_the_hs_token_and_are_idempotent() {
        let (_dir, state, router) = setup();
        let body = r#"{"events":[{"type":"m.room.message","event_id":"$1"}]}"#;
        let path = "/_matrix/app/v1/transactions/t1";

        let (status, answer) = call(&router, request("PUT", path, None, body)).await;
        assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")));
        let (status, answer) = call(&router, request("PUT", path, Some("wrong"), body)).await;
        assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
        assert_eq!(state.store.read(|s| s.inbox.len()), 0, "a refused request stores nothing");

        let (status, answer) = call(&router, request("PUT", path, Some("secret"), body)).await;
        assert_eq!((status, answer), (200, json!({})));
        let (status, _) = call(&router, request("PUT", path, Some("secret"), body)).await;
        assert_eq!(status, 200);
        assert_eq!(state.store.read(|s| s.inbox.len()), 1, "a repeated transaction adds nothing");

        let legacy = format!("{path}2?access_token=secret");
        let (status, _) = call(&router, request("PUT", &legacy, None, body)).await;
        assert_eq!(status, 200);
        assert_eq!(state.store.read(|s| s.inbox.len()), 2);
    }

    #[tokio::test]
    async fn bad_bodies_are_refused() {
        let (_dir, state, router) = setup();
        let path = "/_matrix/app/v1/transactions/t9";
        let (status, answer) = call(&router, request("PUT", path, Some("secret"), "{")).await;
        assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_NOT_JSON")));
        let (status, answer) = call(&router, request("PUT", path, Some("secret"), "{}")).await;
        assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")));
        // A refused body does not use up the transaction ID.
        let (status, _) =
            call(&router, request("PUT", path, Some("secret"), r#"{"events":[]}"#)).await;
        assert_eq!(status, 200);
        assert_eq!(state.store.read(|s| s.processed_txns.len()), 1);
    }

    #[tokio::test]
    async fn queries_and_ping() {
        let (_dir, _state, router) = setup();
        let bot = "/_matrix/app/v1/users/%40verification%3Alocalhost";
        assert_eq!(call(&router, request("GET", bot, Some("secret"), "")).await.0, 200);
        let other = "/_matrix/app/v1/users/%40someone%3Alocalhost";
        let (status, answer) = call(&router, request("GET", other, Some("secret"), "")).await;
        assert_eq!((status, answer["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
        let alias = "/_matrix/app/v1/rooms/%23room%3Alocalhost";
        assert_eq!(call(&router, request("GET", alias, Some("secret"), "")).await.0, 404);
        assert_eq!(call(&router, request("GET", alias, None, "")).await.0, 401);

        let ping = "/_matrix/app/v1/ping";
        let (status, answer) =
            call(&router, request("POST", ping, Some("secret"), r#"{"transaction_id":"p"}"#)).await;
        assert_eq!((status, answer), (200, json!({})));
        assert_eq!(call(&router, request("POST", ping, Some("nope"), "{}")).await.0, 403);
        let (status, answer) =
            call(&router, request("GET", "/_matrix/app/v1/nothing", None, "")).await;
        assert_eq!((status, answer["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    }
}
