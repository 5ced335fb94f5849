//! The Application Service API: registration files, `as_token` authentication and
//! masquerading, exclusive namespaces, user and alias queries, pings, and transactions that
//! survive outages of either side. The application service is a small axum server inside the
//! test, on 127.0.0.1, that records what the homeserver sends it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use caduceus_tests::{
    assert_transaction_matches_spec, caduceus_binary, encode_path_segment, TestServer,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const AS_TOKEN: &str = "bridge-as-token-0123456789";
const HS_TOKEN: &str = "bridge-hs-token-0123456789";
const OTHER_AS_TOKEN: &str = "other-as-token-0123456789";

/// The responses of the test application service to transactions and pings.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    /// 200 with a body that is not a JSON object.
    Malformed,
    /// 500 with a Matrix error body.
    Failing,
}

#[derive(Default)]
struct Recorded {
    /// Every transaction attempt: (txn ID, event IDs), including failed ones.
    attempts: Vec<(String, Vec<String>)>,
    /// Transactions acknowledged with 200, in arrival order.
    delivered: Vec<(String, Value)>,
    pings: Vec<Value>,
    queried_users: Vec<String>,
    queried_aliases: Vec<String>,
    bad_auth: usize,
}

struct AsState {
    mode: Mutex<Mode>,
    recorded: Mutex<Recorded>,
    /// Users and aliases the service creates when queried.
    known_users: HashSet<String>,
    known_aliases: HashSet<String>,
    homeserver: Mutex<Option<String>>,
    http: reqwest::Client,
}

/// A running test application service.
struct TestAppservice {
    state: Arc<AsState>,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
}

impl TestAppservice {
    async fn start() -> Self {
        let state = Arc::new(AsState {
            mode: Mutex::new(Mode::Normal),
            recorded: Mutex::new(Recorded::default()),
            known_users: ["@bridge_carol:localhost".to_owned()].into(),
            known_aliases: ["#bridge_lobby:localhost".to_owned()].into(),
            homeserver: Mutex::new(None),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        });
        let mut service = Self { state, port: 0, stop: None };
        service.listen(0).await;
        service
    }

    async fn listen(&mut self, port: u16) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the test application service binds on 127.0.0.1");
        self.port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
            .route("/_matrix/app/v1/ping", post(ping))
            .route("/_matrix/app/v1/users/{user_id}", get(query_user))
            .route("/_matrix/app/v1/rooms/{alias}", get(query_alias))
            .with_state(self.state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.stop = Some(stop);
    }

