//! The user directory: finding people by name.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedUserId;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson};
use crate::service::error::ErrorKind;
use crate::service::Services;

#[derive(Deserialize)]
pub struct SearchRequest {
    search_term: String,
    #[serde(default, deserialize_with = "crate::service::rooms::present")]
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct SearchResponse {
    results: Vec<FoundUser>,
    limited: bool,
}

#[derive(Serialize)]
pub struct FoundUser {
    user_id: OwnedUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar_url: Option<String>,
}

/// # `POST /_matrix/client/v3/user_directory/search`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3user_directorysearch>
pub async fn search(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    let limit = match body.limit {
        None => 10,
        Some(n) if n > 0 => n as usize,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "limit must be positive",
            ))
        }
    };
    let (found, limited) = services
        .accounts
        .search_users(&auth.who.user_id, &body.search_term, limit)
        .await?;
    let results = found
        .into_iter()
        .map(|u| FoundUser {
            user_id: u.user_id,
            display_name: u.display_name,
            avatar_url: u.avatar_url,
        })
        .collect();
    Ok(Json(SearchResponse { results, limited }))
}
