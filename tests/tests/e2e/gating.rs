//! Gating by verification level: who may create rooms, invite, be invited, join and look
//! people up. Also the per-user invite permission, the privileged admin API under
//! /_caduceus/admin/v1, and revocation.

use caduceus_tests::{encode_path_segment, Account, ApiResponse, TestServer, PASSWORD};
use serde_json::{json, Value};

const CREATE_ROOM: &str = "/_matrix/client/v3/createRoom";
const SEARCH: &str = "/_matrix/client/v3/user_directory/search";
const SUPPORT: &str = "@support:localhost";
const INVITE_PERMISSION: &str = "org.caduceus.invite_permission";

async fn start_with_support() -> (TestServer, Account) {
    let server =
        TestServer::start_with_env(&[("CADUCEUS__VERIFICATION__SUPPORT_USERS", SUPPORT)]).await;
    let support = server.register_pending("support").await;
    (server, support)
}

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode_path_segment(room_id))
}

fn verification_path(user_id: &str) -> String {
    format!("/_caduceus/admin/v1/users/{}/verification", encode_path_segment(user_id))
}

async fn create_room(server: &TestServer, creator: &Account, body: Value) -> String {
    let response = server.post(CREATE_ROOM, creator.token(), &body).await;
    response.assert_status(200);
    response.str_field("room_id").to_owned()
}

async fn invite(
    server: &TestServer,
    inviter: &Account,
    room_id: &str,
    invitee: &str,
) -> ApiResponse {
    let body = json!({ "user_id": invitee });
    server.post(&room_path(room_id, "invite"), inviter.token(), &body).await
}

async fn join(server: &TestServer, account: &Account, room_id: &str) -> ApiResponse {
    let path = format!("/_matrix/client/v3/join/{}", encode_path_segment(room_id));
    server.post(&path, account.token(), &json!({})).await
}

/// Asserts a 403 `M_FORBIDDEN` whose message contains `words`.
fn assert_refused(response: &ApiResponse, words: &str) {
    response.assert_matrix_error(403, "M_FORBIDDEN");
    let message = response.body["error"].as_str().unwrap_or_default();
    assert!(message.contains(words), "expected {words:?} in the message, got {message:?}");
}

async fn membership(server: &TestServer, viewer: &Account, room_id: &str, user_id: &str) -> String {
    let path = room_path(room_id, &format!("state/m.room.member/{}", encode_path_segment(user_id)));
    let response = server.get(&path, viewer.token()).await;
    response.assert_status(200);
    response.str_field("membership").to_owned()
}

async fn admin_account(server: &TestServer) -> Account {
    server.admin_ok(&["create-user", "root", "--password", PASSWORD, "--admin"]).await;
    server.login("root", PASSWORD).await
}

