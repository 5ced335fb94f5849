//! GET /_matrix/client/v3/sync: everything new for the device since its last sync, waiting up to
//! `timeout` milliseconds when there is nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use ruma::api::client::filter::FilterDefinition;
use ruma::api::client::sync::sync_events::v3 as sync_v3;
use serde_json::Value;

use crate::api::ruma::Ruma;
use crate::error::{Error, Result};
use crate::service::sync::{parse_token, sync as run_sync, SyncRequest};
use crate::service::Services;

pub async fn sync_events(
    State(services): State<Arc<Services>>,
    request: Ruma<sync_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let filter = match body.filter {
        None => FilterDefinition::default(),
        Some(sync_v3::Filter::FilterDefinition(filter)) => filter,
        Some(sync_v3::Filter::FilterId(filter_id)) => {
            let stored = services.filters.get(&sender.user_id, &filter_id)?.ok_or_else(|| {
                Error::not_found(format!("No filter with ID {filter_id:?} exists"))
            })?;
            serde_json::from_str(stored.get())
                .map_err(|error| anyhow::anyhow!("stored filter is unreadable: {error}"))?
        }
        Some(_) => FilterDefinition::default(),
    };
    let since = body.since.as_deref().map(parse_token).transpose()?;
    let sync_request = SyncRequest {
        since,
        full_state: body.full_state,
        timeout: body.timeout.unwrap_or(Duration::ZERO),
        filter,
    };
    Ok(Json(run_sync(&services, &sender, sync_request).await?))
}
