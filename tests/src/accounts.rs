//! Creating accounts and sessions over raw HTTP, for tests whose subject is something else.

use serde_json::{json, Value};

use crate::http::{encode_path_segment, ApiResponse};
use crate::server::{TestServer, SERVER_NAME};

/// The password of the accounts the tests create.
pub const PASSWORD: &str = "correct horse battery staple";

/// A logged-in session of a test account.
#[derive(Debug, Clone)]
pub struct Account {
    pub localpart: String,
    pub user_id: String,
    pub password: String,
    pub access_token: String,
    pub device_id: String,
}

impl Account {
    /// Returns the access token in the `Option` form that the request helpers take.
    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }

    /// Returns the user ID, percent-encoded for a request path.
    pub fn user_path(&self) -> String {
        encode_path_segment(&self.user_id)
    }
}

/// Builds an `m.login.password` auth dict for User-Interactive Authentication.
pub fn password_auth(localpart: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": localpart },
        "password": password,
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

impl TestServer {
    /// Registers `localpart` with [`PASSWORD`] like [`TestServer::register_pending`], then
    /// verifies the account at the `identity` level with `caduceus admin set-verification`, so
    /// it may create rooms, invite and be invited under the server's default rules.
    pub async fn register(&self, localpart: &str) -> Account {
        let account = self.register_pending(localpart).await;
        self.set_verification(&account.user_id, "identity").await;
        account
    }

    /// Sets a user's verification level with `caduceus admin set-verification`.
    pub async fn set_verification(&self, user_id: &str, level: &str) {
        self.admin_ok(&["set-verification", user_id, "--level", level]).await;
    }

    /// Registers `localpart` with [`PASSWORD`], using a single-use registration token from the
    /// admin CLI, and returns the new session. The account stays at the `pending` level that
    /// every new account starts at.
    pub async fn register_pending(&self, localpart: &str) -> Account {
        let token = self.create_registration_token(Some(1)).await;
        let response = self.register_with_token(localpart, PASSWORD, &token).await;
        response.assert_status(200);
        Account {
            localpart: localpart.to_owned(),
            user_id: response.str_field("user_id").to_owned(),
            password: PASSWORD.to_owned(),
            access_token: response.str_field("access_token").to_owned(),
            device_id: response.str_field("device_id").to_owned(),
        }
    }

    /// Runs the two requests of token registration: the first without `auth`, which must
    /// return the 401 UIA response with a session, and the second with an
    /// `m.login.registration_token` stage. Returns the second response.
    pub async fn register_with_token(
        &self,
        localpart: &str,
        password: &str,
        token: &str,
    ) -> ApiResponse {
        let mut body = json!({ "username": localpart, "password": password });
        let session = self.uia_session("/_matrix/client/v3/register", None, &body).await;
        body["auth"] = json!({
            "type": "m.login.registration_token",
            "token": token,
            "session": session,
        });
        self.post("/_matrix/client/v3/register", None, &body).await
    }

    /// Sends `body` to a User-Interactive Authentication endpoint without `auth`, checks for
    /// the 401 response, and returns its session ID.
    pub async fn uia_session(&self, path: &str, token: Option<&str>, body: &Value) -> String {
        let response = self.post(path, token, body).await;
        response.assert_status(401);
        response.str_field("session").to_owned()
    }

    /// Logs in with a password and returns the new session.
    pub async fn login(&self, localpart: &str, password: &str) -> Account {
        let response = self.login_request(localpart, password).await;
        response.assert_status(200);
        Account {
            localpart: localpart.to_owned(),
            user_id: response.str_field("user_id").to_owned(),
            password: password.to_owned(),
            access_token: response.str_field("access_token").to_owned(),
            device_id: response.str_field("device_id").to_owned(),
        }
    }

    /// Sends `POST /login` with `m.login.password` and returns the response as it is.
    pub async fn login_request(&self, user: &str, password: &str) -> ApiResponse {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        self.post("/_matrix/client/v3/login", None, &body).await
    }

    /// Returns the full user ID of `localpart` on the test server.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{SERVER_NAME}")
    }

    /// Returns whether `GET /register/available` reports `localpart` as free.
    pub async fn username_available(&self, localpart: &str) -> bool {
        let path = format!(
            "/_matrix/client/v3/register/available?username={}",
            encode_path_segment(localpart)
        );
        let response = self.get(&path, None).await;
        match response.status {
            200 => response.body["available"] == json!(true),
            400 if response.errcode() == Some("M_USER_IN_USE") => false,
            _ => {
                panic!("unexpected response from GET {path}: {} {}", response.status, response.text)
            }
        }
    }
}