#[tokio::test]
async fn pending_user_cannot_make_contact() {
    let (server, support) = start_with_support().await;
    let pending = server.register_pending("pending").await;
    let colleague = server.register("colleague").await;

    let alone = server.post(CREATE_ROOM, pending.token(), &json!({})).await;
    assert_refused(&alone, "You can create rooms once your identity is verified");
    alone.assert_spec(CREATE_ROOM);
    let with_invite = json!({ "invite": [colleague.user_id] });
    let refused = server.post(CREATE_ROOM, pending.token(), &with_invite).await;
    assert_refused(&refused, "registration number to the verification bot");
    let direct = json!({ "invite": [colleague.user_id], "is_direct": true });
    assert_refused(&server.post(CREATE_ROOM, pending.token(), &direct).await, "create rooms");

    // A room with only support in it is allowed, so pending users can ask for help.
    let help =
        create_room(&server, &pending, json!({ "invite": [SUPPORT], "is_direct": true })).await;
    assert_eq!(membership(&server, &pending, &help, SUPPORT).await, "invite");

    // Inviting a colleague into that room is refused, through /invite and through /state.
    let invited = invite(&server, &pending, &help, &colleague.user_id).await;
    assert_refused(&invited, "You can invite colleagues once your identity is verified");
    invited.assert_spec("/_matrix/client/v3/rooms/{roomId}/invite");
    let state_path = room_path(
        &help,
        &format!("state/m.room.member/{}", encode_path_segment(&colleague.user_id)),
    );
    let by_state =
        server.put(&state_path, pending.token(), &json!({ "membership": "invite" })).await;
    assert_refused(&by_state, "You can invite colleagues");

    // A verified colleague cannot invite the pending user.
    let ward = create_room(&server, &colleague, json!({ "preset": "public_chat" })).await;
    let to_pending = invite(&server, &colleague, &ward, &pending.user_id).await;
    assert_refused(&to_pending, "cannot be invited yet because their identity is not verified");

    // Public rooms are closed to pending users; rooms support invited them to are open.
    let joined = join(&server, &pending, &ward).await;
    assert_refused(&joined, "You can join rooms once your identity is verified");
    joined.assert_spec("/_matrix/client/v3/join/{roomIdOrAlias}");
    let support_room = create_room(&server, &support, json!({ "invite": [pending.user_id] })).await;
    join(&server, &pending, &support_room).await.assert_status(200);

    // Looking up a colleague is refused; their own profile and support's are not.
    let profile = format!("/_matrix/client/v3/profile/{}", colleague.user_path());
    let lookup = server.get(&profile, pending.token()).await;
    assert_refused(&lookup, "You can look up colleagues once your identity is verified");
    lookup.assert_spec("/_matrix/client/v3/profile/{userId}");
    let field = format!("{profile}/displayname");
    assert_refused(&server.get(&field, pending.token()).await, "look up colleagues");
    let own = format!("/_matrix/client/v3/profile/{}", pending.user_path());
    server.get(&own, pending.token()).await.assert_status(200);
    let support_profile = format!("/_matrix/client/v3/profile/{}", support.user_path());
    server.get(&support_profile, pending.token()).await.assert_status(200);
    assert_refused(&server.get(&profile, None).await, "Log in");

    // To-device messages reach support and themselves, but not strangers.
    let to_device = |target: &str| json!({ "messages": { target: { "*": { "body": "hello" } } } });
    let send_path = |txn: &str| format!("/_matrix/client/v3/sendToDevice/m.test/{txn}");
    let stranger =
        server.put(&send_path("1"), pending.token(), &to_device(&colleague.user_id)).await;
    assert_refused(&stranger, "You can contact colleagues outside your rooms");
    let to_support = server.put(&send_path("2"), pending.token(), &to_device(SUPPORT)).await;
    to_support.assert_status(200);

    let search = server.post(SEARCH, pending.token(), &json!({ "search_term": "colleague" })).await;
    assert_refused(&search, "verify your registration");
}

#[tokio::test]
async fn identity_user_invites_verified_only() {
    let server = TestServer::start().await;
    let anna = server.register("anna").await;
    let bram = server.register("bram").await;
    let pending = server.register_pending("cees").await;

    let room_id = create_room(&server, &anna, json!({})).await;
    invite(&server, &anna, &room_id, &bram.user_id).await.assert_status(200);
    let refused = invite(&server, &anna, &room_id, &pending.user_id).await;
    assert_refused(&refused, "Invitations are only possible between verified professionals");

    // A refused createRoom creates nothing.
    let rooms_before = server.get("/_matrix/client/v3/joined_rooms", anna.token()).await;
    let direct = json!({ "invite": [bram.user_id, pending.user_id], "is_direct": true });
    let response = server.post(CREATE_ROOM, anna.token(), &direct).await;
    assert_refused(&response, "cannot be invited yet");
    let rooms_after = server.get("/_matrix/client/v3/joined_rooms", anna.token()).await;
    assert_eq!(rooms_before.body, rooms_after.body, "a refused createRoom left a room behind");

    create_room(&server, &anna, json!({ "invite": [bram.user_id], "is_direct": true })).await;
}

