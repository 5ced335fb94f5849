//! The route table, and the layers every request passes: CORS, a tracing span, and Matrix
//! errors for unknown endpoints and methods.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{header, Method, Request};
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

use super::client::{
    account, alias, authenticated_media, capabilities, config, context, device, directory,
    discovery, filter, media, membership, message, profile, push, receipt, redact, register,
    relations, room, session, state, sync, threepid, typing, user_directory,
};
use super::client::{appservice, backup, dehydrated_device, keys, to_device};
use crate::error::{Error, ErrorCode};
use crate::service::Services;

pub fn router(services: Arc<Services>) -> Router {
    let client = Router::new()
        .route("/_matrix/client/versions", get(discovery::versions))
        .route("/.well-known/matrix/client", get(discovery::well_known_client))
        .route("/.well-known/matrix/server", get(discovery::well_known_server))
        .route("/_matrix/client/v3/capabilities", get(capabilities::get_capabilities))
        .route("/_matrix/client/v3/register", post(register::register))
        .route("/_matrix/client/v3/register/available", get(register::available))
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            get(register::token_validity),
        )
        .route("/_matrix/client/v3/login", get(session::login_types).post(session::login))
        .route("/_matrix/client/v1/appservice/{appserviceId}/ping", post(appservice::ping))
        .route("/_matrix/client/v3/logout", post(session::logout))
        .route("/_matrix/client/v3/logout/all", post(session::logout_all))
        .route("/_matrix/client/v3/account/whoami", get(account::whoami))
        .route("/_matrix/client/v3/account/password", post(account::change_password))
        .route("/_matrix/client/v3/account/deactivate", post(account::deactivate))
        .route(
            "/_matrix/client/v3/register/email/requestToken",
            post(threepid::request_registration_token),
        )
        .route(
            "/_matrix/client/v3/account/3pid/email/requestToken",
            post(threepid::request_add_token),
        )
        .route(
            "/_matrix/client/v3/account/password/email/requestToken",
            post(threepid::request_password_token),
        )
        .route(
            "/_caduceus/client/v1/email/submit_token",
            get(threepid::submit_token_get).post(threepid::submit_token_post),
        )
        .route("/_matrix/client/v3/account/3pid", get(threepid::list))
        .route("/_matrix/client/v3/account/3pid/add", post(threepid::add))
        .route("/_matrix/client/v3/account/3pid/delete", post(threepid::delete))
        .route("/_matrix/client/v3/account/3pid/bind", post(threepid::bind))
        .route("/_matrix/client/v3/account/3pid/unbind", post(threepid::unbind))
        .route("/_matrix/client/v3/devices", get(device::list))
        .route(
            "/_matrix/client/v3/devices/{deviceId}",
            get(device::get_device).put(device::update).delete(device::delete),
        )
        .route("/_matrix/client/v3/delete_devices", post(device::delete_many))
        .route("/_matrix/client/v3/profile/{userId}", get(profile::get_profile))
        .route("/_matrix/client/v3/user_directory/search", post(user_directory::search))
        .route("/_caduceus/directory/v1/search", get(super::directory_v1::search))
        .route("/_caduceus/directory/v1/users/{userId}", get(super::directory_v1::get_user))
        .route("/_caduceus/directory/v1/openapi.json", get(super::directory_v1::openapi))
        .route(
            "/_matrix/client/v3/profile/{userId}/{keyName}",
            get(profile::get_field).put(profile::set_field).delete(profile::delete_field),
        )
        .route(
            "/_matrix/client/v3/user/{userId}/account_data/{type}",
            get(config::get_global).put(config::set_global),
        )
        .route(
            "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}",
            get(config::get_room).put(config::set_room),
        )
        .route("/_matrix/client/v3/user/{userId}/filter", post(filter::create))
        .route("/_matrix/client/v3/user/{userId}/filter/{filterId}", get(filter::get_filter))
        .route("/_matrix/client/v3/pushrules/", get(push::get_all))
        .route("/_matrix/client/v3/pushrules/global/", get(push::get_global))
        .route(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}",
            get(push::get_rule).put(push::set_rule).delete(push::delete_rule),
        )
        .route(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled",
            get(push::get_enabled).put(push::set_enabled),
        )
        .route(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions",
            get(push::get_actions).put(push::set_actions),
        )
        .route("/_matrix/client/v3/keys/upload", post(keys::upload_keys))
        .route("/_matrix/client/v3/keys/query", post(keys::get_keys))
        .route("/_matrix/client/v3/keys/claim", post(keys::claim_keys))
        .route("/_matrix/client/v3/keys/changes", get(keys::get_key_changes))
        .route("/_matrix/client/v3/keys/device_signing/upload", post(keys::upload_signing_keys))
        .route("/_matrix/client/v3/keys/signatures/upload", post(keys::upload_signatures))
        .route(
            "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}",
            put(to_device::send_event_to_device),
        )
        .route(
            "/_matrix/client/v3/room_keys/version",
            get(backup::get_latest_version).post(backup::create_version),
        )
        .route(
            "/_matrix/client/v3/room_keys/version/{version}",
            get(backup::get_version).put(backup::update_version).delete(backup::delete_version),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys",
            get(backup::get_keys).put(backup::add_keys).delete(backup::delete_keys),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys/{roomId}",
            get(backup::get_room_keys).put(backup::add_room_keys).delete(backup::delete_room_keys),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}",
            get(backup::get_session_key)
                .put(backup::add_session_key)
                .delete(backup::delete_session_key),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
            get(dehydrated_device::get_dehydrated_device)
                .put(dehydrated_device::put_dehydrated_device)
                .delete(dehydrated_device::delete_dehydrated_device),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events",
            post(dehydrated_device::get_events),
        )
        .route("/_matrix/client/v3/sync", get(sync::sync_events))
        .route("/_matrix/client/v3/createRoom", post(room::create_room))
        .route("/_matrix/client/v3/rooms/{roomId}/event/{eventId}", get(room::get_event))
        .route("/_matrix/client/v3/join/{roomIdOrAlias}", post(membership::join_by_id_or_alias))
        .route("/_matrix/client/v3/rooms/{roomId}/join", post(membership::join_by_id))
        .route("/_matrix/client/v3/rooms/{roomId}/invite", post(membership::invite))
        .route("/_matrix/client/v3/knock/{roomIdOrAlias}", post(membership::knock))
        .route("/_matrix/client/v3/rooms/{roomId}/leave", post(membership::leave))
        .route("/_matrix/client/v3/rooms/{roomId}/forget", post(membership::forget))
        .route("/_matrix/client/v3/rooms/{roomId}/kick", post(membership::kick))
        .route("/_matrix/client/v3/rooms/{roomId}/ban", post(membership::ban))
        .route("/_matrix/client/v3/rooms/{roomId}/unban", post(membership::unban))
        .route("/_matrix/client/v3/joined_rooms", get(membership::joined_rooms))
        .route("/_matrix/client/v3/rooms/{roomId}/members", get(membership::members))
        .route("/_matrix/client/v3/rooms/{roomId}/joined_members", get(membership::joined_members))
        .route("/_matrix/client/v3/rooms/{roomId}/state", get(state::get_all))
        .route(
            "/_matrix/client/v3/rooms/{roomId}/state/{eventType}",
            get(state::get_one).put(state::send),
        )
        .route(
            "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
            get(state::get_one).put(state::send),
        )
        // Clients address the empty state key with a trailing slash.
        .route(
            "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/",
            get(state::get_one).put(state::send),
        )
        .route("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", put(message::send))
        .route("/_matrix/client/v3/rooms/{roomId}/messages", get(message::messages))
        .route("/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}", put(redact::redact))
        .route("/_matrix/client/v3/rooms/{roomId}/context/{eventId}", get(context::get_context))
        .route(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}",
            get(relations::get_relations),
        )
        .route(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}",
            get(relations::get_relations),
        )
        .route(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
            get(relations::get_relations),
        )
        .route(
            "/_matrix/client/v3/directory/room/{roomAlias}",
            get(alias::get).put(alias::create).delete(alias::delete),
        )
        .route("/_matrix/client/v3/rooms/{roomId}/aliases", get(alias::room_aliases))
        .route(
            "/_matrix/client/v3/publicRooms",
            get(directory::get_public_rooms).post(directory::post_public_rooms),
        )
        .route(
            "/_matrix/client/v3/directory/list/room/{roomId}",
            get(directory::get_visibility).put(directory::set_visibility),
        )
        .route("/_matrix/client/v3/rooms/{roomId}/typing/{userId}", put(typing::set_typing))
        .route(
            "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}",
            post(receipt::create_receipt),
        )
        .route("/_matrix/client/v3/rooms/{roomId}/read_markers", post(receipt::set_read_markers))
        .merge(media_routes())
        .merge(super::admin_v1::verification::routes());

    client
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(services)
        // Request bodies are read by the `Ruma` extractor with the configured limit and an
        // `M_TOO_LARGE` error, because axum's own default limit responds in plain text.
        .layer(DefaultBodyLimit::disable())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            // The matched route, not the URI: the query string can carry an access token.
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map(|path| path.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".to_owned());
            tracing::info_span!(
                "request",
                method = %request.method(),
                route,
                user_id = tracing::field::Empty,
            )
        }))
        .layer(cors())
}

