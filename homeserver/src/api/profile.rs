//! Profiles: display names and avatars.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::federation::not_federating;
use crate::service::Services;

/// A profile, or one field of it: what is unset is left out.
#[derive(Serialize)]
pub struct ProfileResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// The other fields (`m.tz`...), by name.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// # `GET /_matrix/client/v3/profile/{userId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3profileuserid>
pub async fn get_profile(
    State(services): State<Arc<Services>>,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
) -> ApiResult<Json<ProfileResponse>> {
    if user_id.server_name() != services.config.server_name {
        let federation = services.federation.as_ref().ok_or_else(not_federating)?;
        let profile = federation.query_profile(&user_id).await?;
        return Ok(Json(ProfileResponse {
            displayname: profile.displayname,
            avatar_url: profile.avatar_url,
            fields: Map::new(),
        }));
    }
    let profile = services.accounts.profile(&user_id).await?;
    Ok(Json(ProfileResponse {
        displayname: profile.displayname,
        avatar_url: profile.avatar_url,
        fields: services.accounts.profile_fields(&user_id).await?,
    }))
}

#[derive(Debug, Deserialize)]
pub struct DisplayName {
    pub displayname: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AvatarUrl {
    pub avatar_url: Option<String>,
}

pub(super) fn own_profile(auth: &Auth, user_id: &UserId) -> ApiResult<()> {
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
) -> ApiResult<Json<EmptyResponse>> {
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
    Ok(Json(EmptyResponse {}))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3profileuseridavatar_url>
pub async fn set_avatar_url(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(body): MatrixJson<AvatarUrl>,
) -> ApiResult<Json<EmptyResponse>> {
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
    Ok(Json(EmptyResponse {}))
}
