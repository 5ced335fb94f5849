//! /_matrix/media/*: uploads (`/v3/upload`, `/v1/create`, `PUT /v3/upload/...`), the upload
//! limit, and the unauthenticated downloads that Matrix 1.11 replaced and this server keeps
//! frozen.

#![allow(deprecated)] // The frozen legacy endpoints use ruma's deprecated request types.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma::api::client::media::{
    create_content::v3 as create_content_v3, create_content_async::v3 as create_content_async_v3,
    create_mxc_uri::v1 as create_mxc_uri_v1, get_content::v3 as get_content_v3,
    get_content_as_filename::v3 as get_content_as_filename_v3,
    get_content_thumbnail::v3 as get_content_thumbnail_v3,
    get_media_config::v3 as get_media_config_v3, get_media_preview::v3 as get_media_preview_v3,
};
use ruma::{MilliSecondsSinceUnixEpoch, UInt};
use serde_json::{json, Value};

use super::authenticated_media::{upload_size, MediaResponse};
use crate::api::ruma::{Ruma, RumaResponse, RumaUpload};
use crate::error::Result;
use crate::service::media::UploadInfo;
use crate::service::Services;

pub async fn create_content(
    State(services): State<Arc<Services>>,
    mut request: RumaUpload<create_content_v3::Request>,
) -> Result<RumaResponse<create_content_v3::Response>> {
    let info = UploadInfo {
        content_type: request.body.content_type.take(),
        file_name: request.body.filename.take(),
    };
    let content_uri =
        services.media.upload(&request.sender.user_id, info, &mut request.content).await?;
    Ok(create_content_v3::Response::new(content_uri).into())
}

pub async fn create_mxc_uri(
    State(services): State<Arc<Services>>,
    request: Ruma<create_mxc_uri_v1::Request>,
) -> Result<RumaResponse<create_mxc_uri_v1::Response>> {
    let sender = request.sender()?;
    let reservation = services.media.reserve(&sender.user_id)?;
    let mut response = create_mxc_uri_v1::Response::new(reservation.content_uri);
    response.unused_expires_at =
        UInt::try_from(reservation.unused_expires_ts).ok().map(MilliSecondsSinceUnixEpoch);
    Ok(response.into())
}

pub async fn create_content_async(
    State(services): State<Arc<Services>>,
    mut request: RumaUpload<create_content_async_v3::Request>,
) -> Result<Json<Value>> {
    let body = &mut request.body;
    let info =
        UploadInfo { content_type: body.content_type.take(), file_name: body.filename.take() };
    services
        .media
        .upload_reserved(
            &request.sender.user_id,
            &body.server_name,
            &body.media_id,
            info,
            &mut request.content,
        )
        .await?;
    // The response is an empty object; ruma's type for it has no public constructor.
    Ok(Json(json!({})))
}

pub async fn get_media_config(
    State(services): State<Arc<Services>>,
    _request: Ruma<get_media_config_v3::Request>,
) -> Result<RumaResponse<get_media_config_v3::Response>> {
    Ok(get_media_config_v3::Response::new(upload_size(&services)).into())
}

pub async fn get_content(
    State(services): State<Arc<Services>>,
    _request: Ruma<get_content_v3::Request>,
) -> Result<MediaResponse> {
    Ok(MediaResponse(services.media.download_unauthenticated()?))
}

pub async fn get_content_as_filename(
    State(services): State<Arc<Services>>,
    _request: Ruma<get_content_as_filename_v3::Request>,
) -> Result<MediaResponse> {
    Ok(MediaResponse(services.media.download_unauthenticated()?))
}

pub async fn get_content_thumbnail(
    State(services): State<Arc<Services>>,
    _request: Ruma<get_content_thumbnail_v3::Request>,
) -> Result<MediaResponse> {
    Ok(MediaResponse(services.media.download_unauthenticated()?))
}

pub async fn get_media_preview(
    State(services): State<Arc<Services>>,
    request: Ruma<get_media_preview_v3::Request>,
) -> Result<RumaResponse<get_media_preview_v3::Response>> {
    services.media.preview_url(&request.body.url)?;
    Ok(get_media_preview_v3::Response::new().into())
}
