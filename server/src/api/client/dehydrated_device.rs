//! /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device: keep a device on the server
//! that collects room keys while the user has no device online (MSC3814).

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::dehydrated_device::{
    delete_dehydrated_device::unstable as delete_v1, get_dehydrated_device::unstable as get_v1,
    get_events::unstable as get_events_v1, put_dehydrated_device::unstable as put_v1,
};
use ruma::serde::Raw;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::dehydrated_device::{self, NewDehydratedDevice};
use crate::service::Services;

pub async fn put_dehydrated_device(
    State(services): State<Arc<Services>>,
    request: Ruma<put_v1::Request>,
) -> Result<RumaResponse<put_v1::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let device = NewDehydratedDevice {
        device_id: &body.device_id,
        display_name: body.initial_device_display_name.clone(),
        device_data: body.device_data.json(),
        device_keys: &body.device_keys,
        one_time_keys: &body.one_time_keys,
        fallback_keys: &body.fallback_keys,
    };
    dehydrated_device::put(&services, &sender.user_id, device)?;
    Ok(put_v1::Response::new(body.device_id.clone()).into())
}

pub async fn get_dehydrated_device(
    State(services): State<Arc<Services>>,
    request: Ruma<get_v1::Request>,
) -> Result<RumaResponse<get_v1::Response>> {
    let sender = request.sender()?;
    let record = services
        .dehydrated_device
        .get(&sender.user_id)?
        .ok_or_else(|| Error::not_found("You have no dehydrated device"))?;
    let response =
        get_v1::Response::new(record.device_id.into(), Raw::from_json(record.device_data));
    Ok(response.into())
}

pub async fn delete_dehydrated_device(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_v1::Request>,
) -> Result<RumaResponse<delete_v1::Response>> {
    let sender = request.sender()?;
    let device_id = dehydrated_device::delete(&services, &sender.user_id)?;
    Ok(delete_v1::Response::new(device_id).into())
}

pub async fn get_events(
    State(services): State<Arc<Services>>,
    request: Ruma<get_events_v1::Request>,
) -> Result<RumaResponse<get_events_v1::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let (events, next_batch) = dehydrated_device::events(
        &services,
        &sender.user_id,
        &body.device_id,
        body.next_batch.as_deref(),
    )?;
    let mut response = get_events_v1::Response::new(events);
    response.next_batch = Some(next_batch);
    Ok(response.into())
}