#[tokio::test]
async fn invite_permission_setting() {
    let server = TestServer::start().await;
    let anna = server.register("anna").await;
    let bram = server.register("bram").await;
    let dirk = server.register("dirk").await;
    let setting =
        format!("/_matrix/client/v3/user/{}/account_data/{INVITE_PERMISSION}", bram.user_path());
    let anna_room = create_room(&server, &anna, json!({})).await;
    let dirk_room = create_room(&server, &dirk, json!({})).await;

    let none = json!({ "allow": "none", "exceptions": [dirk.user_id] });
    server.put(&setting, bram.token(), &none).await.assert_status(200);
    let refused = invite(&server, &anna, &anna_room, &bram.user_id).await;
    assert_refused(&refused, "This person only accepts invitations from");
    let direct = json!({ "invite": [bram.user_id], "is_direct": true });
    assert_refused(&server.post(CREATE_ROOM, anna.token(), &direct).await, "only accepts");
    invite(&server, &dirk, &dirk_room, &bram.user_id).await.assert_status(200);

    server.put(&setting, bram.token(), &json!({ "allow": "contacts" })).await.assert_status(200);
    let refused = invite(&server, &anna, &anna_room, &bram.user_id).await;
    assert_refused(&refused, "people they already share a room with");
    // Once Anna and Bram share a room, Anna is a contact.
    join(&server, &bram, &dirk_room).await.assert_status(200);
    invite(&server, &dirk, &dirk_room, &anna.user_id).await.assert_status(200);
    join(&server, &anna, &dirk_room).await.assert_status(200);
    invite(&server, &anna, &anna_room, &bram.user_id).await.assert_status(200);

    // Invalid settings are rejected and leave the stored one in place.
    let cases = [
        (json!({ "allow": "friends" }), "M_INVALID_PARAM"),
        (json!({ "allow": 1 }), "M_BAD_JSON"),
        (json!({ "exceptions": [] }), "M_BAD_JSON"),
        (json!({ "allow": "none", "exceptions": "@anna:localhost" }), "M_BAD_JSON"),
        (json!({ "allow": "none", "exceptions": ["anna"] }), "M_INVALID_PARAM"),
    ];
    for (content, errcode) in cases {
        let response = server.put(&setting, bram.token(), &content).await;
        response.assert_matrix_error(400, errcode);
        response.assert_spec("/_matrix/client/v3/user/{userId}/account_data/{type}");
    }
    let stored = server.get(&setting, bram.token()).await;
    assert_eq!(stored.body, json!({ "allow": "contacts" }));
}

#[tokio::test]
async fn admin_api_lists_users_with_cursor() {
    let server = TestServer::start().await;
    let admin = admin_account(&server).await;
    let mut expected = vec![admin.user_id.clone()];
    for name in ["anna", "bram", "cees", "dirk"] {
        expected.push(server.register(name).await.user_id);
    }

    let mut seen = Vec::new();
    let mut path = "/_caduceus/admin/v1/users?limit=2".to_owned();
    let mut last_cursor = String::new();
    loop {
        let page = server.get(&path, admin.token()).await;
        page.assert_status(200);
        let users = page.body["users"].as_array().expect("users is a list");
        assert!(users.len() <= 2, "page larger than the limit: {}", page.text);
        for user in users {
            seen.push(user["user_id"].as_str().unwrap().to_owned());
            assert!(user["created_ts"].is_u64(), "created_ts missing: {user}");
            assert_eq!(user["deactivated"], json!(false));
            assert_eq!(user["emails"], json!([]));
        }
        match page.body["next_from"].as_str() {
            Some(next) => {
                last_cursor = next.to_owned();
                path = format!("/_caduceus/admin/v1/users?limit=2&from={next}");
            }
            None => break,
        }
    }
    assert_eq!(seen, expected, "users in creation order");

    // Polling with the last cursor returns only accounts created after it.
    let eva = server.register_pending("eva").await;
    let poll =
        server.get(&format!("/_caduceus/admin/v1/users?from={last_cursor}"), admin.token()).await;
    poll.assert_status(200);
    let users = poll.body["users"].as_array().unwrap();
    let polled: Vec<&str> = users.iter().map(|user| user["user_id"].as_str().unwrap()).collect();
    assert_eq!(polled, vec![expected[4].as_str(), eva.user_id.as_str()]);
    assert_eq!(users[0]["level"], json!("identity"));
    assert_eq!(users[1]["level"], json!("pending"));
    assert!(poll.body.get("next_from").is_none(), "next_from at the end: {}", poll.text);

    for query in ["limit=0", "limit=1001", "limit=x", "from=%%%"] {
        let response =
            server.get(&format!("/_caduceus/admin/v1/users?{query}"), admin.token()).await;
        response.assert_matrix_error(400, "M_INVALID_PARAM");
    }
}