fn media_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/client/v1/media/config", get(authenticated_media::get_media_config))
        .route(
            "/_matrix/client/v1/media/download/{serverName}/{mediaId}",
            get(authenticated_media::get_content),
        )
        .route(
            "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}",
            get(authenticated_media::get_content_as_filename),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}",
            get(authenticated_media::get_content_thumbnail),
        )
        .route("/_matrix/client/v1/media/preview_url", get(authenticated_media::get_media_preview))
        .route("/_matrix/media/v1/create", post(media::create_mxc_uri))
        .route("/_matrix/media/v3/upload", post(media::create_content))
        .route("/_matrix/media/v3/upload/{serverName}/{mediaId}", put(media::create_content_async))
        .route("/_matrix/media/v3/config", get(media::get_media_config))
        .route("/_matrix/media/v3/download/{serverName}/{mediaId}", get(media::get_content))
        .route(
            "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}",
            get(media::get_content_as_filename),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{serverName}/{mediaId}",
            get(media::get_content_thumbnail),
        )
        .route("/_matrix/media/v3/preview_url", get(media::get_media_preview))
}

/// Builds the CORS headers the Client-Server API requires, so web clients on any origin can call it.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

async fn unrecognized(method: Method, uri: axum::http::Uri) -> Error {
    // The path only: the query string can carry an access token.
    tracing::debug!(%method, path = uri.path(), "unrecognized endpoint");
    Error::new(ErrorCode::Unrecognized { method_not_allowed: false }, "Unrecognized request")
}

async fn method_not_allowed() -> Error {
    Error::new(
        ErrorCode::Unrecognized { method_not_allowed: true },
        "This method is not allowed on this endpoint",
    )
}
