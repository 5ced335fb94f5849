//! Push rules: the server-default ruleset and user-defined rules.

use caduceus_tests::{encode_path_segment, Account, ApiResponse, TestServer, PASSWORD};
use matrix_sdk::ruma::api::client::push::get_pushrules_all;
use serde_json::{json, Value};

const RULESET: &str = "/_matrix/client/v3/pushrules/";
const GLOBAL_RULESET: &str = "/_matrix/client/v3/pushrules/global/";
const RULE: &str = "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}";
const RULE_ENABLED: &str = "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled";
const RULE_ACTIONS: &str = "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions";

fn rule_path(kind: &str, rule_id: &str) -> String {
    format!("/_matrix/client/v3/pushrules/global/{kind}/{}", encode_path_segment(rule_id))
}

async fn ruleset(server: &TestServer, account: &Account) -> Value {
    let response = server.get(RULESET, account.token()).await;
    response.assert_status(200).assert_spec(RULESET);
    response.body
}

/// Returns the rule IDs of one kind in the global ruleset, in priority order.
fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset["global"][kind]
        .as_array()
        .unwrap_or_else(|| panic!("the ruleset has no global.{kind} array: {ruleset}"))
        .iter()
        .map(|rule| rule["rule_id"].as_str().expect("rule_id is a string").to_owned())
        .collect()
}

fn find_rule<'a>(ruleset: &'a Value, kind: &str, rule_id: &str) -> &'a Value {
    ruleset["global"][kind]
        .as_array()
        .and_then(|rules| rules.iter().find(|rule| rule["rule_id"] == json!(rule_id)))
        .unwrap_or_else(|| panic!("global.{kind} has no rule {rule_id}: {ruleset}"))
}

#[tokio::test]
async fn default_ruleset_has_spec_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let ruleset = ruleset(&server, &alice).await;

    // The server-default rules of the stored spec's push rules module. Matrix v1.17 removed the
    // legacy mention rules (.m.rule.contains_display_name, .m.rule.roomnotif and the content
    // rule .m.rule.contains_user_name), so they are not required here.
    let expected = [
        (
            "override",
            &[
                ".m.rule.master",
                ".m.rule.suppress_notices",
                ".m.rule.invite_for_me",
                ".m.rule.member_event",
                ".m.rule.is_user_mention",
                ".m.rule.is_room_mention",
                ".m.rule.tombstone",
                ".m.rule.reaction",
                ".m.rule.room.server_acl",
                ".m.rule.suppress_edits",
            ][..],
        ),
        (
            "underride",
            &[
                ".m.rule.call",
                ".m.rule.encrypted_room_one_to_one",
                ".m.rule.room_one_to_one",
                ".m.rule.message",
                ".m.rule.encrypted",
            ][..],
        ),
    ];
    for (kind, rule_ids_expected) in expected {
        let present = rule_ids(&ruleset, kind);
        for rule_id in rule_ids_expected {
            assert!(
                present.iter().any(|id| id == rule_id),
                "global.{kind} lacks {rule_id}: {present:?}"
            );
        }
    }

    assert_eq!(rule_ids(&ruleset, "override")[0], ".m.rule.master", "master has top priority");
    let master = find_rule(&ruleset, "override", ".m.rule.master");
    assert_eq!(master["default"], json!(true));
    assert_eq!(master["enabled"], json!(false), "master is disabled by default");

    let invite = find_rule(&ruleset, "override", ".m.rule.invite_for_me");
    let conditions = invite["conditions"].to_string();
    assert!(conditions.contains(&alice.user_id), "invite_for_me must match the user: {conditions}");

    let global = server.get(GLOBAL_RULESET, alice.token()).await;
    global.assert_status(200).assert_spec(GLOBAL_RULESET);
    assert_eq!(global.body, ruleset["global"]);
}

#[tokio::test]
async fn sdk_parses_default_ruleset() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let client = server.sdk_client().await;
    client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("password login");

    // Account::push_rules reads the local store and falls back to ruma's built-in defaults, so
    // the request is sent explicitly to parse what the server returns.
    let request = get_pushrules_all::v3::Request::new();
    let ruleset = client.send(request).await.expect("matrix-sdk parses GET /pushrules/").global;

    let master = ruleset.override_.iter().find(|rule| rule.rule_id == ".m.rule.master");
    let master = master.expect("the SDK's ruleset has .m.rule.master");
    assert!(!master.enabled, "master is disabled by default");
    assert!(ruleset.underride.iter().any(|rule| rule.rule_id == ".m.rule.message"));
}

