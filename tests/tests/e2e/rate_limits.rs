//! Rate limits from `[rate_limits]`: small configured buckets return 429 `M_LIMIT_EXCEEDED`
//! with `retry_after_ms` and `Retry-After`, and requests pass again once the delay is over.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use caduceus_tests::{encode_path_segment, ApiResponse, TestServer, PASSWORD};
use serde_json::{json, Value};

/// One token every five seconds: slow enough that a busy test machine cannot refill a bucket
/// between two requests, fast enough to wait for.
const RATE: &str = "0.2";

/// Checks a rate-limit rejection and returns its `retry_after_ms`. `spec_path` names the
/// endpoint when the spec documents its 429 response. The spec lists none for `/send`, `/state`
/// and `/redact`, but allows `M_LIMIT_EXCEEDED` on any endpoint in its rate-limiting section.
fn assert_limited(response: &ApiResponse, spec_path: Option<&str>) -> Duration {
    response.assert_matrix_error(429, "M_LIMIT_EXCEEDED");
    if let Some(spec_path) = spec_path {
        response.assert_spec(spec_path);
    }
    let retry_ms = response.body["retry_after_ms"].as_u64().unwrap_or_else(|| {
        panic!("{} {} has no retry_after_ms: {}", response.method, response.path, response.text)
    });
    assert!(retry_ms > 0, "the delay is positive: {retry_ms}");
    assert!(retry_ms <= 5000, "one token takes at most 5 s at 0.2/s: {retry_ms}");
    let header = response.retry_after.as_deref().expect("a 429 carries Retry-After");
    let seconds: u64 = header.parse().expect("Retry-After is whole seconds");
    assert_eq!(seconds, retry_ms.div_ceil(1000), "Retry-After rounds retry_after_ms up");
    Duration::from_millis(retry_ms)
}

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode_path_segment(room_id))
}

async fn create_public_room(server: &TestServer, token: Option<&str>) -> String {
    let created = server
        .post("/_matrix/client/v3/createRoom", token, &json!({ "preset": "public_chat" }))
        .await;
    created.assert_status(200);
    created.str_field("room_id").to_owned()
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

#[tokio::test]
async fn messages_limited_per_user() {
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__RATE_LIMITS__MESSAGES__PER_SECOND", RATE),
        ("CADUCEUS__RATE_LIMITS__MESSAGES__BURST", "3"),
    ])
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_public_room(&server, alice.token()).await;
    server.post(&room_path(&room_id, "join"), bob.token(), &json!({})).await.assert_status(200);

    // A message, a state event and a redaction use up the burst of three.
    let first = server
        .put(&room_path(&room_id, "send/m.room.message/t1"), alice.token(), &text("one"))
        .await;
    first.assert_status(200);
    let first_id = first.str_field("event_id").to_owned();
    server
        .put(
            &room_path(&room_id, "state/m.room.topic/"),
            alice.token(),
            &json!({ "topic": "ward 4" }),
        )
        .await
        .assert_status(200);
    let redact = format!("redact/{}/r1", encode_path_segment(&first_id));
    server.put(&room_path(&room_id, &redact), alice.token(), &json!({})).await.assert_status(200);

    let limited = server
        .put(&room_path(&room_id, "send/m.room.message/t2"), alice.token(), &text("two"))
        .await;
    let wait = assert_limited(&limited, None);
    let state = server
        .put(&room_path(&room_id, "state/m.room.topic/"), alice.token(), &json!({ "topic": "x" }))
        .await;
    assert_limited(&state, None);

    // Each user has their own bucket.
    server
        .put(&room_path(&room_id, "send/m.room.message/b1"), bob.token(), &text("from bob"))
        .await
        .assert_status(200);

    // The rejected message was not stored.
    let page = server.get(&room_path(&room_id, "messages?dir=b&limit=50"), alice.token()).await;
    page.assert_status(200);
    let bodies: Vec<&str> = page.body["chunk"]
        .as_array()
        .expect("chunk is an array")
        .iter()
        .filter_map(|event| event["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["from bob"], "only bob's message is in the timeline");

    tokio::time::sleep(wait).await;
    server
        .put(&room_path(&room_id, "send/m.room.message/t2"), alice.token(), &text("two"))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn joins_invites_and_knocks_limited() {
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__RATE_LIMITS__MEMBERSHIP__PER_SECOND", RATE),
        ("CADUCEUS__RATE_LIMITS__MEMBERSHIP__BURST", "2"),
    ])
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let rooms = [
        create_public_room(&server, alice.token()).await,
        create_public_room(&server, alice.token()).await,
        create_public_room(&server, alice.token()).await,
    ];

    server.post(&room_path(&rooms[0], "join"), bob.token(), &json!({})).await.assert_status(200);
    let join_path = format!("/_matrix/client/v3/join/{}", encode_path_segment(&rooms[1]));
    server.post(&join_path, bob.token(), &json!({})).await.assert_status(200);

    let limited = server.post(&room_path(&rooms[2], "join"), bob.token(), &json!({})).await;
    let wait = assert_limited(&limited, Some("/_matrix/client/v3/rooms/{roomId}/join"));
    let knock = format!("/_matrix/client/v3/knock/{}", encode_path_segment(&rooms[2]));
    let knocked = server.post(&knock, bob.token(), &json!({})).await;
    assert_limited(&knocked, Some("/_matrix/client/v3/knock/{roomIdOrAlias}"));

    // The rejected join changed nothing.
    let members = server.get(&room_path(&rooms[2], "joined_members"), alice.token()).await;
    members.assert_status(200);
    let joined = members.body["joined"].as_object().expect("joined is an object");
    assert!(!joined.contains_key(&bob.user_id), "bob did not join: {}", members.text);

    // Invites count towards the inviter's bucket, not the invitee's.
    for (room_id, invitee) in [(&rooms[0], &carol), (&rooms[1], &carol)] {
        server
            .post(
                &room_path(room_id, "invite"),
                alice.token(),
                &json!({ "user_id": invitee.user_id }),
            )
            .await
            .assert_status(200);
    }
    let invite = server
        .post(&room_path(&rooms[2], "invite"), alice.token(), &json!({ "user_id": carol.user_id }))
        .await;
    assert_limited(&invite, Some("/_matrix/client/v3/rooms/{roomId}/invite"));
    server.post(&room_path(&rooms[0], "join"), carol.token(), &json!({})).await.assert_status(200);

    tokio::time::sleep(wait).await;
    server.post(&room_path(&rooms[2], "join"), bob.token(), &json!({})).await.assert_status(200);
}

