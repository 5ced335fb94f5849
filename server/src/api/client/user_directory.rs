//! POST /_matrix/client/v3/user_directory/search: find verified professionals in the directory.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::user_directory::search_users::v3 as search_users_v3;
use ruma::{OwnedMxcUri, UserId};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::Result;
use crate::service::Services;

/// Largest `limit` a client may request; larger values are lowered to it.
const MAX_LIMIT: usize = 50;

pub async fn search(
    State(services): State<Arc<Services>>,
    request: Ruma<search_users_v3::Request>,
) -> Result<RumaResponse<search_users_v3::Response>> {
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);

    let search_services = services.clone();
    let (entries, limited) = tokio::task::spawn_blocking(move || {
        search_services.directory.search_users(
            &sender,
            &search_services.rooms,
            &body.search_term,
            limit,
        )
    })
    .await??;

    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let Ok(user_id) = UserId::parse(&entry.user_id) else {
            tracing::error!(user_id = entry.user_id, "the directory returned an invalid user ID");
            continue;
        };
        let mut user = search_users_v3::User::new(user_id);
        user.display_name = entry.display_name;
        user.avatar_url = entry.avatar_url.map(OwnedMxcUri::from);
        results.push(user);
    }
    Ok(search_users_v3::Response::new(results, limited).into())
}
