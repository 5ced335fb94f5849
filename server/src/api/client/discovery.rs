//! GET /_matrix/client/versions and /.well-known/matrix/{client,server}: how clients and servers
//! find this homeserver and what it supports.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::service::Services;

/// Spec versions whose client endpoints this server implements as the current spec (v1.16)
/// describes them. v1.11 made media downloads authenticated; the server has those endpoints, so
/// clients that see v1.11 or later fetch media through them.
const VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12", "v1.13", "v1.14", "v1.15", "v1.16",
];

pub async fn versions() -> Json<Value> {
    // MSC3814: dehydrated devices under /unstable/org.matrix.msc3814.v1/dehydrated_device.
    Json(json!({ "versions": VERSIONS, "unstable_features": { "org.matrix.msc3814": true } }))
}

pub async fn well_known_client(State(services): State<Arc<Services>>) -> Json<Value> {
    Json(json!({ "m.homeserver": { "base_url": services.config.public_baseurl() } }))
}

/// Names the host and port that serves this server name.
pub async fn well_known_server(State(services): State<Arc<Services>>) -> Json<Value> {
    let baseurl = services.config.public_baseurl();
    let authority = baseurl.split_once("://").map_or(baseurl.as_str(), |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    Json(json!({ "m.server": authority }))
}
