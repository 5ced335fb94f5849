//! /_matrix/client/v3/devices and /delete_devices: list, read, rename and delete a user's
//! devices.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::device::{
    delete_device::v3 as delete_device_v3, delete_devices::v3 as delete_devices_v3,
    get_device::v3 as get_device_v3, get_devices::v3 as get_devices_v3,
    update_device::v3 as update_device_v3,
};
use serde_json::{json, Value};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::accounts::Device;
use crate::service::uia::confirm_password;
use crate::service::Services;

/// The device in the client format; unset fields are left out, as the spec types them as
/// strings.
fn to_json(device: Device) -> Value {
    let mut output = json!({ "device_id": device.device_id });
    if let Some(name) = device.record.display_name {
        output["display_name"] = json!(name);
    }
    if let Some(ip) = device.record.last_seen_ip {
        output["last_seen_ip"] = json!(ip);
    }
    if let Some(ts) = device.record.last_seen_ts {
        output["last_seen_ts"] = json!(ts);
    }
    output
}

fn no_such_device() -> Error {
    Error::not_found("No device with that ID exists for this user")
}

pub async fn list(
    State(services): State<Arc<Services>>,
    request: Ruma<get_devices_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let devices = services.accounts.list_devices(&sender.user_id)?;
    Ok(Json(json!({ "devices": devices.into_iter().map(to_json).collect::<Vec<_>>() })))
}

pub async fn get_device(
    State(services): State<Arc<Services>>,
    request: Ruma<get_device_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let device = services
        .accounts
        .get_device(&sender.user_id, request.body.device_id.as_str())?
        .ok_or_else(no_such_device)?;
    Ok(Json(to_json(device)))
}

pub async fn update(
    State(services): State<Arc<Services>>,
    request: Ruma<update_device_v3::Request>,
) -> Result<RumaResponse<update_device_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let renamed = services.accounts.rename_device(
        &sender.user_id,
        body.device_id.as_str(),
        body.display_name.clone(),
    )?;
    if !renamed {
        return Err(no_such_device());
    }
    Ok(update_device_v3::Response::new().into())
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_device_v3::Request>,
) -> Result<RumaResponse<delete_device_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    if services.accounts.get_device(&sender.user_id, body.device_id.as_str())?.is_none() {
        return Err(no_such_device());
    }
    confirm_password(&services, &sender.user_id, body.auth.as_ref(), "delete_devices").await?;
    services.accounts.delete_devices(&sender.user_id, &[body.device_id.to_string()])?;
    Ok(delete_device_v3::Response::new().into())
}

pub async fn delete_many(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_devices_v3::Request>,
) -> Result<RumaResponse<delete_devices_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    confirm_password(&services, &sender.user_id, body.auth.as_ref(), "delete_devices").await?;
    let device_ids: Vec<String> = body.devices.iter().map(|id| id.to_string()).collect();
    services.accounts.delete_devices(&sender.user_id, &device_ids)?;
    Ok(delete_devices_v3::Response::new().into())
}
