//! Durability: everything the server acknowledged survives SIGKILL and a restart.

use caduceus_tests::{encode_path_segment, TestServer, PASSWORD};
use serde_json::json;

#[tokio::test]
async fn data_survives_kill_9() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let user = alice.user_path();
    let display_name_path = format!("/_matrix/client/v3/profile/{user}/displayname");
    let global_path =
        format!("/_matrix/client/v3/user/{user}/account_data/org.caduceus.test.settings");
    let room_path = format!(
        "/_matrix/client/v3/user/{user}/rooms/{}/account_data/org.caduceus.test.handover",
        encode_path_segment("!wardrounds:localhost")
    );
    let rule_path = "/_matrix/client/v3/pushrules/global/override/org.caduceus.test.urgent";
    let device_path =
        format!("/_matrix/client/v3/devices/{}", encode_path_segment(&alice.device_id));
    let filter_upload_path = format!("/_matrix/client/v3/user/{user}/filter");
    let settings = json!({ "theme": "dark" });
    let handover = json!({ "note": "Bed 4 needs a review" });
    let rule = json!({
        "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": "*URGENT*" }],
        "actions": ["notify"]
    });
    let filter = json!({ "room": { "timeline": { "limit": 7 } } });

    let token = alice.token();
    server
        .put(&display_name_path, token, &json!({ "displayname": "Dr. Alice Martin" }))
        .await
        .assert_status(200);
    server.put(&global_path, token, &settings).await.assert_status(200);
    server.put(&room_path, token, &handover).await.assert_status(200);
    server.put(rule_path, token, &rule).await.assert_status(200);
    server
        .put(&device_path, token, &json!({ "display_name": "Ward laptop" }))
        .await
        .assert_status(200);
    let upload = server.post(&filter_upload_path, token, &filter).await;
    upload.assert_status(200);
    let filter_path =
        format!("{filter_upload_path}/{}", encode_path_segment(upload.str_field("filter_id")));

    server.kill_9();
    server.restart().await;

    let whoami = server.get("/_matrix/client/v3/account/whoami", token).await;
    whoami.assert_status(200);
    assert_eq!(whoami.body["user_id"], json!(alice.user_id), "the old access token still works");
    assert_eq!(whoami.body["device_id"], json!(alice.device_id));
    let name = server.get(&display_name_path, token).await;
    assert_eq!(name.body, json!({ "displayname": "Dr. Alice Martin" }));
    assert_eq!(server.get(&global_path, token).await.body, settings);
    assert_eq!(server.get(&room_path, token).await.body, handover);
    let stored_rule = server.get(rule_path, token).await;
    stored_rule.assert_status(200);
    assert_eq!(stored_rule.body["conditions"], rule["conditions"]);
    let device = server.get(&device_path, token).await;
    assert_eq!(device.body["display_name"], json!("Ward laptop"));
    let stored_filter = server.get(&filter_path, token).await;
    stored_filter.assert_status(200);
    assert_eq!(stored_filter.body["room"]["timeline"]["limit"], json!(7));

    server.login("alice", PASSWORD).await;
}

#[tokio::test]
async fn revoked_session_stays_revoked() {
    let mut server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", PASSWORD).await;
    server.post("/_matrix/client/v3/logout", phone.token(), &json!({})).await.assert_status(200);

    server.kill_9();
    server.restart().await;

    let revoked = server.get("/_matrix/client/v3/account/whoami", phone.token()).await;
    revoked.assert_matrix_error(401, "M_UNKNOWN_TOKEN");
    server.get("/_matrix/client/v3/account/whoami", alice.token()).await.assert_status(200);
}

#[tokio::test]
async fn used_token_stays_used() {
    let mut server = TestServer::start().await;
    let token = server.create_registration_token(Some(1)).await;
    server.register_with_token("alice", PASSWORD, &token).await.assert_status(200);

    server.kill_9();
    server.restart().await;

    let response = server.register_with_token("bob", PASSWORD, &token).await;
    response.assert_status(401);
    assert_eq!(response.errcode(), Some("M_FORBIDDEN"), "body: {}", response.text);
    assert!(server.username_available("bob").await, "a used-up token created bob");
    assert!(!server.username_available("alice").await, "alice is gone after the restart");
}
