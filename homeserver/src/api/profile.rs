//! Profiles: display names and avatars.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath};
use crate::service::error::ErrorKind;
use crate::service::Services;

/// # `GET /_matrix/client/v3/profile/{userId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3profileuserid>
pub async fn get_profile(
    State(services): State<Arc<Services>>,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
) -> ApiResult<Json<Value>> {
    let profile = services.accounts.profile(&user_id).await?;
    let mut out = json!({});
    if let Some(name) = profile.displayname {
        out["displayname"] = json!(name);
    }
    if let Some(url) = profile.avatar_url {
        out["avatar_url"] = json!(url);
    }
    Ok(Json(out))
}

/// # `GET /_matrix/client/v3/profile/{userId}/displayname`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3profileuseriddisplayname>
pub async fn get_displayname(
    State(services): State<Arc<Services>>,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
) -> ApiResult<Json<Value>> {
    let profile = services.accounts.profile(&user_id).await?;
    match profile.displayname {
        Some(name) => Ok(Json(json!({"displayname": name}))),
        None => Ok(Json(json!({}))),
    }
}

/// # `GET /_matrix/client/v3/profile/{userId}/avatar_url`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3profileuseridavatar_url>
pub async fn get_avatar_url(
    State(services): State<Arc<Services>>,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
) -> ApiResult<Json<Value>> {
    let profile = services.accounts.profile(&user_id).await?;
    match profile.avatar_url {
        Some(url) => Ok(Json(json!({"avatar_url": url}))),
        None => Ok(Json(json!({}))),
    }
}

#[derive(Debug, Deserialize)]
pub struct DisplayName {
    pub displayname: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AvatarUrl {
    pub avatar_url: Option<String>,
}

fn own_profile(auth: &Auth, user_id: &UserId) -> ApiResult<()> {
    if auth.who.user_id != user_id {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "You can only change your own profile",
        ));
    }
    Ok(())
}

/// # `PUT /_matrix/client/v3/profile/{userId}/displayname`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3profileuseriddisplayname>
pub async fn set_displayname(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(body): MatrixJson<DisplayName>,
) -> ApiResult<Json<Value>> {
    own_profile(&auth, &user_id)?;
    if body.displayname.as_deref().is_some_and(|n| n.len() > 256) {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "Display name is too long",
        ));
    }
    services
        .accounts
        .set_displayname(&user_id, body.displayname.as_deref())
        .await?;
    services.rooms.update_profile_in_rooms(&auth.who).await?;
    Ok(Json(json!({})))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3profileuseridavatar_url>
pub async fn set_avatar_url(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(body): MatrixJson<AvatarUrl>,
) -> ApiResult<Json<Value>> {
    own_profile(&auth, &user_id)?;
    if body
        .avatar_url
        .as_deref()
        .is_some_and(|u| !u.is_empty() && !u.starts_with("mxc://"))
    {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "avatar_url must be an mxc:// URI",
        ));
    }
    services
        .accounts
        .set_avatar_url(&user_id, body.avatar_url.as_deref())
        .await?;
    services.rooms.update_profile_in_rooms(&auth.who).await?;
    Ok(Json(json!({})))
}
