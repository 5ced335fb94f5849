//! Raw HTTP requests to a test server, and assertions on their responses.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use crate::server::TestServer;
use crate::spec::assert_matches_spec;

/// A response to a raw request, with its body parsed as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub method: Method,
    /// The path and query that were requested.
    pub path: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub allow: Option<String>,
    /// The `Retry-After` header, in seconds, sent with `429 Too Many Requests`.
    pub retry_after: Option<String>,
    /// The parsed body, or `Value::Null` when the body is empty or not JSON.
    pub body: Value,
    /// The body as text, for failure messages.
    pub text: String,
}

/// Percent-encodes one path segment, leaving only unreserved characters (RFC 3986) as they are.
///
/// Matrix identifiers contain `@`, `:`, `!`, `#` and `$`, which must not be read as URL syntax.
pub fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl TestServer {
    /// Sends `GET path`, with `Authorization: Bearer TOKEN` when `token` is given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> ApiResponse {
        self.request(Method::GET, path, token, None).await
    }

    /// Sends `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> ApiResponse {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Sends `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> ApiResponse {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Sends `DELETE path`, with a JSON body when `body` is given.
    pub async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResponse {
        self.request(Method::DELETE, path, token, body).await
    }

    /// Sends a request to `path` (which may carry a query string) on this server.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResponse {
        let body = body.map(|body| serde_json::to_vec(body).expect("a JSON value serializes"));
        self.send(method, path, token, body).await
    }

    /// Sends `body` as it is, labelled `Content-Type: application/json`, so tests can send
    /// malformed or oversized bodies.
    pub async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> ApiResponse {
        self.send(method, path, token, Some(body)).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> ApiResponse {
        assert!(path.starts_with('/'), "request paths start with '/', got {path:?}");
        let url = format!("{}{path}", self.base_url());
        let mut request = self.http().request(method.clone(), &url);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }

        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path} failed: {error}\n{}", self.output()));
        let status = response.status().as_u16();
        let header = |name| {
            response.headers().get(name).map(|value: &reqwest::header::HeaderValue| {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            })
        };
        let content_type = header(CONTENT_TYPE);
        let allow = header(reqwest::header::ALLOW);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let text = response
            .text()
            .await
            .unwrap_or_else(|error| panic!("reading the body of {method} {path} failed: {error}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        ApiResponse {
            method,
            path: path.to_owned(),
            status,
            content_type,
            allow,
            retry_after,
            body,
            text,
        }
    }
}

impl ApiResponse {
    /// Panics unless the status is `expected`, showing the body.
    pub fn assert_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status, expected,
            "{} {} returned {} instead of {expected}; body: {}",
            self.method, self.path, self.status, self.text
        );
        self
    }

    /// Panics unless the response is a Matrix error with this status and `errcode`.
    ///
    /// Checks the shape every Caduceus error has: a JSON object with the `errcode` and `error`
    /// strings (the spec requires both), sent as `application/json`.
    pub fn assert_matrix_error(&self, status: u16, errcode: &str) -> &Self {
        self.assert_status(status);
        self.assert_error_shape();
        assert_eq!(
            self.errcode(),
            Some(errcode),
            "{} {} returned errcode {:?} instead of {errcode}; body: {}",
            self.method,
            self.path,
            self.errcode(),
            self.text
        );
        self
    }

    /// Panics unless the body is a JSON object with `errcode` and `error` strings, sent as
    /// `application/json`.
    pub fn assert_error_shape(&self) -> &Self {
        let context = format!("{} {} ({})", self.method, self.path, self.status);
        let content_type = self.content_type.as_deref().unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "{context}: error Content-Type is {content_type:?}, not application/json; body: {}",
            self.text
        );
        assert!(self.body.is_object(), "{context}: error body is not a JSON object: {}", self.text);
        assert!(
            self.body["errcode"].is_string(),
            "{context}: error body has no errcode string: {}",
            self.text
        );
        assert!(
            self.body["error"].is_string(),
            "{context}: error body has no error string: {}",
            self.text
        );
        self
    }

    /// Panics unless the body matches the spec's schema for this method, `path_template` and
    /// the status that was returned. The template is the spec's path, such as
    /// `/_matrix/client/v3/profile/{userId}/{keyName}`.
    pub fn assert_spec(&self, path_template: &str) -> &Self {
        if !self.text.is_empty() {
            assert!(
                !self.body.is_null(),
                "{} {} ({}) returned a body that is not JSON: {}",
                self.method,
                self.path,
                self.status,
                self.text
            );
        }
        assert_matches_spec(self.method.as_str(), path_template, self.status, &self.body);
        self
    }

    /// Returns the `errcode` of an error body, if it has one.
    pub fn errcode(&self) -> Option<&str> {
        self.body.get("errcode").and_then(Value::as_str)
    }

    /// Returns the string at `key` in the body, and panics if it is missing or not a string.
    pub fn str_field(&self, key: &str) -> &str {
        self.body.get(key).and_then(Value::as_str).unwrap_or_else(|| {
            panic!(
                "{} {} ({}) has no string {key:?}; body: {}",
                self.method, self.path, self.status, self.text
            )
        })
    }
}
