//! Validation of response bodies against the Matrix Client-Server API OpenAPI definitions, and
//! of the transactions the homeserver sends against the Application Service API's.
//!
//! The definitions live in `spec/client-server-api.json` and
//! `spec/application-service-api.json` (OpenAPI 3.1 with every schema inlined, see
//! `spec/README.md`). Each response schema is compiled as JSON Schema draft
//! 2020-12, the dialect OpenAPI 3.1 uses, with `format` checked for the Matrix identifier
//! formats.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, Validator};
use serde_json::Value;

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/client-server-api.json");
const APPSERVICE_SPEC_PATH: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/spec/application-service-api.json");

/// Maximum length of a body printed in a validation failure, in bytes.
const MAX_PRINTED_BODY: usize = 4000;

type ValidatorCache = Mutex<HashMap<(String, String, String), Arc<Validator>>>;

fn read_spec(path: &str) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("failed to read {path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path} is not valid JSON: {error}"))
}

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| read_spec(SPEC_PATH))
}

/// Panics unless `body` matches the Application Service API's schema for the body of
/// `PUT /_matrix/app/v1/transactions/{txnId}`.
pub fn assert_transaction_matches_spec(body: &Value) {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let spec = read_spec(APPSERVICE_SPEC_PATH);
        let schema = &spec["paths"]["/_matrix/app/v1/transactions/{txnId}"]["put"]["requestBody"]
            ["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "the spec has no schema for transaction bodies");
        build_validator(schema, "PUT /_matrix/app/v1/transactions/{txnId} request body")
    });
    let mut violations = String::new();
    for error in validator.iter_errors(body) {
        let _ = writeln!(violations, "  - at {}: {error}", error.instance_path.as_str());
    }
    assert!(
        violations.is_empty(),
        "the transaction does not match the spec's schema:\n{violations}body:\n{}",
        printable(body)
    );
}

/// Compiles a schema of the spec as JSON Schema draft 2020-12 with the Matrix formats checked.
fn build_validator(schema: &Value, label: &str) -> Validator {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_format("mx-user-id", is_user_id)
        .with_format("mx-room-id", is_room_id)
        .with_format("mx-event-id", is_event_id)
        .with_format("mx-room-alias", is_room_alias)
        .with_format("mx-server-name", is_server_name)
        .with_format("mx-mxc-uri", is_mxc_uri)
        .build(schema)
        .unwrap_or_else(|error| panic!("the spec's schema for {label} does not compile: {error}"))
}

fn validator_cache() -> &'static ValidatorCache {
    static CACHE: OnceLock<ValidatorCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Panics unless `body` matches the spec's response schema for `method`, `path_template` and
/// `status`.
///
/// It also panics when the spec does not document that path, method or status, so a typo in a
/// test cannot pass silently. See [`validate_response`] for the rules.
pub fn assert_matches_spec(method: &str, path_template: &str, status: u16, body: &Value) {
    if let Err(message) = validate_response(method, path_template, status, body) {
        panic!("{message}");
    }
}

/// Checks `body` against the spec's response schema for `method`, `path_template` and `status`,
/// and returns a readable list of the violations.
///
/// `path_template` is a key of the spec's `paths`, such as `/_matrix/client/v3/devices/{deviceId}`,
/// and `method` is an HTTP method in any case. The response for `status` is used, or the
/// operation's `default` response when it has one and `status` is not listed. The spec documents
/// some statuses without a body schema (for example 404 on `GET /devices/{deviceId}`): then an
/// error status (400 and up) must still carry the standard error body with an `errcode` string,
/// and any other status passes.
pub fn validate_response(
    method: &str,
    path_template: &str,
    status: u16,
    body: &Value,
) -> Result<(), String> {
    let method = method.to_ascii_lowercase();
    let operation = find_operation(&method, path_template)?;
    let label = format!("{} {path_template} -> {status}", method.to_ascii_uppercase());

    let responses = operation
        .get("responses")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{label}: the spec lists no responses for this operation"))?;
    let status_key = status.to_string();
    let (response_key, response) = match responses.get(&status_key) {
        Some(response) => (status_key, response),
        None => match responses.get("default") {
            Some(response) => ("default".to_owned(), response),
            None => {
                let documented: Vec<&str> = responses.keys().map(String::as_str).collect();
                return Err(format!(
                    "{label}: the spec does not document status {status} for this operation \
                     (documented: {})",
                    documented.join(", ")
                ));
            }
        },
    };

    let Some(content) = response.get("content").and_then(Value::as_object) else {
        if status >= 400 && !body.get("errcode").is_some_and(Value::is_string) {
            return Err(format!(
                "{label}: the spec gives no body schema for this error status, but the body is \
                 not a Matrix error with an errcode string:\n{}",
                printable(body)
            ));
        }
        return Ok(());
    };
    let schema =
        content.get("application/json").and_then(|media| media.get("schema")).ok_or_else(|| {
            let media_types: Vec<&str> = content.keys().map(String::as_str).collect();
            format!(
                "{label}: the spec has no application/json schema for this response (media \
                 types: {})",
                media_types.join(", ")
            )
        })?;

    let validator = compiled_validator(&method, path_template, &response_key, schema);
    let mut violations = String::new();
    for error in validator.iter_errors(body) {
        let location = match error.instance_path.as_str() {
            "" => "(root)",
            path => path,
        };
        let _ = writeln!(
            violations,
            "  - at {location}: {error} (schema keyword {})",
            error.schema_path.as_str()
        );
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{label}: the body does not match the spec's response schema:\n{violations}body:\n{}",
            printable(body)
        ))
    }
}

