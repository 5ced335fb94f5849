//! POST /_matrix/client/v3/user/{userId}/filter and GET /filter/{filterId}: store and read sync
//! filters.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::filter::{create_filter::v3 as create_v3, get_filter::v3 as get_v3};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::Services;

pub async fn create(
    State(services): State<Arc<Services>>,
    request: Ruma<create_v3::Request>,
) -> Result<RumaResponse<create_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    if sender.user_id != body.user_id {
        return Err(Error::forbidden("You can only create filters for yourself"));
    }
    let filter = serde_json::value::to_raw_value(&body.filter)
        .map_err(|error| anyhow::anyhow!("filter does not serialise: {error}"))?;
    let filter_id = services.filters.create(&body.user_id, &filter)?;
    Ok(create_v3::Response::new(filter_id).into())
}

pub async fn get_filter(
    State(services): State<Arc<Services>>,
    request: Ruma<get_v3::Request>,
) -> Result<RumaResponse<get_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    if sender.user_id != body.user_id {
        return Err(Error::forbidden("You can only read your own filters"));
    }
    let not_found = || Error::not_found("No filter with that ID exists");
    let stored = services.filters.get(&body.user_id, &body.filter_id)?.ok_or_else(not_found)?;
    let filter = serde_json::from_str(stored.get())
        .map_err(|error| anyhow::anyhow!("stored filter is unreadable: {error}"))?;
    Ok(get_v3::Response::new(filter).into())
}
