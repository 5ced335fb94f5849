//! GET/POST /_matrix/client/v3/publicRooms and /directory/list/room/{roomId}: the public room
//! directory.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::directory::{
    get_public_rooms::v3 as public_rooms_v3, get_public_rooms_filtered::v3 as filtered_v3,
    get_room_visibility::v3 as get_visibility_v3, set_room_visibility::v3 as set_visibility_v3,
};
use ruma::api::client::room::Visibility;
use serde_json::{json, Value};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::Services;

/// The most rooms one page returns.
const MAX_PAGE: usize = 500;

/// One page of the directory; `since` is the number of rooms to skip.
fn public_rooms_page(
    services: &Services,
    limit: Option<u64>,
    since: Option<&str>,
    search: Option<&str>,
) -> Result<Value> {
    let offset: usize = match since {
        Some(token) => token.parse().map_err(|_| Error::invalid_param("Invalid `since` token"))?,
        None => 0,
    };
    let limit = limit.map(|l| l as usize).unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let search = search.map(str::to_lowercase);

    let mut chunk = Vec::new();
    for room_id in services.rooms.published_rooms()? {
        let state = services.rooms.current_state(&room_id)?;
        let text = |event_type: &str, key: &str| -> Result<Option<String>> {
            Ok(services
                .rooms
                .state_pdu(&state, event_type, "")?
                .and_then(|pdu| pdu.content().get(key).and_then(|v| v.as_str()).map(str::to_owned)))
        };
        let name = text("m.room.name", "name")?;
        let topic = text("m.room.topic", "topic")?;
        let alias = text("m.room.canonical_alias", "alias")?;
        if let Some(search) = &search {
            let haystack = format!(
                "{} {} {}",
                name.as_deref().unwrap_or(""),
                topic.as_deref().unwrap_or(""),
                alias.as_deref().unwrap_or("")
            )
            .to_lowercase();
            if !haystack.contains(search) {
                continue;
            }
        }
        let join_rule =
            text("m.room.join_rules", "join_rule")?.unwrap_or_else(|| "invite".to_owned());
        let history = text("m.room.history_visibility", "history_visibility")?;
        let guest = text("m.room.guest_access", "guest_access")?;
        let mut room = json!({
            "room_id": room_id,
            "num_joined_members": services.rooms.joined_members(&room_id)?.len(),
            "world_readable": history.as_deref() == Some("world_readable"),
            "guest_can_join": guest.as_deref() == Some("can_join"),
            "join_rule": join_rule,
        });
        for (key, value) in [
            ("name", name),
            ("topic", topic),
            ("canonical_alias", alias),
            ("avatar_url", text("m.room.avatar", "url")?),
        ] {
            if let Some(value) = value {
                room[key] = json!(value);
            }
        }
        chunk.push(room);
    }
    let total = chunk.len();
    let page: Vec<Value> = chunk.into_iter().skip(offset).take(limit).collect();
    let mut response = json!({ "chunk": page, "total_room_count_estimate": total });
    if offset + limit < total {
        response["next_batch"] = json!((offset + limit).to_string());
    }
    if offset > 0 {
        response["prev_batch"] = json!(offset.saturating_sub(limit).to_string());
    }
    Ok(response)
}

pub async fn get_public_rooms(
    State(services): State<Arc<Services>>,
    request: Ruma<public_rooms_v3::Request>,
) -> Result<Json<Value>> {
    let body = &request.body;
    let limit = body.limit.map(u64::from);
    Ok(Json(public_rooms_page(&services, limit, body.since.as_deref(), None)?))
}

pub async fn post_public_rooms(
    State(services): State<Arc<Services>>,
    request: Ruma<filtered_v3::Request>,
) -> Result<Json<Value>> {
    request.sender()?;
    let body = &request.body;
    let limit = body.limit.map(u64::from);
    let search = body.filter.generic_search_term.as_deref();
    Ok(Json(public_rooms_page(&services, limit, body.since.as_deref(), search)?))
}

pub async fn get_visibility(
    State(services): State<Arc<Services>>,
    request: Ruma<get_visibility_v3::Request>,
) -> Result<RumaResponse<get_visibility_v3::Response>> {
    let published = services.rooms.is_published(&request.body.room_id)?;
    let visibility = if published { Visibility::Public } else { Visibility::Private };
    Ok(get_visibility_v3::Response::new(visibility).into())
}

pub async fn set_visibility(
    State(services): State<Arc<Services>>,
    request: Ruma<set_visibility_v3::Request>,
) -> Result<RumaResponse<set_visibility_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    if !services.rooms.is_joined(&body.room_id, &sender.user_id)? {
        return Err(Error::forbidden("You must be in the room to change its directory listing"));
    }
    let state = services.rooms.current_state(&body.room_id)?;
    let room =
        services.rooms.room(&body.room_id)?.ok_or_else(crate::service::rooms::unknown_room)?;
    let rules = crate::service::rooms::version_rules(&room.room_version)?;
    let needed = services
        .rooms
        .state_pdu(&state, "m.room.power_levels", "")?
        .and_then(|pl| pl.content().get("state_default").and_then(|v| v.as_i64()))
        .unwrap_or(50);
    if services.rooms.power_level(&state, &rules, &sender.user_id)? < needed {
        return Err(Error::forbidden("Your power level is too low to publish this room"));
    }
    services.rooms.set_published(&body.room_id, body.visibility == Visibility::Public)?;
    Ok(set_visibility_v3::Response::new().into())
}