    /// Stops listening, so the homeserver's connections are refused.
    async fn go_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait until the port refuses connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            assert!(Instant::now() < deadline, "the test application service did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn come_back(&mut self) {
        let port = self.port;
        self.listen(port).await;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn set_homeserver(&self, server: &TestServer) {
        *self.state.homeserver.lock().unwrap() = Some(server.base_url());
    }

    /// Returns the event IDs of every acknowledged transaction, in order.
    fn delivered_event_ids(&self) -> Vec<String> {
        let recorded = self.state.recorded.lock().unwrap();
        recorded
            .delivered
            .iter()
            .flat_map(|(_, body)| body["events"].as_array().cloned().unwrap_or_default())
            .map(|event| event["event_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until no transaction has arrived for half a second, so earlier events are out of
    /// the way.
    async fn settle(&self) {
        let mut last = usize::MAX;
        loop {
            let count = self.state.recorded.lock().unwrap().attempts.len();
            if count == last {
                return;
            }
            last = count;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the given events were delivered, and returns every delivered event ID.
    async fn wait_for_events(&self, expected: &[String]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let delivered = self.delivered_event_ids();
            if expected.iter().all(|event_id| delivered.contains(event_id)) {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "events {expected:?} were not all delivered; delivered: {delivered:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn authorised(state: &AsState, headers: &HeaderMap) -> bool {
    let ok = headers.get("authorization").and_then(|value| value.to_str().ok())
        == Some(format!("Bearer {HS_TOKEN}").as_str());
    if !ok {
        state.recorded.lock().unwrap().bad_auth += 1;
    }
    ok
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" }))).into_response()
}

async fn transaction(
    State(state): State<Arc<AsState>>,
    UrlPath(txn_id): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorised(&state, &headers) {
        return forbidden();
    }
    let event_ids: Vec<String> = body["events"]
        .as_array()
        .map(|events| {
            events.iter().map(|e| e["event_id"].as_str().unwrap_or_default().to_owned()).collect()
        })
        .unwrap_or_default();
    let mode = *state.mode.lock().unwrap();
    let mut recorded = state.recorded.lock().unwrap();
    recorded.attempts.push((txn_id.clone(), event_ids));
    match mode {
        Mode::Normal => {
            recorded.delivered.push((txn_id, body));
            Json(json!({})).into_response()
        }
        Mode::Malformed => (StatusCode::OK, "not json").into_response(),
        Mode::Failing => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "errcode": "M_UNKNOWN" })))
                .into_response()
        }
    }
}

async fn ping(State(state): State<Arc<AsState>>, headers: HeaderMap, body: String) -> Response {
    if !authorised(&state, &headers) {
        return forbidden();
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    state.recorded.lock().unwrap().pings.push(body);
    match *state.mode.lock().unwrap() {
        Mode::Normal => Json(json!({})).into_response(),
        _ => (StatusCode::IM_A_TEAPOT, "{\"errcode\":\"M_UNKNOWN\"}").into_response(),
    }
}

/// Registers a known user through the homeserver before responding, as a bridge does.
async fn query_user(
    State(state): State<Arc<AsState>>,
    UrlPath(user_id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&state, &headers) {
        return forbidden();
    }
    state.recorded.lock().unwrap().queried_users.push(user_id.clone());
    if !state.known_users.contains(&user_id) {
        return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" }))).into_response();
    }
    let homeserver = state.homeserver.lock().unwrap().clone().unwrap();
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
    let response = state
        .http
        .post(format!("{homeserver}/_matrix/client/v3/register"))
        .bearer_auth(AS_TOKEN)
        .json(&json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the service registers {user_id}");
    Json(json!({})).into_response()
}

/// Creates the room of a known alias through the homeserver before responding.
async fn query_alias(
    State(state): State<Arc<AsState>>,
    UrlPath(alias): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&state, &headers) {
        return forbidden();
    }
    state.recorded.lock().unwrap().queried_aliases.push(alias.clone());
    if !state.known_aliases.contains(&alias) {
        return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" }))).into_response();
    }
    let homeserver = state.homeserver.lock().unwrap().clone().unwrap();
    let name = alias.trim_start_matches('#').split(':').next().unwrap().to_owned();
    let response = state
        .http
        .post(format!("{homeserver}/_matrix/client/v3/createRoom"))
        .bearer_auth(AS_TOKEN)
        .json(&json!({ "room_alias_name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the service creates the room of {alias}");
    Json(json!({})).into_response()
}

/// Writes the registration files: the bridge at `url`, and a second service whose URL is
/// `other_url` (or null). Returns the comma-separated list for the config.
fn write_registrations(dir: &Path, url: &str, other_url: Option<&str>) -> String {
    let bridge = format!(
        r##"id: bridge
url: "{url}"
as_token: "{AS_TOKEN}"
hs_token: "{HS_TOKEN}"
sender_localpart: bridgebot
rate_limited: false
receive_ephemeral: true
org.caduceus.gatekeeper: true
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:localhost"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:localhost"
  rooms: []
"##
    );
    let other_url = other_url.map_or("null".to_owned(), |url| format!("\"{url}\""));
    let other = format!(
        r#"id: other
url: {other_url}
as_token: "{OTHER_AS_TOKEN}"
hs_token: "other-hs-token-0123456789"
sender_localpart: otherbot
namespaces:
  users:
    - exclusive: true
      regex: "@other_.*"
"#
    );
    let bridge_path = dir.join("bridge.yaml");
    let other_path = dir.join("other.yaml");
    std::fs::write(&bridge_path, bridge).unwrap();
    std::fs::write(&other_path, other).unwrap();
    format!("{},{}", bridge_path.display(), other_path.display())
}

async fn start_server(files: &str) -> TestServer {
    TestServer::start_with_env(&[
        ("CADUCEUS__APPSERVICES__REGISTRATION_FILES", files),
        ("CADUCEUS__APPSERVICES__RETRY_BASE_MS", "50"),
        ("CADUCEUS__APPSERVICES__RETRY_MAX_MS", "400"),
        ("CADUCEUS__APPSERVICES__REQUEST_TIMEOUT_MS", "3000"),
        ("CADUCEUS__REGISTRATION__OPEN", "true"),
    ])
    .await
}

/// Registers a namespace user through the application service and returns its user ID.
async fn register_bridge_user(server: &TestServer, localpart: &str) -> String {
    let response = server
        .post(
            "/_matrix/client/v3/register",
            Some(AS_TOKEN),
            &json!({ "type": "m.login.application_service", "username": localpart }),
        )
        .await;
    response.assert_status(200).assert_spec("/_matrix/client/v3/register");
    response.str_field("user_id").to_owned()
}

fn as_user(path: &str, user_id: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}user_id={}", encode_path_segment(user_id))
}

async fn send_text(
    server: &TestServer,
    token: Option<&str>,
    path_user: Option<&str>,
    room: &str,
    n: usize,
) -> String {
    let mut path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/txn{n}",
        encode_path_segment(room)
    );
    if let Some(user_id) = path_user {
        path = as_user(&path, user_id);
    }
    let response = server
        .put(&path, token, &json!({ "msgtype": "m.text", "body": format!("message {n}") }))
        .await;
    response.assert_status(200);
    response.str_field("event_id").to_owned()
}

/// Creates a room of alice's that the bridge user @bridge_bob joins, so every event in it
/// interests the bridge.
async fn shared_room(server: &TestServer) -> (caduceus_tests::Account, String) {
    let alice = server.register("alice").await;
    let bob = register_bridge_user(server, "bridge_bob").await;
    let room = server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "invite": [bob] }))
        .await;
    room.assert_status(200);
    let room_id = room.str_field("room_id").to_owned();
    let join = format!("/_matrix/client/v3/join/{}", encode_path_segment(&room_id));
    server.post(&as_user(&join, &bob), Some(AS_TOKEN), &json!({})).await.assert_status(200);
    (alice, room_id)
}

#[tokio::test]
async fn appservice_token_acts_only_for_users_in_its_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let server = start_server(&files).await;
    let whoami = "/_matrix/client/v3/account/whoami";