fn find_operation(method: &str, path_template: &str) -> Result<&'static Value, String> {
    let paths = spec()["paths"].as_object().expect("the spec has a paths object");
    let Some(path_item) = paths.get(path_template) else {
        let last_segment = path_template.rsplit('/').find(|segment| !segment.is_empty());
        let similar: Vec<&str> = paths
            .keys()
            .map(String::as_str)
            .filter(|path| last_segment.is_some_and(|segment| path.contains(segment)))
            .take(8)
            .collect();
        return Err(format!(
            "the spec has no path {path_template:?}; paths with the same last segment: {similar:?}"
        ));
    };
    path_item.get(method).filter(|operation| operation.get("responses").is_some()).ok_or_else(
        || {
            let methods: Vec<&str> = path_item
                .as_object()
                .into_iter()
                .flat_map(|item| item.iter())
                .filter(|(_, operation)| operation.get("responses").is_some())
                .map(|(name, _)| name.as_str())
                .collect();
            format!(
                "the spec has no {} operation on {path_template} (documented: {})",
                method.to_ascii_uppercase(),
                methods.join(", ")
            )
        },
    )
}

fn compiled_validator(
    method: &str,
    path_template: &str,
    response_key: &str,
    schema: &Value,
) -> Arc<Validator> {
    let key = (method.to_owned(), path_template.to_owned(), response_key.to_owned());
    let mut cache = validator_cache().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let validator = cache.entry(key).or_insert_with(|| {
        let label = format!("{} {path_template} -> {response_key}", method.to_ascii_uppercase());
        Arc::new(build_validator(schema, &label))
    });
    Arc::clone(validator)
}

fn printable(body: &Value) -> String {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
    if text.len() > MAX_PRINTED_BODY {
        let mut end = MAX_PRINTED_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n... (truncated)");
    }
    text
}

// The format checks below accept the grammar of the Matrix appendices loosely: the sigil, a
// non-empty local part and, where the grammar has one, a server name. Historical user IDs and
// room IDs without a server part (room version 12) pass.

fn is_server_name(value: &str) -> bool {
    !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '/')
}

fn is_local_and_server(value: &str, sigil: char) -> bool {
    value
        .strip_prefix(sigil)
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(local, server)| !local.is_empty() && is_server_name(server))
}

fn is_user_id(value: &str) -> bool {
    is_local_and_server(value, '@')
}

fn is_room_alias(value: &str) -> bool {
    is_local_and_server(value, '#')
}

fn is_sigil_and_opaque(value: &str, sigil: char) -> bool {
    value
        .strip_prefix(sigil)
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
}

fn is_room_id(value: &str) -> bool {
    is_sigil_and_opaque(value, '!')
}

fn is_event_id(value: &str) -> bool {
    is_sigil_and_opaque(value, '$')
}

fn is_mxc_uri(value: &str) -> bool {
    value
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(server, media_id)| is_server_name(server) && !media_id.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn valid_whoami_body_passes() {
        let body = json!({ "user_id": "@alice:localhost", "device_id": "ABCDEF" });
        validate_response("GET", "/_matrix/client/v3/account/whoami", 200, &body).unwrap();
    }

    #[test]
    fn missing_required_field_is_reported() {
        let body = json!({ "device_id": "ABCDEF" });
        let error = validate_response("GET", "/_matrix/client/v3/account/whoami", 200, &body)
            .expect_err("user_id is required");
        assert!(error.contains("user_id"), "{error}");
    }

    #[test]
    fn malformed_user_id_is_reported() {
        let body = json!({ "user_id": "alice" });
        let error = validate_response("GET", "/_matrix/client/v3/account/whoami", 200, &body)
            .expect_err("user_id must be a Matrix user ID");
        assert!(error.contains("mx-user-id"), "{error}");
    }

    #[test]
    fn unknown_path_is_an_error() {
        let error = validate_response("GET", "/_matrix/client/v3/account/whoamii", 200, &json!({}))
            .expect_err("the path has a typo");
        assert!(error.contains("no path"), "{error}");
    }

    #[test]
    fn unknown_method_is_an_error() {
        let error =
            validate_response("DELETE", "/_matrix/client/v3/account/whoami", 200, &json!({}))
                .expect_err("whoami has no DELETE");
        assert!(error.contains("no DELETE operation"), "{error}");
    }

    #[test]
    fn undocumented_status_is_an_error() {
        let error = validate_response("GET", "/_matrix/client/versions", 404, &json!({}))
            .expect_err("versions documents only 200");
        assert!(error.contains("does not document status 404"), "{error}");
    }

    /// Validates every response example in the spec against its own schema, which compiles
    /// every schema and exercises the format checks on real Matrix identifiers.
    #[test]
    fn spec_examples_match_their_schemas() {
        let mut failures = Vec::new();
        let mut checked = 0;
        for (path, item) in spec()["paths"].as_object().expect("paths is an object") {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let responses = operation.get("responses").and_then(Value::as_object);
                for (status, response) in responses.into_iter().flatten() {
                    let Ok(status) = status.parse::<u16>() else { continue };
                    let examples = &response["content"]["application/json"]["examples"];
                    for example in examples.as_object().into_iter().flat_map(|map| map.values()) {
                        checked += 1;
                        if let Err(error) =
                            validate_response(method, path, status, &example["value"])
                        {
                            failures.push(error);
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} examples found");
        assert!(
            failures.is_empty(),
            "{} of {checked} examples fail:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn error_status_without_schema_needs_errcode() {
        let template = "/_matrix/client/v3/devices/{deviceId}";
        let not_found = json!({ "errcode": "M_NOT_FOUND", "error": "Unknown device" });
        validate_response("GET", template, 404, &not_found).unwrap();
        validate_response("GET", template, 404, &json!({ "error": "no code" }))
            .expect_err("an error body needs an errcode");
    }
}
