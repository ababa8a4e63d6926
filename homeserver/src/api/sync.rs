//! `/sync` and filters.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ruma_common::OwnedUserId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath, MatrixQuery};
use super::sse;
use crate::service::error::ErrorKind;
use crate::service::presence::parse_state;
use crate::service::sync::{Filter, SyncRequest};
use crate::service::token::SyncToken;
use crate::service::Services;

/// Longest a client may ask a sync to wait.
const MAX_TIMEOUT_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    pub since: Option<String>,
    pub timeout: Option<u64>,
    pub full_state: Option<bool>,
    pub filter: Option<String>,
    pub set_presence: Option<String>,
}

fn parse_filter(value: Value) -> ApiResult<Filter> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(ErrorKind::BadJson, format!("Invalid filter: {e}")))
}

/// # `GET /_matrix/client/v3/sync`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3sync>
///
/// With `Accept: text/event-stream`, the SSE stream instead (`sse.rs`).
pub async fn sync(
    State(services): State<Arc<Services>>,
    auth: Auth,
    headers: HeaderMap,
    MatrixQuery(query): MatrixQuery<SyncQuery>,
) -> ApiResult<Response> {
    let request = sync_request(&services, &auth, query).await?;
    if sse::wants_stream(&headers) {
        return sse::stream(services, auth.who, request, &headers).await;
    }
    Ok(Json(services.sync.sync(&auth.who, &request).await?).into_response())
}

/// The parameters shared by the long-poll and the stream, checked.
pub async fn sync_request(
    services: &Services,
    auth: &Auth,
    query: SyncQuery,
) -> ApiResult<SyncRequest> {
    let set_presence = query
        .set_presence
        .as_deref()
        .map(parse_state)
        .transpose()
        .map_err(|_| ApiError::new(ErrorKind::InvalidParam, "Invalid set_presence"))?;
    let filter = match query.filter.as_deref() {
        None => Filter::default(),
        Some(text) if text.trim_start().starts_with('{') => {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                ApiError::new(ErrorKind::NotJson, format!("Invalid filter JSON: {e}"))
            })?;
            parse_filter(value)?
        }
        Some(id) => {
            let id: i64 = id
                .parse()
                .map_err(|_| ApiError::new(ErrorKind::InvalidParam, "Invalid filter id"))?;
            let stored = services
                .accounts
                .get_filter(&auth.who.user_id, id)
                .await?
                .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Unknown filter"))?;
            parse_filter(stored)?
        }
    };
    let since = query
        .since
        .as_deref()
        .map(str::parse::<SyncToken>)
        .transpose()?;
    Ok(SyncRequest {
        since,
        timeout: Duration::from_millis(query.timeout.unwrap_or(0).min(MAX_TIMEOUT_MS)),
        full_state: query.full_state.unwrap_or(false),
        filter,
        set_presence,
        acknowledge: true,
    })
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3useruseridfilter>
pub async fn create_filter(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(body): MatrixJson<Value>,
) -> ApiResult<Json<FilterIdResponse>> {
    auth.must_be(&user_id)?;
    parse_filter(body.clone())?;
    let id = services.accounts.save_filter(&user_id, &body).await?;
    let filter_id = id.to_string();
    Ok(Json(FilterIdResponse { filter_id }))
}

#[derive(Serialize)]
pub struct FilterIdResponse {
    pub filter_id: String,
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3useruseridfilterfilterid>
pub async fn get_filter(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, filter_id)): MatrixPath<(OwnedUserId, String)>,
) -> ApiResult<Json<Value>> {
    auth.must_be(&user_id)?;
    let not_found = || ApiError::new(ErrorKind::NotFound, "Unknown filter");
    let id: i64 = filter_id.parse().map_err(|_| not_found())?;
    let filter = services
        .accounts
        .get_filter(&user_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(filter))
}
