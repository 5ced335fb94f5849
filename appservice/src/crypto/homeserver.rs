//! Client-Server API requests of the bot's device: typed with ruma, sent with reqwest.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;

use ruma::api::auth_scheme::{AccessToken, SendAccessToken};
use ruma::api::path_builder::VersionHistory;
use ruma::api::{IncomingResponse, MatrixVersion, OutgoingRequest, SupportedVersions};
use serde::Deserialize;

use super::error::{Error, Result};

/// The time a request other than `/sync` may take, from connecting to the end of the body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The time to connect to the homeserver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The homeserver of the bot, with the bot's access token.
pub(super) struct Homeserver {
    http: reqwest::Client,
    /// The base URL without a final slash, such as `http://127.0.0.1:8008`.
    base_url: String,
    access_token: String,
    /// The versions ruma picks endpoint paths for. Every endpoint used here has had its `v3`
    /// path since Matrix 1.1, so no `/versions` request is needed to choose.
    versions: SupportedVersions,
}

/// The standard error body of the Client-Server API.
#[derive(Deserialize)]
struct ErrorBody {
    errcode: Option<String>,
    error: Option<String>,
}

impl Homeserver {
    /// Checks `base_url` and builds the HTTP client.
    pub(super) fn new(base_url: &str, access_token: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidHomeserverUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let url = reqwest::Url::parse(base_url).map_err(|error| invalid(&error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("the URL must not have a query or fragment"));
        }

        // The homeserver is a service next to the application service, so proxy settings
        // from the environment are not applied to it.
        let http =
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|error| invalid(&format!("failed to build the HTTP client: {error}")))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            access_token: access_token.to_owned(),
            versions: SupportedVersions {
                versions: BTreeSet::from([MatrixVersion::V1_16]),
                features: BTreeSet::new(),
            },
        })
    }

    /// Sends `request` with the default timeout and parses the response.
    pub(super) async fn send<R>(&self, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<
            Authentication = AccessToken,
            PathBuilder = VersionHistory,
            EndpointError = ruma::api::error::Error,
        >,
    {
        self.send_with_timeout(request, REQUEST_TIMEOUT).await
    }

    /// Sends `request`, which may take up to `timeout`, and parses the response.
    pub(super) async fn send_with_timeout<R>(
        &self,
        request: R,
        timeout: Duration,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<
            Authentication = AccessToken,
            PathBuilder = VersionHistory,
            EndpointError = ruma::api::error::Error,
        >,
    {
        let http_request: http::Request<Vec<u8>> = request
            .try_into_http_request(
                &self.base_url,
                SendAccessToken::IfRequired(&self.access_token),
                Cow::Borrowed(&self.versions),
            )
            .map_err(|error| Error::BuildRequest {
                request_type: std::any::type_name::<R>(),
                error,
            })?;
        // Only the method and path go into errors and logs: the query of `/sync` contains the
        // `since` token and the filter, which add nothing useful to an error message.
        let label = format!("{} {}", http_request.method(), http_request.uri().path());

        let mut reqwest_request = reqwest::Request::try_from(http_request)
            .map_err(|error| Error::Http { request: label.clone(), error })?;
        *reqwest_request.timeout_mut() = Some(timeout);
        let response = self
            .http
            .execute(reqwest_request)
            .await
            .map_err(|error| Error::Http { request: label.clone(), error })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| Error::Http { request: label.clone(), error })?;

        if !status.is_success() {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            let (errcode, message) = match parsed {
                Some(ErrorBody { errcode, error }) => (errcode, error.unwrap_or_default()),
                None => (None, String::from_utf8_lossy(&body).chars().take(200).collect()),
            };
            return Err(Error::Server {
                request: label,
                status: status.as_u16(),
                errcode,
                message,
            });
        }

        let mut http_response = http::Response::new(body);
        *http_response.status_mut() = status;
        *http_response.headers_mut() = headers;
        R::IncomingResponse::try_from_http_response(http_response)
            .map_err(|error| Error::InvalidResponse { request: label, error: error.to_string() })
    }
}
