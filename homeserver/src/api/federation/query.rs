//! `GET /_matrix/federation/v1/query/{profile,directory}` and
//! `publicRooms`: what other servers ask about our users, aliases and
//! public rooms.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomAliasId, OwnedServerName, OwnedUserId};
use serde::Deserialize;

use super::auth::{NoBody, Signed};
use crate::api::directory::{list_public, AliasResponse, PublicRoomsBody, PublicRoomsResponse};
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::MatrixQuery;
use crate::api::profile::ProfileResponse;
use crate::service::error::ErrorKind;
use crate::service::Services;

#[derive(Deserialize)]
pub struct ProfileQuery {
    user_id: OwnedUserId,
    #[serde(default)]
    field: Option<String>,
}

/// # `GET /_matrix/federation/v1/query/profile`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1queryprofile>
pub async fn profile(
    State(services): State<Arc<Services>>,
    MatrixQuery(query): MatrixQuery<ProfileQuery>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<ProfileResponse>> {
    tracing::debug!(%origin, user_id = %query.user_id, "profile query");
    if query.user_id.server_name() != services.config.server_name {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "That user is not on this server",
        ));
    }
    let profile = services.accounts.profile(&query.user_id).await?;
    let mut fields = services.accounts.profile_fields(&query.user_id).await?;
    let (displayname, avatar_url, fields) = match query.field.as_deref() {
        None => (profile.displayname, profile.avatar_url, fields),
        Some("displayname") => (profile.displayname, None, Default::default()),
        Some("avatar_url") => (None, profile.avatar_url, Default::default()),
        Some(field) => {
            let one = fields.remove_entry(field).into_iter().collect();
            (None, None, one)
        }
    };
    Ok(Json(ProfileResponse {
        displayname,
        avatar_url,
        fields,
    }))
}

#[derive(Deserialize)]
pub struct DirectoryQuery {
    room_alias: OwnedRoomAliasId,
}

/// # `GET /_matrix/federation/v1/query/directory`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1querydirectory>
pub async fn directory(
    State(services): State<Arc<Services>>,
    MatrixQuery(query): MatrixQuery<DirectoryQuery>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<AliasResponse>> {
    tracing::debug!(%origin, alias = %query.room_alias, "directory query");
    let ours: &OwnedServerName = &services.config.server_name;
    if query.room_alias.server_name() != ours {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "That alias is not on this server",
        ));
    }
    let room_id = services.rooms.resolve_alias(&query.room_alias).await?;
    Ok(Json(AliasResponse {
        room_id,
        servers: vec![ours.clone()],
    }))
}

/// # `GET /_matrix/federation/v1/publicRooms`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1publicrooms>
pub async fn public_rooms(
    State(services): State<Arc<Services>>,
    MatrixQuery(query): MatrixQuery<PublicRoomsBody>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<PublicRoomsResponse>> {
    tracing::debug!(%origin, "public rooms over federation");
    list_public(&services, query).await
}

/// # `POST /_matrix/federation/v1/publicRooms`
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixfederationv1publicrooms>
///
/// The `filter` is not applied yet: the whole directory pages through.
pub async fn public_rooms_post(
    State(services): State<Arc<Services>>,
    Signed { origin, body }: Signed<PublicRoomsBody>,
) -> ApiResult<Json<PublicRoomsResponse>> {
    tracing::debug!(%origin, "public rooms over federation");
    list_public(&services, body).await
}
