//! One profile field by name (`/profile/{userId}/{keyName}`): display name
//! and avatar through their own handlers, which update room memberships,
//! the other fields (`m.tz`...) stored as given.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedUserId;
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::profile::{self, AvatarUrl, DisplayName, ProfileResponse};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::Services;

const DISPLAYNAME: &str = "displayname";
const AVATAR_URL: &str = "avatar_url";

/// # `GET /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3profileuseridkeyname>
pub async fn get(
    State(services): State<Arc<Services>>,
    MatrixPath((user_id, key)): MatrixPath<(OwnedUserId, String)>,
) -> ApiResult<Json<Map<String, Value>>> {
    let Json(ProfileResponse {
        displayname,
        avatar_url,
        mut fields,
    }) = profile::get_profile(State(services), MatrixPath(user_id)).await?;
    let value = match key.as_str() {
        DISPLAYNAME => displayname.map(Value::from),
        AVATAR_URL => avatar_url.map(Value::from),
        _ => fields.remove(&key),
    };
    let value = value.ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Profile field not set"))?;
    Ok(Json(Map::from_iter([(key, value)])))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3profileuseridkeyname>
pub async fn put(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, key)): MatrixPath<(OwnedUserId, String)>,
    MatrixJson(mut body): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<EmptyResponse>> {
    let value = match body.remove(&key) {
        Some(value) if body.is_empty() => value,
        _ => {
            return Err(ApiError::new(
                ErrorKind::BadJson,
                "The body must hold exactly the field named in the path",
            ))
        }
    };
    let shaped = |kind: &str| ApiError::new(ErrorKind::BadJson, format!("{kind} must be a string"));
    match key.as_str() {
        DISPLAYNAME => {
            let displayname = string_or_null(value).ok_or_else(|| shaped(DISPLAYNAME))?;
            let body = MatrixJson(DisplayName { displayname });
            profile::set_displayname(State(services), auth, MatrixPath(user_id), body).await
        }
        AVATAR_URL => {
            let avatar_url = string_or_null(value).ok_or_else(|| shaped(AVATAR_URL))?;
            let body = MatrixJson(AvatarUrl { avatar_url });
            profile::set_avatar_url(State(services), auth, MatrixPath(user_id), body).await
        }
        _ => {
            profile::own_profile(&auth, &user_id)?;
            services
                .accounts
                .set_profile_field(&user_id, &key, Some(value))
                .await?;
            Ok(Json(EmptyResponse {}))
        }
    }
}

/// `Some(None)` for `null`, `Some(Some(text))` for a string, else `None`.
fn string_or_null(value: Value) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        Value::String(text) => Some(Some(text)),
        _ => None,
    }
}

/// # `DELETE /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3profileuseridkeyname>
pub async fn delete(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, key)): MatrixPath<(OwnedUserId, String)>,
) -> ApiResult<Json<EmptyResponse>> {
    match key.as_str() {
        DISPLAYNAME => {
            let body = MatrixJson(DisplayName { displayname: None });
            profile::set_displayname(State(services), auth, MatrixPath(user_id), body).await
        }
        AVATAR_URL => {
            let body = MatrixJson(AvatarUrl { avatar_url: None });
            profile::set_avatar_url(State(services), auth, MatrixPath(user_id), body).await
        }
        _ => {
            profile::own_profile(&auth, &user_id)?;
            services
                .accounts
                .set_profile_field(&user_id, &key, None)
                .await?;
            Ok(Json(EmptyResponse {}))
        }
    }
}