#[tokio::test]
async fn custom_rule_lifecycle() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let rule_id = "org.caduceus.test.urgent";
    let path = rule_path("override", rule_id);
    let conditions =
        json!([{ "kind": "event_match", "key": "content.body", "pattern": "*URGENT*" }]);
    let actions = json!(["notify", { "set_tweak": "highlight" }]);

    let body = json!({ "conditions": conditions, "actions": actions });
    server.put(&path, alice.token(), &body).await.assert_status(200).assert_spec(RULE);

    let rule = server.get(&path, alice.token()).await;
    rule.assert_status(200).assert_spec(RULE);
    assert_eq!(rule.body["rule_id"], json!(rule_id));
    assert_eq!(rule.body["default"], json!(false));
    assert_eq!(rule.body["enabled"], json!(true), "new rules MUST be enabled");
    assert_eq!(rule.body["conditions"], conditions);
    assert_eq!(rule.body["actions"], actions);

    // User-defined rules rank above server-default ones, except .m.rule.master.
    let order = rule_ids(&ruleset(&server, &alice).await, "override");
    assert_eq!(order[..2], [".m.rule.master", rule_id], "override order: {order:?}");

    let enabled_path = format!("{path}/enabled");
    let disable = server.put(&enabled_path, alice.token(), &json!({ "enabled": false })).await;
    disable.assert_status(200).assert_spec(RULE_ENABLED);
    let enabled = server.get(&enabled_path, alice.token()).await;
    enabled.assert_status(200).assert_spec(RULE_ENABLED);
    assert_eq!(enabled.body, json!({ "enabled": false }));
    let rule = server.get(&path, alice.token()).await;
    assert_eq!(rule.body["enabled"], json!(false));

    let actions_path = format!("{path}/actions");
    let change = server.put(&actions_path, alice.token(), &json!({ "actions": ["notify"] })).await;
    change.assert_status(200).assert_spec(RULE_ACTIONS);
    let new_actions = server.get(&actions_path, alice.token()).await;
    new_actions.assert_status(200).assert_spec(RULE_ACTIONS);
    assert_eq!(new_actions.body, json!({ "actions": ["notify"] }));
    let rule = server.get(&path, alice.token()).await;
    assert_eq!(rule.body["conditions"], conditions, "changing actions kept the conditions");

    server.delete(&path, alice.token(), None).await.assert_status(200).assert_spec(RULE);
    server
        .get(&path, alice.token())
        .await
        .assert_matrix_error(404, "M_NOT_FOUND")
        .assert_spec(RULE);
    let order = rule_ids(&ruleset(&server, &alice).await, "override");
    assert!(!order.iter().any(|id| id == rule_id), "the deleted rule is listed: {order:?}");
    let again = server.delete(&path, alice.token(), None).await;
    again.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(RULE);
}

#[tokio::test]
async fn content_and_room_rules_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let content_path = rule_path("content", "org.caduceus.test.sepsis");
    let body = json!({ "pattern": "sepsis", "actions": ["notify", { "set_tweak": "sound", "value": "alarm" }] });
    server.put(&content_path, alice.token(), &body).await.assert_status(200).assert_spec(RULE);
    let content_rule = server.get(&content_path, alice.token()).await;
    content_rule.assert_status(200).assert_spec(RULE);
    assert_eq!(content_rule.body["pattern"], json!("sepsis"));
    assert_eq!(content_rule.body["actions"], body["actions"]);

    // Room rules are named after the room they silence.
    let room_id = "!noisyroom:localhost";
    let room_path = rule_path("room", room_id);
    server.put(&room_path, alice.token(), &json!({ "actions": [] })).await.assert_status(200);
    let room_rule = server.get(&room_path, alice.token()).await;
    room_rule.assert_status(200).assert_spec(RULE);
    assert_eq!(room_rule.body["rule_id"], json!(room_id));
    assert_eq!(room_rule.body["actions"], json!([]));

    let ruleset = ruleset(&server, &alice).await;
    assert!(rule_ids(&ruleset, "content").iter().any(|id| id == "org.caduceus.test.sepsis"));
    assert!(rule_ids(&ruleset, "room").iter().any(|id| id == room_id));
}

