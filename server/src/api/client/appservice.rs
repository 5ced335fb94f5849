//! POST /_matrix/client/v1/appservice/{appserviceId}/ping: check that the server reaches an
//! application service.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::appservice::request_ping::v1 as ping_v1;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::Services;

pub async fn ping(
    State(services): State<Arc<Services>>,
    request: Ruma<ping_v1::Request>,
) -> Result<RumaResponse<ping_v1::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let appservice = sender
        .appservice_id
        .as_deref()
        .filter(|id| *id == body.appservice_id)
        .and_then(|id| services.appservices.by_id(id))
        .ok_or_else(|| {
            Error::forbidden("Only the application service itself can ask for its ping")
        })?;
    let duration = services
        .appservices
        .ping(appservice, body.transaction_id.as_ref().map(|txn_id| txn_id.as_str()))
        .await?;
    Ok(ping_v1::Response::new(duration).into())
}
