//! /_caduceus/directory/v1: the directory REST API for hospital systems, described by the
//! OpenAPI document served at /_caduceus/directory/v1/openapi.json.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use caduceus_directory::{FacetDimension, SearchRequest, VerificationLevel};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::service::{directory, Services};

const OPENAPI: &str = include_str!("directory_v1.openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn search(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    directory::authorize_api(&services, bearer(&headers)?)?;
    let request = parse_search(query.as_deref().unwrap_or_default())?;

    let search_services = services.clone();
    let results =
        tokio::task::spawn_blocking(move || search_services.directory.search(&request)).await??;

    let facets: serde_json::Map<String, Value> = results
        .facets
        .iter()
        .map(|(dimension, counts)| (dimension_name(*dimension).to_owned(), json!(counts)))
        .collect();
    let hits: Vec<Value> = results.hits.iter().map(|hit| json!(hit.entry)).collect();
    Ok(Json(json!({
        "hits": hits,
        "facets": facets,
        "total": results.total,
        "next_cursor": results.next_cursor,
    })))
}

pub async fn get_user(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    directory::authorize_api(&services, bearer(&headers)?)?;
    let lookup_services = services.clone();
    let entry =
        tokio::task::spawn_blocking(move || lookup_services.directory.listed_entry(&user_id))
            .await??;
    match entry {
        Some(entry) => Ok(Json(json!(entry))),
        None => Err(Error::not_found("No listed directory entry exists for this user")),
    }
}

/// Reads the token of an `Authorization: Bearer` header; another scheme is `M_MISSING_TOKEN`.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().ok().and_then(|value| value.strip_prefix("Bearer "));
    match value {
        Some(token) => Ok(Some(token.trim())),
        None => Err(Error::new(
            crate::error::ErrorCode::MissingToken,
            "The Authorization header must use the Bearer scheme",
        )),
    }
}

fn parse_search(query: &str) -> Result<SearchRequest> {
    let mut request =
        SearchRequest { facets: FacetDimension::ALL.to_vec(), ..SearchRequest::default() };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        let filters = &mut request.filters;
        match key.as_ref() {
            "q" => request.query = value,
            "specialty" => filters.specialties.push(value),
            "profession" => filters.professions.push(value),
            "organisation" => filters.organisations.push(value),
            "city" => filters.cities.push(value),
            "region" => filters.regions.push(value),
            "country" => filters.countries.push(value),
            "level" => {
                let level = VerificationLevel::parse(&value).ok_or_else(|| {
                    Error::invalid_param(format!(
                        "Invalid level {value:?}; use pending, identity or medical"
                    ))
                })?;
                filters.levels.push(level);
            }
            "limit" => {
                request.limit = value.parse().map_err(|_| {
                    Error::invalid_param(format!(
                        "Invalid limit {value:?}; use a number from 1 to 100"
                    ))
                })?;
            }
            "cursor" => request.cursor = Some(value),
            _ => {}
        }
    }
    Ok(request)
}

fn dimension_name(dimension: FacetDimension) -> &'static str {
    match dimension {
        FacetDimension::Specialty => "specialty",
        FacetDimension::Profession => "profession",
        FacetDimension::Organisation => "organisation",
        FacetDimension::City => "city",
        FacetDimension::Region => "region",
        FacetDimension::Country => "country",
        FacetDimension::Level => "level",
    }
}