#[tokio::test]
async fn admin_api_rejects_bad_credentials() {
    let server = TestServer::start().await;
    let user = server.register("anna").await;
    let paths = ["/_caduceus/admin/v1/users".to_owned(), verification_path(&user.user_id)];
    for path in &paths {
        server.get(path, None).await.assert_matrix_error(401, "M_MISSING_TOKEN");
        server.get(path, Some("no-such-token")).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
        server.get(path, user.token()).await.assert_matrix_error(403, "M_FORBIDDEN");
    }
    let body = json!({ "level": "medical", "evidence": { "source": "officer" } });
    let path = verification_path(&user.user_id);
    server.put(&path, user.token(), &body).await.assert_matrix_error(403, "M_FORBIDDEN");
    server.delete(&path, None, None).await.assert_matrix_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn admin_api_sets_and_reads_verification() {
    let server = TestServer::start().await;
    let admin = admin_account(&server).await;
    let anna = server.register_pending("anna").await;
    let path = verification_path(&anna.user_id);

    let initial = server.get(&path, admin.token()).await;
    initial.assert_status(200);
    assert_eq!(initial.body["level"], json!("pending"));
    assert_eq!(initial.body["evidence"], Value::Null);

    let body = json!({
        "level": "medical",
        "evidence": {
            "source": "register",
            "register": "BIG",
            "registration_number": "19012345601",
            "verified_at": 1_700_000_000_000u64,
            "next_check": 1_800_000_000_000u64,
            "note": "checked by phone",
        },
        "professions": ["physician"],
        "specialties": ["cardiology"],
        "organisations": ["UMC Utrecht"],
        "areas": [{ "city": "Utrecht", "country": "NL", "coordinates": { "lat": 52.09, "lon": 5.18 } }],
    });
    let set = server.put(&path, admin.token(), &body).await;
    set.assert_status(200);
    let expected = json!({
        "user_id": anna.user_id,
        "level": "medical",
        "evidence": body["evidence"],
        "professions": ["physician"],
        "specialties": ["cardiology"],
        "organisations": ["UMC Utrecht"],
        "areas": body["areas"],
        "listed": true,
    });
    assert_eq!(set.body, expected);
    assert_eq!(server.get(&path, admin.token()).await.body, expected);

    let badge =
        format!("/_matrix/client/v3/profile/{}/org.caduceus.verification", anna.user_path());
    let field = server.get(&badge, anna.token()).await;
    assert_eq!(field.body["org.caduceus.verification"], json!({ "level": "medical" }));

    let unknown = verification_path("@nobody:localhost");
    server.get(&unknown, admin.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
    server.put(&unknown, admin.token(), &body).await.assert_matrix_error(404, "M_NOT_FOUND");
    server.delete(&unknown, admin.token(), None).await.assert_matrix_error(404, "M_NOT_FOUND");

    let bad_bodies = [
        (json!({ "evidence": { "source": "officer" } }), "M_BAD_JSON"),
        (json!({ "level": "medical" }), "M_BAD_JSON"),
        (json!({ "level": "medical", "evidence": { "source": 5 } }), "M_BAD_JSON"),
        (json!({ "level": "pending", "evidence": { "source": "officer" } }), "M_INVALID_PARAM"),
        (json!({ "level": "pending" }), "M_INVALID_PARAM"),
        (json!({ "level": "medical", "evidence": { "source": "guess" } }), "M_INVALID_PARAM"),
        (json!({ "level": "medical", "evidence": { "source": "register" } }), "M_INVALID_PARAM"),
        (
            json!({ "level": "identity", "evidence": { "source": "officer" },
                    "areas": [{ "coordinates": { "lat": 100.0, "lon": 0.0 } }] }),
            "M_INVALID_PARAM",
        ),
    ];
    for (bad, errcode) in bad_bodies {
        let response = server.put(&path, admin.token(), &bad).await;
        response.assert_matrix_error(400, errcode);
        if bad["level"] == "pending" {
            assert!(response.str_field("error").contains("DELETE"), "{}", response.body);
        }
    }
    let not_json =
        server.request_bytes(reqwest::Method::PUT, &path, admin.token(), b"{level".to_vec()).await;
    not_json.assert_matrix_error(400, "M_NOT_JSON");
    assert_eq!(server.get(&path, admin.token()).await.body, expected, "a bad body changed it");

    let audit = server.admin_ok(&["audit-log"]).await;
    let line = audit.stdout.lines().find(|line| line.contains("verification_changed"));
    let line = line.expect("the change is in the audit log");
    assert!(line.contains(&admin.user_id), "the actor is missing: {line}");
    assert!(!line.contains("19012345601"), "the registration number is logged: {line}");
}

#[tokio::test]
async fn cli_sets_evidence() {
    let server = TestServer::start().await;
    let admin = admin_account(&server).await;
    let anna = server.register_pending("anna").await;
    let args = [
        "set-verification",
        anna.user_id.as_str(),
        "--level",
        "medical",
        "--source",
        "register",
        "--register",
        "BIG",
        "--registration-number",
        "19012345601",
        "--next-check",
        "1800000000000",
    ];
    let output = server.admin_ok(&args).await;
    assert!(output.stdout.contains("BIG 19012345601"), "output: {}", output.stdout);

    let view = server.get(&verification_path(&anna.user_id), admin.token()).await;
    assert_eq!(view.body["evidence"]["source"], json!("register"));
    assert_eq!(view.body["evidence"]["registration_number"], json!("19012345601"));
    assert_eq!(view.body["evidence"]["next_check"], json!(1_800_000_000_000u64));
    assert!(view.body["evidence"]["verified_at"].is_u64());
}

#[tokio::test]
async fn revocation_takes_effect_at_once() {
    let server = TestServer::start().await;
    let admin = admin_account(&server).await;
    let anna = server.register("anna").await;
    let bram = server.register("bram").await;
    let searcher = server.register("searcher").await;
    let medical = json!({
        "level": "medical",
        "evidence": { "source": "register", "register": "BIG", "registration_number": "1234" },
        "specialties": ["cardiology"],
    });
    let path = verification_path(&anna.user_id);
    server.put(&path, admin.token(), &medical).await.assert_status(200);
    server.set_verification(&searcher.user_id, "medical").await;

    let room_id = create_room(&server, &anna, json!({})).await;
    invite(&server, &anna, &room_id, &bram.user_id).await.assert_status(200);
    let found =
        server.post(SEARCH, searcher.token(), &json!({ "search_term": "cardiology" })).await;
    assert_eq!(found.body["results"][0]["user_id"], json!(anna.user_id), "{}", found.text);

    let revoked =
        server.delete(&path, admin.token(), Some(&json!({ "reason": "register expired" }))).await;
    revoked.assert_status(200);
    assert_eq!(revoked.body["level"], json!("pending"));
    assert_eq!(revoked.body["evidence"], Value::Null);
    assert_eq!(revoked.body["specialties"], json!([]));
    assert_eq!(revoked.body["listed"], json!(false));

    // Each effect is visible to the very next request.
    assert_eq!(membership(&server, &anna, &room_id, &bram.user_id).await, "leave");
    let search =
        server.post(SEARCH, searcher.token(), &json!({ "search_term": "cardiology" })).await;
    assert_eq!(search.body["results"], json!([]), "still listed: {}", search.text);
    let badge =
        format!("/_matrix/client/v3/profile/{}/org.caduceus.verification", anna.user_path());
    server.get(&badge, anna.token()).await.assert_matrix_error(404, "M_NOT_FOUND");
    let again = invite(&server, &anna, &room_id, &bram.user_id).await;
    assert_refused(&again, "You can invite colleagues");

    let audit = server.admin_ok(&["audit-log"]).await;
    assert!(audit.stdout.contains("register expired"), "reason not audited: {}", audit.stdout);
}

#[tokio::test]
async fn key_queries_follow_the_lookup_rule() {
    let server = TestServer::start().await;
    let colleague = server.register("colleague").await;
    let client = server.sdk_client().await;
    client.matrix_auth().login_username("colleague", PASSWORD).send().await.unwrap();
    // The first sync uploads the device keys and one-time keys.
    client.sync_once(matrix_sdk::config::SyncSettings::default()).await.unwrap();
    let pending = server.register_pending("pending").await;
    let nurse = server.register("nurse").await;

    let keys_query = "/_matrix/client/v3/keys/query";
    let query = json!({ "device_keys": { colleague.user_id.as_str(): [] } });
    let seen = server.post(keys_query, nurse.token(), &query).await;
    seen.assert_status(200).assert_spec(keys_query);
    let devices = seen.body["device_keys"][&colleague.user_id].as_object().cloned();
    let device_id = devices
        .and_then(|devices| devices.keys().next().cloned())
        .unwrap_or_else(|| panic!("a verified user sees the colleague's device: {}", seen.body));

    // A pending user gets the response for a user without devices.
    let hidden = server.post(keys_query, pending.token(), &query).await;
    hidden.assert_status(200).assert_spec(keys_query);
    assert_eq!(hidden.body["device_keys"][&colleague.user_id], json!({}), "{}", hidden.body);

    let keys_claim = "/_matrix/client/v3/keys/claim";
    let claim = json!({
        "one_time_keys": { colleague.user_id.as_str(): { device_id.as_str(): "signed_curve25519" } }
    });
    let rejected = server.post(keys_claim, pending.token(), &claim).await;
    rejected.assert_status(200).assert_spec(keys_claim);
    let claimed = &rejected.body["one_time_keys"][&colleague.user_id];
    assert!(claimed.as_object().is_none_or(|keys| keys.is_empty()), "{}", rejected.body);
    let granted = server.post(keys_claim, nurse.token(), &claim).await;
    granted.assert_status(200);
    let keys = granted.body["one_time_keys"][&colleague.user_id][&device_id].as_object();
    assert!(keys.is_some_and(|keys| !keys.is_empty()), "{}", granted.body);
}
