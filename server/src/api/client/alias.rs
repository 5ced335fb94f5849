//! /_matrix/client/v3/directory/room/{roomAlias} (PUT, GET, DELETE) and
//! /rooms/{roomId}/aliases: room aliases.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::alias::{
    create_alias::v3 as create_v3, delete_alias::v3 as delete_v3, get_alias::v3 as get_v3,
};
use ruma::api::client::room::aliases::v3 as room_aliases_v3;
use serde_json::{json, Value};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::Services;

fn check_local_alias(services: &Services, alias: &ruma::RoomAliasId) -> Result<()> {
    if alias.server_name() != services.server_name {
        return Err(Error::invalid_param("Only aliases on this server can be managed here"));
    }
    Ok(())
}

pub async fn create(
    State(services): State<Arc<Services>>,
    request: Ruma<create_v3::Request>,
) -> Result<RumaResponse<create_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    check_local_alias(&services, &body.room_alias)?;
    services.appservices.check_alias_free(&body.room_alias, sender.appservice_id.as_deref())?;
    if !services.rooms.is_joined(&body.room_id, &sender.user_id)? {
        return Err(Error::forbidden("You must be in the room to give it an alias"));
    }
    services.rooms.create_alias(body.room_alias.as_str(), &body.room_id, &sender.user_id)?;
    Ok(create_v3::Response::new().into())
}

pub async fn get(
    State(services): State<Arc<Services>>,
    request: Ruma<get_v3::Request>,
) -> Result<RumaResponse<get_v3::Response>> {
    let alias = &request.body.room_alias;
    let mut room_id = services.rooms.resolve_alias(alias.as_str())?;
    // An alias in an application service's namespace may exist there first: ask the service,
    // which creates the room and the alias if it knows it, then look again.
    if room_id.is_none() && services.appservices.query_alias(alias).await {
        room_id = services.rooms.resolve_alias(alias.as_str())?;
    }
    let room_id = room_id
        .ok_or_else(|| Error::not_found(format!("The room alias {alias} does not exist")))?;
    Ok(get_v3::Response::new(room_id, vec![services.server_name.clone()]).into())
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_v3::Request>,
) -> Result<RumaResponse<delete_v3::Response>> {
    let sender = request.sender()?;
    let alias = &request.body.room_alias;
    check_local_alias(&services, alias)?;
    let is_admin = services.accounts.get_user(&sender.user_id)?.is_some_and(|user| user.admin);
    services.rooms.delete_alias(alias.as_str(), &sender.user_id, is_admin)?;
    Ok(delete_v3::Response::new().into())
}

pub async fn room_aliases(
    State(services): State<Arc<Services>>,
    request: Ruma<room_aliases_v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    if !services.rooms.is_joined(room_id, &sender.user_id)? {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    Ok(Json(json!({ "aliases": services.rooms.aliases_of_room(room_id)? })))
}