#[tokio::test]
async fn dot_rule_id_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let master_before =
        find_rule(&ruleset(&server, &alice).await, "override", ".m.rule.master").clone();
    let actions = json!({ "actions": ["notify"] });

    // The spec: a ruleId starting with "." MUST be rejected, because the dot marks
    // server-default rules. That includes overwriting an existing server-default rule.
    for rule_id in [".org.caduceus.test.fake", ".m.rule.master"] {
        let response = server.put(&rule_path("override", rule_id), alice.token(), &actions).await;
        response.assert_status(400).assert_error_shape().assert_spec(RULE);
    }

    let ruleset = ruleset(&server, &alice).await;
    let order = rule_ids(&ruleset, "override");
    assert!(!order.iter().any(|id| id == ".org.caduceus.test.fake"), "stored: {order:?}");
    assert_eq!(find_rule(&ruleset, "override", ".m.rule.master"), &master_before);
}

#[tokio::test]
async fn server_default_rule_not_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = rule_path("override", ".m.rule.master");

    let response = server.delete(&path, alice.token(), None).await;

    // The spec says nothing about deleting server-default rules, and its DELETE operation
    // documents only 200 and 404, so the rejection must be the 404.
    response.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(RULE);
    let ruleset = ruleset(&server, &alice).await;
    assert_eq!(rule_ids(&ruleset, "override")[0], ".m.rule.master");
}

#[tokio::test]
async fn server_default_rule_adjustable() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let master = rule_path("override", ".m.rule.master");
    let message = rule_path("underride", ".m.rule.message");

    let enable =
        server.put(&format!("{master}/enabled"), alice.token(), &json!({ "enabled": true })).await;
    enable.assert_status(200).assert_spec(RULE_ENABLED);
    let enabled = server.get(&format!("{master}/enabled"), alice.token()).await;
    assert_eq!(enabled.body, json!({ "enabled": true }));

    // The spec: the actions endpoint "can be used to change the actions of builtin rules".
    let silence =
        server.put(&format!("{message}/actions"), alice.token(), &json!({ "actions": [] })).await;
    silence.assert_status(200).assert_spec(RULE_ACTIONS);
    let actions = server.get(&format!("{message}/actions"), alice.token()).await;
    assert_eq!(actions.body, json!({ "actions": [] }));

    let ruleset = ruleset(&server, &alice).await;
    let master_rule = find_rule(&ruleset, "override", ".m.rule.master");
    assert_eq!(master_rule["enabled"], json!(true));
    assert_eq!(master_rule["default"], json!(true), "a changed default rule stays a default rule");
    assert_eq!(find_rule(&ruleset, "underride", ".m.rule.message")["actions"], json!([]));
}

async fn put_override(
    server: &TestServer,
    account: &Account,
    rule_id: &str,
    query: &str,
) -> ApiResponse {
    let path = format!("{}{query}", rule_path("override", rule_id));
    server.put(&path, account.token(), &json!({ "actions": ["notify"], "conditions": [] })).await
}

#[tokio::test]
async fn before_and_after_order_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    put_override(&server, &alice, "org.caduceus.test.a", "").await.assert_status(200);
    let before = "?before=org.caduceus.test.a";
    put_override(&server, &alice, "org.caduceus.test.b", before).await.assert_status(200);
    let after = "?after=org.caduceus.test.a";
    put_override(&server, &alice, "org.caduceus.test.c", after).await.assert_status(200);

    let order: Vec<String> = rule_ids(&ruleset(&server, &alice).await, "override")
        .into_iter()
        .filter(|id| id.starts_with("org.caduceus.test."))
        .collect();
    assert_eq!(order, ["org.caduceus.test.b", "org.caduceus.test.a", "org.caduceus.test.c"]);

    // The spec: rules cannot be placed relative to a server-default rule, and its example
    // returns 400 for an unknown before/after rule.
    for query in ["?before=.m.rule.suppress_notices", "?after=org.caduceus.test.missing"] {
        let response = put_override(&server, &alice, "org.caduceus.test.d", query).await;
        response.assert_status(400).assert_error_shape().assert_spec(RULE);
    }
    let order = rule_ids(&ruleset(&server, &alice).await, "override");
    assert!(!order.iter().any(|id| id == "org.caduceus.test.d"), "stored: {order:?}");
}

#[tokio::test]
async fn unknown_rule_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = rule_path("override", "org.caduceus.test.missing");

    server
        .get(&path, alice.token())
        .await
        .assert_matrix_error(404, "M_NOT_FOUND")
        .assert_spec(RULE);
    let enabled = server.get(&format!("{path}/enabled"), alice.token()).await;
    enabled.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(RULE_ENABLED);
    let set_enabled =
        server.put(&format!("{path}/enabled"), alice.token(), &json!({ "enabled": true })).await;
    set_enabled.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(RULE_ENABLED);
    let actions = server.get(&format!("{path}/actions"), alice.token()).await;
    actions.assert_matrix_error(404, "M_NOT_FOUND").assert_spec(RULE_ACTIONS);
}