#[tokio::test]
async fn registration_limited_per_address() {
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__RATE_LIMITS__REGISTRATION__PER_SECOND", RATE),
        ("CADUCEUS__RATE_LIMITS__REGISTRATION__BURST", "2"),
    ])
    .await;
    let token = server.create_registration_token(None).await;

    // One registration takes two requests: the challenge, then the token stage.
    server.register_with_token("alice", PASSWORD, &token).await.assert_status(200);

    let body = json!({ "username": "bob", "password": PASSWORD });
    let limited = server.post("/_matrix/client/v3/register", None, &body).await;
    let wait = assert_limited(&limited, Some("/_matrix/client/v3/register"));
    assert!(server.username_available("bob").await, "the rejected request created nothing");

    // After the delay one token is back: the challenge passes, the token stage waits again.
    tokio::time::sleep(wait).await;
    let session = server.uia_session("/_matrix/client/v3/register", None, &body).await;
    let mut body = body;
    body["auth"] =
        json!({ "type": "m.login.registration_token", "token": token, "session": session });
    let limited = server.post("/_matrix/client/v3/register", None, &body).await;
    let wait = assert_limited(&limited, Some("/_matrix/client/v3/register"));
    tokio::time::sleep(wait).await;
    server.post("/_matrix/client/v3/register", None, &body).await.assert_status(200);
}

/// The second loopback address, so a test can send from two addresses.
const OTHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Sends `POST /login` with alice's password from the loopback address `source`.
async fn login_from(server: &TestServer, source: IpAddr, user: &str) -> ApiResponse {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(source)
        .build()
        .expect("failed to build an HTTP client");
    let path = "/_matrix/client/v3/login";
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": PASSWORD,
    });
    let response = client
        .post(format!("{}{path}", server.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("login from {source} failed: {error}"));
    let status = response.status().as_u16();
    let header = |name| {
        response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let retry_after = header(reqwest::header::RETRY_AFTER);
    let text = response.text().await.expect("the login response has a body");
    ApiResponse {
        method: reqwest::Method::POST,
        path: path.to_owned(),
        status,
        content_type,
        allow: None,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

#[tokio::test]
async fn login_limited_per_address() {
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__RATE_LIMITS__LOGIN_PER_ADDRESS__PER_SECOND", RATE),
        ("CADUCEUS__RATE_LIMITS__LOGIN_PER_ADDRESS__BURST", "2"),
    ])
    .await;
    server.register("alice").await;
    server.register("bob").await;

    server.login("alice", PASSWORD).await;
    server.login("bob", PASSWORD).await;
    let limited = server.login_request("alice", PASSWORD).await;
    let wait = assert_limited(&limited, Some("/_matrix/client/v3/login"));

    // Another source address has its own bucket.
    login_from(&server, OTHER_ADDRESS, "alice").await.assert_status(200);

    tokio::time::sleep(wait).await;
    server.login("alice", PASSWORD).await;
}

#[tokio::test]
async fn login_limited_per_account() {
    let server = TestServer::start_with_env(&[
        ("CADUCEUS__RATE_LIMITS__LOGIN_PER_USER__PER_SECOND", RATE),
        ("CADUCEUS__RATE_LIMITS__LOGIN_PER_USER__BURST", "2"),
    ])
    .await;
    server.register("alice").await;
    server.register("bob").await;

    server.login("alice", PASSWORD).await;
    server.login("alice", PASSWORD).await;
    // A third login to alice is limited even from another address; bob is not.
    let limited = login_from(&server, OTHER_ADDRESS, "alice").await;
    let wait = assert_limited(&limited, Some("/_matrix/client/v3/login"));
    server.login_request("alice", PASSWORD).await.assert_matrix_error(429, "M_LIMIT_EXCEEDED");
    server.login("bob", PASSWORD).await;

    tokio::time::sleep(wait).await;
    server.login("alice", PASSWORD).await;
}
