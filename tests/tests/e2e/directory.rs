//! The professional directory: verification with the admin CLI, and
//! POST /_matrix/client/v3/user_directory/search served from the directory index.

use caduceus_tests::{encode_path_segment, Account, TestServer};
use serde_json::{json, Value};

const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

/// Verifies a user as a cardiologist in Utrecht at `level`, with extra admin flags.
async fn verify(server: &TestServer, account: &Account, level: &str, extra: &[&str]) {
    let mut args = vec![
        "set-verification",
        account.user_id.as_str(),
        "--level",
        level,
        "--profession",
        "physician",
        "--specialty",
        "cardiology",
        "--organisation",
        "UMC Utrecht",
        "--city",
        "Utrecht",
        "--postal-code",
        "3584",
        "--region",
        "Utrecht",
        "--country",
        "NL",
        "--lat",
        "52.09",
        "--lon",
        "5.18",
    ];
    args.extend_from_slice(extra);
    server.admin_ok(&args).await;
}

async fn set_display_name(server: &TestServer, account: &Account, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", account.user_path());
    server.put(&path, account.token(), &json!({ "displayname": name })).await.assert_status(200);
}

/// Searches and returns the user IDs found, in order.
async fn search(server: &TestServer, account: &Account, term: &str) -> Vec<String> {
    let response = server.post(SEARCH, account.token(), &json!({ "search_term": term })).await;
    response.assert_status(200).assert_spec(SEARCH);
    user_ids(&response.body)
}