    let sender = server.get(whoami, Some(AS_TOKEN)).await;
    sender.assert_status(200).assert_spec(whoami);
    assert_eq!(sender.body["user_id"], json!("@bridgebot:localhost"), "the sender account exists");

    let bob = register_bridge_user(&server, "bridge_bob").await;
    let masquerade = server.get(&as_user(whoami, &bob), Some(AS_TOKEN)).await;
    masquerade.assert_status(200);
    assert_eq!(masquerade.body["user_id"], json!(bob));
    let by_query =
        server.get(&format!("{}&access_token={AS_TOKEN}", as_user(whoami, &bob)), None).await;
    assert_eq!(by_query.body["user_id"], json!(bob), "the token also works as a query parameter");

    let alice = server.register("alice").await;
    server
        .get(&as_user(whoami, &alice.user_id), Some(AS_TOKEN))
        .await
        .assert_matrix_error(403, "M_FORBIDDEN")
        .assert_spec(whoami);
    server
        .get(&as_user(whoami, "@bridge_nobody:localhost"), Some(AS_TOKEN))
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");
    server
        .get(&as_user(whoami, &bob), Some(OTHER_AS_TOKEN))
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");
    server
        .get(whoami, Some("not-a-token"))
        .await
        .assert_matrix_error(401, "M_UNKNOWN_TOKEN")
        .assert_spec(whoami);
    // A user's own token cannot masquerade: the parameter is ignored.
    let own = server.get(&as_user(whoami, &bob), alice.token()).await;
    assert_eq!(own.body["user_id"], json!(alice.user_id));

