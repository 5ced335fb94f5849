//! matrix-sdk clients pointed at a test server.

use std::ops::Deref;
use std::time::Duration;

use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::Client;
use tempfile::TempDir;

use crate::server::TestServer;

/// A matrix-sdk client with its own SQLite state and crypto store in a temporary directory.
///
/// It dereferences to [`Client`]. The store directory is deleted when the value is dropped.
pub struct TestClient {
    client: Client,
    _store_dir: TempDir,
}

impl Deref for TestClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestServer {
    /// Builds a matrix-sdk client for this server. The client is not logged in.
    ///
    /// Requests are not retried, so a server error fails the test at once instead of after
    /// the SDK's back-off. The client ignores the `well_known` of login responses, so it keeps
    /// talking to this loopback address whatever the server advertises.
    pub async fn sdk_client(&self) -> TestClient {
        let store_dir = tempfile::Builder::new()
            .prefix("caduceus-e2e-client-")
            .tempdir()
            .expect("failed to create a temporary directory for the client store");
        let http_client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("failed to build the client's HTTP client");
        let client = Client::builder()
            .homeserver_url(self.base_url())
            .http_client(http_client)
            .request_config(RequestConfig::new().disable_retry().timeout(Duration::from_secs(60)))
            .respect_login_well_known(false)
            .sqlite_store(store_dir.path(), None)
            .build()
            .await
            .unwrap_or_else(|error| panic!("failed to build a matrix-sdk client: {error}"));
        TestClient { client, _store_dir: store_dir }
    }
}

/// Builds the typed `m.login.password` auth data that matrix-sdk sends for UIA.
pub fn uiaa_password(localpart: &str, password: &str, session: Option<String>) -> uiaa::AuthData {
    let identifier =
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(localpart.into()));
    let mut auth = uiaa::Password::new(identifier, password.to_owned());
    auth.session = session;
    uiaa::AuthData::Password(auth)
}