fn user_ids(body: &Value) -> Vec<String> {
    let results = body["results"].as_array().expect("results is an array");
    results.iter().map(|result| result["user_id"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Retries a search until it returns `expected`, because index writes become searchable within
/// about a second.
async fn assert_search(server: &TestServer, account: &Account, term: &str, expected: &[&str]) {
    let mut found = Vec::new();
    for _ in 0..30 {
        found = search(server, account, term).await;
        if found == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("searching {term:?} found {found:?}, expected {expected:?}");
}

#[tokio::test]
async fn search_tolerates_typos_prefixes_and_languages() {
    let server = TestServer::start().await;
    let searcher = server.register("searcher").await;
    let jan = server.register("jan").await;
    verify(&server, &searcher, "medical", &["--unlisted"]).await;
    set_display_name(&server, &jan, "Jan de Vries").await;
    verify(&server, &jan, "medical", &[]).await;
    let expected = [jan.user_id.as_str()];

    assert_search(&server, &searcher, "kardiolog utrecht", &expected).await;
    assert_search(&server, &searcher, "jan", &expected).await;
    assert_search(&server, &searcher, "Kardiologie", &expected).await;
    assert_search(&server, &searcher, "de vri", &expected).await;
}

#[tokio::test]
async fn unlisted_users_are_absent() {
    let server = TestServer::start().await;
    let searcher = server.register("searcher").await;
    let listed = server.register("listed").await;
    let hidden = server.register("hidden").await;
    verify(&server, &searcher, "medical", &["--unlisted"]).await;
    verify(&server, &listed, "medical", &[]).await;
    verify(&server, &hidden, "medical", &["--unlisted"]).await;

    assert_search(&server, &searcher, "cardiology", &[listed.user_id.as_str()]).await;
}

#[tokio::test]
async fn pending_user_gets_forbidden() {
    let server = TestServer::start().await;
    let pending = server.register_pending("pending").await;

    let response = server.post(SEARCH, pending.token(), &json!({ "search_term": "a" })).await;
    response.assert_matrix_error(403, "M_FORBIDDEN");
    assert!(response.text.contains("verify your registration"), "body: {}", response.text);
}

#[tokio::test]
async fn identity_user_finds_only_shared_rooms() {
    let server = TestServer::start().await;
    let identity = server.register("identity").await;
    let colleague = server.register("colleague").await;
    let stranger = server.register("stranger").await;
    verify(&server, &identity, "identity", &["--unlisted"]).await;
    verify(&server, &colleague, "medical", &[]).await;
    verify(&server, &stranger, "medical", &[]).await;

    let created = server
        .post(
            "/_matrix/client/v3/createRoom",
            identity.token(),
            &json!({ "preset": "public_chat" }),
        )
        .await;
    created.assert_status(200);
    let room_id = created.str_field("room_id").to_owned();
    let join = format!("/_matrix/client/v3/join/{}", encode_path_segment(&room_id));
    server.post(&join, colleague.token(), &json!({})).await.assert_status(200);

    assert_search(&server, &identity, "cardiology", &[colleague.user_id.as_str()]).await;
}

#[tokio::test]
async fn limit_sets_limited() {
    let server = TestServer::start().await;
    let searcher = server.register("searcher").await;
    for name in ["anna", "bram", "cees"] {
        let account = server.register(name).await;
        verify(&server, &account, "medical", &[]).await;
    }
    verify(&server, &searcher, "medical", &["--unlisted"]).await;

    let response = server
        .post(SEARCH, searcher.token(), &json!({ "search_term": "cardiology", "limit": 2 }))
        .await;
    response.assert_status(200).assert_spec(SEARCH);
    assert_eq!(user_ids(&response.body).len(), 2, "body: {}", response.text);
    assert_eq!(response.body["limited"], json!(true), "body: {}", response.text);
}

#[tokio::test]
async fn deleted_index_is_rebuilt_at_start() {
    let mut server = TestServer::start().await;
    let searcher = server.register("searcher").await;
    let jan = server.register("jan").await;
    verify(&server, &searcher, "medical", &["--unlisted"]).await;
    verify(&server, &jan, "medical", &[]).await;
    assert_search(&server, &searcher, "cardiology", &[jan.user_id.as_str()]).await;

    server.kill_9();
    std::fs::remove_dir_all(server.data_dir().join("directory")).expect("the index folder exists");
    server.restart().await;

    assert_search(&server, &searcher, "cardiology", &[jan.user_id.as_str()]).await;
}

const API_KEY: &str = "hospital-system-key";

#[tokio::test]
async fn rest_api_with_key_returns_facets() {
    let server = TestServer::start_with_env(&[("CADUCEUS__DIRECTORY__API_KEYS", API_KEY)]).await;
    let anna = server.register("anna").await;
    let bram = server.register("bram").await;
    let hidden = server.register("hidden").await;
    verify(&server, &anna, "medical", &[]).await;
    verify(&server, &bram, "identity", &[]).await;
    verify(&server, &hidden, "medical", &["--unlisted"]).await;

    let path = "/_caduceus/directory/v1/search?q=cardiology&city=Utrecht&limit=1";
    let mut response = server.get(path, Some(API_KEY)).await;
    for _ in 0..30 {
        if response.body["total"] == json!(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        response = server.get(path, Some(API_KEY)).await;
    }
    response.assert_status(200);
    assert_eq!(response.body["total"], json!(2), "body: {}", response.text);
    assert_eq!(response.body["hits"].as_array().map(Vec::len), Some(1), "body: {}", response.text);
    assert!(response.body["next_cursor"].is_string(), "body: {}", response.text);
    let levels = &response.body["facets"]["level"];
    assert!(levels.to_string().contains("\"medical\""), "level facet: {levels}");
    assert!(levels.to_string().contains("\"identity\""), "level facet: {levels}");

    let cursor = response.body["next_cursor"].as_str().unwrap_or_default();
    let next = format!("{path}&cursor={}", encode_path_segment(cursor));
    let second = server.get(&next, Some(API_KEY)).await;
    second.assert_status(200);
    assert_eq!(second.body["hits"].as_array().map(Vec::len), Some(1), "body: {}", second.text);
    assert_ne!(second.body["hits"][0]["user_id"], response.body["hits"][0]["user_id"]);

    let user = format!("/_caduceus/directory/v1/users/{}", anna.user_path());
    let entry = server.get(&user, Some(API_KEY)).await;
    entry.assert_status(200);
    assert_eq!(entry.body["specialties"], json!(["cardiology"]), "body: {}", entry.text);
    let unlisted = format!("/_caduceus/directory/v1/users/{}", hidden.user_path());
    server.get(&unlisted, Some(API_KEY)).await.assert_matrix_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn rest_api_rejects_bad_credentials() {
    let server = TestServer::start_with_env(&[("CADUCEUS__DIRECTORY__API_KEYS", API_KEY)]).await;
    let medical = server.register("medical").await;
    let identity = server.register("identity").await;
    verify(&server, &medical, "medical", &[]).await;
    verify(&server, &identity, "identity", &[]).await;
    let path = "/_caduceus/directory/v1/search?q=cardiology";

    server.get(path, None).await.assert_matrix_error(401, "M_MISSING_TOKEN");
    server.get(path, Some("wrong-key")).await.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    server.get(path, identity.token()).await.assert_matrix_error(403, "M_FORBIDDEN");
    server.get(path, medical.token()).await.assert_status(200);
    let bad_level = "/_caduceus/directory/v1/search?level=expert";
    server.get(bad_level, Some(API_KEY)).await.assert_matrix_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn openapi_document_is_served() {
    let server = TestServer::start().await;

    let response = server.get("/_caduceus/directory/v1/openapi.json", None).await;
    response.assert_status(200);
    assert_eq!(response.body["openapi"], json!("3.1.0"), "body: {}", response.text);
    assert!(response.body["paths"]["/search"]["get"].is_object(), "body: {}", response.text);
    assert!(
        response.body["paths"]["/users/{userId}"]["get"].is_object(),
        "body: {}",
        response.text
    );
}

#[tokio::test]
async fn reindex_keeps_entries_searchable() {
    let server = TestServer::start().await;
    let searcher = server.register("searcher").await;
    let jan = server.register("jan").await;
    verify(&server, &searcher, "medical", &["--unlisted"]).await;
    verify(&server, &jan, "medical", &[]).await;

    let output = server.admin_ok(&["reindex"]).await;
    assert!(output.stdout.contains("reindexed 2 directory entries"), "stdout: {}", output.stdout);

    assert_search(&server, &searcher, "cardiology", &[jan.user_id.as_str()]).await;
}

#[tokio::test]
async fn set_verification_rejects_unknown_level() {
    let server = TestServer::start().await;
    let anna = server.register("anna").await;

    let output =
        server.admin(&["set-verification", anna.user_id.as_str(), "--level", "expert"]).await;
    assert!(!output.status.success(), "an unknown level was accepted");
    assert!(output.stderr.contains("invalid level"), "stderr: {}", output.stderr);
}

#[tokio::test]
async fn deactivated_user_leaves_directory() {
    let server = TestServer::start().await;
    let searcher = server.register("searcher").await;
    let leaving = server.register("leaving").await;
    verify(&server, &searcher, "medical", &["--unlisted"]).await;
    verify(&server, &leaving, "medical", &[]).await;
    assert_search(&server, &searcher, "cardiology", &[leaving.user_id.as_str()]).await;

    let path = "/_matrix/client/v3/account/deactivate";
    let session = server.uia_session(path, leaving.token(), &serde_json::json!({})).await;
    let auth = caduceus_tests::password_auth(&leaving.localpart, &leaving.password, Some(&session));
    server
        .post(path, leaving.token(), &serde_json::json!({ "auth": auth }))
        .await
        .assert_status(200);
    assert_search(&server, &searcher, "cardiology", &[]).await;
}