    // A device of the masqueraded user can be named; an unknown one is refused.
    let login = server
        .post(
            "/_matrix/client/v3/login",
            Some(AS_TOKEN),
            &json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "bridge_bob" } }),
        )
        .await;
    let device_id = login.str_field("device_id").to_owned();
    let with_device = server
        .get(
            &format!("{}&device_id={}", as_user(whoami, &bob), encode_path_segment(&device_id)),
            Some(AS_TOKEN),
        )
        .await;
    assert_eq!(with_device.body["device_id"], json!(device_id));
    server
        .get(&format!("{}&device_id=NOPE", as_user(whoami, &bob)), Some(AS_TOKEN))
        .await
        .assert_matrix_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn appservice_registers_logs_in_and_holds_its_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let server = start_server(&files).await;
    let register = "/_matrix/client/v3/register";
    let login = "/_matrix/client/v3/login";

    let flows = server.get(login, None).await;
    flows.assert_status(200).assert_spec(login);
    let types: Vec<&str> =
        flows.body["flows"].as_array().unwrap().iter().filter_map(|f| f["type"].as_str()).collect();
    assert!(types.contains(&"m.login.application_service"), "{types:?}");

    let as_register = |username: &str, inhibit: bool| json!({ "type": "m.login.application_service", "username": username, "inhibit_login": inhibit });
    let created = server.post(register, Some(AS_TOKEN), &as_register("bridge_dave", false)).await;
    created.assert_status(200).assert_spec(register);
    assert!(created.body["access_token"].is_string());
    let quiet = server.post(register, Some(AS_TOKEN), &as_register("bridge_erin", true)).await;
    quiet.assert_status(200).assert_spec(register);
    assert!(quiet.body.get("access_token").is_none(), "inhibit_login gives no token");
    server
        .post(register, Some(AS_TOKEN), &as_register("outsider", false))
        .await
        .assert_matrix_error(400, "M_EXCLUSIVE")
        .assert_spec(register);
    server
        .post(register, Some(AS_TOKEN), &as_register("other_frank", false))
        .await
        .assert_matrix_error(400, "M_EXCLUSIVE");
    server
        .post(register, None, &as_register("bridge_gina", false))
        .await
        .assert_matrix_error(401, "M_MISSING_TOKEN");

    let logged_in = server
        .post(
            login,
            Some(AS_TOKEN),
            &json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "bridge_erin" } }),
        )
        .await;
    logged_in.assert_status(200).assert_spec(login);
    assert_eq!(logged_in.body["user_id"], json!("@bridge_erin:localhost"));
    let token = logged_in.str_field("access_token").to_owned();
    let whoami = server.get("/_matrix/client/v3/account/whoami", Some(&token)).await;
    assert_eq!(whoami.body["user_id"], json!("@bridge_erin:localhost"));
    server
        .post(
            login,
            Some(OTHER_AS_TOKEN),
            &json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "bridge_erin" } }),
        )
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");

    // Everyone else is kept out of the exclusive namespaces.
    let open = json!({ "username": "bridge_mallory", "password": "a long enough password", "auth": { "type": "m.login.dummy" } });
    server.post(register, None, &open).await.assert_matrix_error(400, "M_EXCLUSIVE");
    server
        .get("/_matrix/client/v3/register/available?username=bridge_mallory", None)
        .await
        .assert_matrix_error(400, "M_EXCLUSIVE")
        .assert_spec("/_matrix/client/v3/register/available");
    assert!(server.username_available("mallory").await);

    let alice = server.register("alice").await;
    let room = server.post("/_matrix/client/v3/createRoom", alice.token(), &json!({})).await;
    let room_id = room.str_field("room_id").to_owned();
    let alias_path =
        |alias: &str| format!("/_matrix/client/v3/directory/room/{}", encode_path_segment(alias));
    server
        .put(&alias_path("#bridge_ward:localhost"), alice.token(), &json!({ "room_id": room_id }))
        .await
        .assert_matrix_error(400, "M_EXCLUSIVE");
    server
        .put(&alias_path("#ward:localhost"), alice.token(), &json!({ "room_id": room_id }))
        .await
        .assert_status(200);
    server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            &json!({ "room_alias_name": "bridge_ward" }),
        )
        .await
        .assert_matrix_error(400, "M_EXCLUSIVE");
    server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(AS_TOKEN),
            &json!({ "room_alias_name": "bridge_ward" }),
        )
        .await
        .assert_status(200);
}

#[tokio::test]
async fn unknown_users_and_aliases_are_asked_of_the_appservice() {
    let dir = tempfile::tempdir().unwrap();
    let appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let server = start_server(&files).await;
    appservice.set_homeserver(&server);

    // Looking people up takes a verified account.
    let viewer = server.register("viewer").await;
    let profile = |user: &str| format!("/_matrix/client/v3/profile/{}", encode_path_segment(user));
    let carol = server.get(&profile("@bridge_carol:localhost"), viewer.token()).await;
    carol.assert_status(200).assert_spec("/_matrix/client/v3/profile/{userId}");
    server
        .get(&profile("@bridge_unknown:localhost"), viewer.token())
        .await
        .assert_matrix_error(404, "M_NOT_FOUND");
    server
        .get(&profile("@nobody:localhost"), viewer.token())
        .await
        .assert_matrix_error(404, "M_NOT_FOUND");

    let alias =
        |alias: &str| format!("/_matrix/client/v3/directory/room/{}", encode_path_segment(alias));
    let lobby = server.get(&alias("#bridge_lobby:localhost"), None).await;
    lobby.assert_status(200).assert_spec("/_matrix/client/v3/directory/room/{roomAlias}");
    assert!(lobby.body["room_id"].as_str().unwrap().starts_with('!'));
    server
        .get(&alias("#bridge_unknown:localhost"), None)
        .await
        .assert_matrix_error(404, "M_NOT_FOUND");
    server.get(&alias("#plain:localhost"), None).await.assert_matrix_error(404, "M_NOT_FOUND");

    let recorded = appservice.state.recorded.lock().unwrap();
    assert_eq!(recorded.queried_users, ["@bridge_carol:localhost", "@bridge_unknown:localhost"]);
    assert_eq!(recorded.queried_aliases, ["#bridge_lobby:localhost", "#bridge_unknown:localhost"]);
    assert_eq!(recorded.bad_auth, 0, "every request carried the hs_token");
}

#[tokio::test]
async fn ping_reports_success_and_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let appservice = TestAppservice::start().await;
    // The second service points at a port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let files = write_registrations(dir.path(), &appservice.url(), Some(&closed_url));
    let server = start_server(&files).await;
    let template = "/_matrix/client/v1/appservice/{appserviceId}/ping";
    let ping = |id: &str| format!("/_matrix/client/v1/appservice/{id}/ping");

    let ok = server.post(&ping("bridge"), Some(AS_TOKEN), &json!({ "transaction_id": "t1" })).await;
    ok.assert_status(200).assert_spec(template);
    assert!(ok.body["duration_ms"].is_u64());
    assert_eq!(
        appservice.state.recorded.lock().unwrap().pings,
        [json!({ "transaction_id": "t1" })]
    );

    appservice.set_mode(Mode::Failing);
    let bad = server.post(&ping("bridge"), Some(AS_TOKEN), &json!({})).await;
    bad.assert_matrix_error(502, "M_BAD_STATUS").assert_spec(template);
    assert_eq!(bad.body["status"], json!(418));
    assert_eq!(bad.body["body"], json!("{\"errcode\":\"M_UNKNOWN\"}"));

    server
        .post(&ping("other"), Some(OTHER_AS_TOKEN), &json!({}))
        .await
        .assert_matrix_error(502, "M_CONNECTION_FAILED")
        .assert_spec(template);
    server
        .post(&ping("bridge"), Some(OTHER_AS_TOKEN), &json!({}))
        .await
        .assert_matrix_error(403, "M_FORBIDDEN")
        .assert_spec(template);
    let alice = server.register("alice").await;
    server
        .post(&ping("bridge"), alice.token(), &json!({}))
        .await
        .assert_matrix_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn ping_without_url_is_url_not_set() {
    let dir = tempfile::tempdir().unwrap();
    let appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let server = start_server(&files).await;
    server
        .post("/_matrix/client/v1/appservice/other/ping", Some(OTHER_AS_TOKEN), &json!({}))
        .await
        .assert_matrix_error(400, "M_URL_NOT_SET")
        .assert_spec("/_matrix/client/v1/appservice/{appserviceId}/ping");
}

#[tokio::test]
async fn transactions_arrive_in_order_across_an_appservice_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let server = start_server(&files).await;
    let (alice, room_id) = shared_room(&server).await;

    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(send_text(&server, alice.token(), None, &room_id, n).await);
    }
    sent.push(send_text(&server, Some(AS_TOKEN), Some("@bridge_bob:localhost"), &room_id, 3).await);
    let delivered = appservice.wait_for_events(&sent).await;
    let positions: Vec<usize> =
        sent.iter().map(|id| delivered.iter().position(|d| d == id).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order: {delivered:?}");

    appservice.go_down().await;
    let mut during = Vec::new();
    for n in 4..10 {
        during.push(send_text(&server, alice.token(), None, &room_id, n).await);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    appservice.come_back().await;
    let delivered = appservice.wait_for_events(&during).await;
    let tail: Vec<&String> = delivered.iter().filter(|id| during.contains(id)).collect();
    assert_eq!(tail, during.iter().collect::<Vec<_>>(), "delivered once each, in order");

    let recorded = appservice.state.recorded.lock().unwrap();
    let txn_ids: Vec<&String> = recorded.delivered.iter().map(|(txn_id, _)| txn_id).collect();
    let unique: HashSet<&&String> = txn_ids.iter().collect();
    assert_eq!(unique.len(), txn_ids.len(), "each transaction ID is acknowledged once");
    let event = recorded.delivered[0].1["events"][0].clone();
    for key in ["event_id", "room_id", "sender", "type", "origin_server_ts", "content"] {
        assert!(event.get(key).is_some(), "events are in the client format: {event}");
    }
    for (_, body) in &recorded.delivered {
        assert_transaction_matches_spec(body);
    }
    assert_eq!(recorded.bad_auth, 0);
}

impl TestAppservice {
    /// Returns the `ephemeral` events of every acknowledged transaction, in order.
    fn delivered_ephemeral(&self) -> Vec<Value> {
        let recorded = self.state.recorded.lock().unwrap();
        recorded
            .delivered
            .iter()
            .flat_map(|(_, body)| body["ephemeral"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// Returns the receipts in ephemeral events as (room ID, event ID, receipt type, user ID).
fn receipts_in(ephemeral: &[Value]) -> Vec<(String, String, String, String)> {
    let mut receipts = Vec::new();
    for event in ephemeral.iter().filter(|event| event["type"] == "m.receipt") {
        let room_id = event["room_id"].as_str().unwrap_or_default();
        for (event_id, types) in event["content"].as_object().into_iter().flatten() {
            for (receipt_type, users) in types.as_object().into_iter().flatten() {
                for user_id in users.as_object().into_iter().flatten().map(|(user, _)| user) {
                    receipts.push((
                        room_id.to_owned(),
                        event_id.clone(),
                        receipt_type.clone(),
                        user_id.clone(),
                    ));
                }
            }
        }
    }
    receipts
}

#[tokio::test]
async fn trusted_service_users_skip_gating() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_registrations(dir.path(), "http://127.0.0.1:9", None);
    let other = dir.path().join("other.yaml");
    let text = std::fs::read_to_string(&other).unwrap();
    std::fs::write(
        &other,
        text.replace(
            "sender_localpart: otherbot\n",
            "sender_localpart: otherbot\norg.caduceus.trusted: true\n",
        ),
    )
    .unwrap();
    let server = start_server(&files).await;

    let registered = server
        .post(
            "/_matrix/client/v3/register",
            Some(OTHER_AS_TOKEN),
            &json!({ "type": "m.login.application_service", "username": "other_pager" }),
        )
        .await;
    registered.assert_status(200);
    let pager = registered.str_field("user_id").to_owned();

    // The new account is pending, yet a verified colleague may invite it, and it may invite.
    let alice = server.register("alice").await;
    let room = server
        .post("/_matrix/client/v3/createRoom", alice.token(), &json!({ "invite": [pager] }))
        .await;
    room.assert_status(200);
    let own_room = server
        .post(
            &as_user("/_matrix/client/v3/createRoom", &pager),
            Some(OTHER_AS_TOKEN),
            &json!({ "invite": [alice.user_id] }),
        )
        .await;
    own_room.assert_status(200);

    // The account list marks the accounts of application services.
    let users = server.get("/_caduceus/admin/v1/users?limit=100", Some(AS_TOKEN)).await;
    users.assert_status(200);
    let list = users.body["users"].as_array().expect("a list of users");
    let entry = |user_id: &str| {
        list.iter().find(|user| user["user_id"] == user_id).cloned().unwrap_or_default()
    };
    assert_eq!(entry(&pager)["appservice"], "other", "{list:?}");
    assert_eq!(entry(&pager)["level"], "pending", "{list:?}");
    assert!(entry(&alice.user_id).get("appservice").is_none(), "{list:?}");
}

#[tokio::test]
async fn ephemeral_events_reach_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let server = start_server(&files).await;
    let (alice, room_id) = shared_room(&server).await;
    let event_id = send_text(&server, alice.token(), None, &room_id, 0).await;
    appservice.wait_for_events(std::slice::from_ref(&event_id)).await;

    let room = encode_path_segment(&room_id);
    let typing = format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_path());
    let body = json!({ "typing": true, "timeout": 30000 });
    server.put(&typing, alice.token(), &body).await.assert_status(200);
    let receipt = |kind: &str| {
        format!("/_matrix/client/v3/rooms/{room}/receipt/{kind}/{}", encode_path_segment(&event_id))
    };
    server.post(&receipt("m.read"), alice.token(), &json!({})).await.assert_status(200);
    // Alice's private receipt is hers alone; bob's belongs to the service's namespace.
    server.post(&receipt("m.read.private"), alice.token(), &json!({})).await.assert_status(200);
    let bob = "@bridge_bob:localhost";
    server
        .post(&as_user(&receipt("m.read.private"), bob), Some(AS_TOKEN), &json!({}))
        .await
        .assert_status(200);

    let expected = [
        (room_id.clone(), event_id.clone(), "m.read".to_owned(), alice.user_id.clone()),
        (room_id.clone(), event_id.clone(), "m.read.private".to_owned(), bob.to_owned()),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let ephemeral = loop {
        let ephemeral = appservice.delivered_ephemeral();
        let receipts = receipts_in(&ephemeral);
        if expected.iter().all(|receipt| receipts.contains(receipt)) {
            break ephemeral;
        }
        assert!(Instant::now() < deadline, "receipts missing; ephemeral so far: {ephemeral:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let typing_events: Vec<&Value> =
        ephemeral.iter().filter(|event| event["type"] == "m.typing").collect();
    assert!(
        typing_events.iter().any(|event| event["room_id"] == room_id.as_str()
            && event["content"]["user_ids"] == json!([alice.user_id])),
        "alice's typing is missing: {ephemeral:?}"
    );
    let private_of_alice =
        (room_id.clone(), event_id.clone(), "m.read.private".to_owned(), alice.user_id.clone());
    assert!(
        !receipts_in(&ephemeral).contains(&private_of_alice),
        "a private receipt of someone outside the namespace leaked: {ephemeral:?}"
    );

    // Stopping to type is news too.
    server.put(&typing, alice.token(), &json!({ "typing": false })).await.assert_status(200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stopped = appservice
            .delivered_ephemeral()
            .iter()
            .any(|event| event["type"] == "m.typing" && event["content"]["user_ids"] == json!([]));
        if stopped {
            break;
        }
        assert!(Instant::now() < deadline, "the end of typing never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded = appservice.state.recorded.lock().unwrap();
    for (_, body) in &recorded.delivered {
        assert_transaction_matches_spec(body);
    }
}

#[tokio::test]
async fn malformed_answers_are_retried_with_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let server = start_server(&files).await;
    let (alice, room_id) = shared_room(&server).await;
    appservice.settle().await;

    appservice.set_mode(Mode::Malformed);
    let event_id = send_text(&server, alice.token(), None, &room_id, 0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let txn_id = loop {
        {
            let recorded = appservice.state.recorded.lock().unwrap();
            let tries: Vec<&(String, Vec<String>)> =
                recorded.attempts.iter().filter(|(_, ids)| ids.contains(&event_id)).collect();
            if tries.len() >= 3 {
                assert!(tries
                    .iter()
                    .all(|(txn_id, ids)| *txn_id == tries[0].0 && *ids == tries[0].1));
                break tries[0].0.clone();
            }
        }
        assert!(Instant::now() < deadline, "the malformed answer was not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!appservice.delivered_event_ids().contains(&event_id));

    appservice.set_mode(Mode::Normal);
    appservice.wait_for_events(std::slice::from_ref(&event_id)).await;
    let recorded = appservice.state.recorded.lock().unwrap();
    assert!(recorded.delivered.iter().any(|(id, _)| *id == txn_id), "the same txn ID succeeds");
}

#[tokio::test]
async fn undelivered_events_are_sent_after_a_homeserver_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut appservice = TestAppservice::start().await;
    let files = write_registrations(dir.path(), &appservice.url(), None);
    let mut server = start_server(&files).await;
    let (alice, room_id) = shared_room(&server).await;
    appservice.settle().await;

    appservice.go_down().await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(send_text(&server, alice.token(), None, &room_id, n).await);
    }
    server.kill_9();
    server.restart().await;
    sent.push(send_text(&server, alice.token(), None, &room_id, 5).await);
    appservice.come_back().await;

    let delivered = appservice.wait_for_events(&sent).await;
    let order: Vec<&String> = delivered.iter().filter(|id| sent.contains(id)).collect();
    assert_eq!(order, sent.iter().collect::<Vec<_>>(), "all delivered once, in order");
}

#[tokio::test]
async fn invalid_registration_files_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_registrations(dir.path(), "http://127.0.0.1:9", None);
    let bad_yaml = dir.path().join("broken.yaml");
    std::fs::write(&bad_yaml, "id: [unclosed").unwrap();
    let bad_regex = dir.path().join("regex.yaml");
    let bridge = std::fs::read_to_string(dir.path().join("bridge.yaml")).unwrap();
    std::fs::write(
        &bad_regex,
        bridge
            .replace("@bridge_.*", "@bridge_(")
            .replace("id: bridge", "id: third")
            .replace("bridge-", "third-"),
    )
    .unwrap();
    let duplicate = dir.path().join("duplicate.yaml");
    std::fs::write(&duplicate, bridge.replace("bridge-", "dup-")).unwrap();
    let same_tokens = dir.path().join("same.yaml");
    std::fs::write(
        &same_tokens,
        bridge.replace("id: bridge", "id: same").replace(HS_TOKEN, AS_TOKEN),
    )
    .unwrap();

    let cases: [(String, &Path, &str); 4] = [
        (format!("{good},{}", bad_yaml.display()), &bad_yaml, "YAML"),
        (format!("{good},{}", bad_regex.display()), &bad_regex, "regex"),
        (format!("{good},{}", duplicate.display()), &duplicate, "id"),
        (same_tokens.display().to_string(), &same_tokens, "differ"),
    ];
    for (files, named, reason) in cases {
        let stderr = failed_start(dir.path(), &files).await;
        assert!(stderr.contains(&named.display().to_string()), "names the file: {stderr}");
        assert!(stderr.contains(reason), "says why ({reason}): {stderr}");
    }
}

/// Starts the binary with the registration files and returns its stderr; panics unless it
/// exits with a failure.
async fn failed_start(dir: &Path, files: &str) -> String {
    let data: PathBuf = dir.join("data");
    let mut command = tokio::process::Command::new(caduceus_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CADUCEUS__") {
            command.env_remove(key);
        }
    }
    command
        .env("CADUCEUS__STORAGE__DATA_DIR", &data)
        .env("CADUCEUS__SERVER__LISTEN", free_address().to_string())
        .env("CADUCEUS__APPSERVICES__REGISTRATION_FILES", files)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the server stops by itself")
        .unwrap();
    assert!(!output.status.success(), "the server started with invalid registrations");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
