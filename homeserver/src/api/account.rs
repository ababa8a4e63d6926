//! Registration, login, logout and account management.

use ruma_common::{OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixQuery};
use super::EmptyResponse;
use crate::service::accounts::uia::{AuthData, UserIdentifier};
use crate::service::accounts::Session;
use crate::service::error::ErrorKind;
use crate::service::rate_limit::Action;
use crate::service::Services;

#[derive(Debug, Default, Deserialize)]
pub struct RegisterRequest {
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth: Option<AuthData>,
    pub device_id: Option<OwnedDeviceId>,
    pub initial_device_display_name: Option<String>,
    #[serde(default)]
    pub inhibit_login: bool,
}

#[derive(Debug, Deserialize)]
pub struct KindQuery {
    pub kind: Option<String>,
}

fn uia_required(stage: &str) -> ApiError {
    let session = {
        use rand::Rng;
        rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect::<String>()
    };
    ApiError::new(
        ErrorKind::UiaRequired(json!({
            "flows": [{"stages": [stage]}],
            "params": {},
            "session": session,
        })),
        "Authentication required",
    )
}

/// The session a registration or login opens (only `user_id` when
/// registration inhibits login).
#[derive(Serialize)]
pub struct LoginResponse {
    pub user_id: OwnedUserId,
    #[serde(flatten)]
    pub session: Option<SessionTokens>,
}

#[derive(Serialize)]
pub struct SessionTokens {
    pub access_token: String,
    pub device_id: OwnedDeviceId,
    pub home_server: OwnedServerName,
}

impl LoginResponse {
    fn new(session: Session, home_server: &ServerName) -> Self {
        let tokens = session.access_token.map(|access_token| SessionTokens {
            access_token,
            device_id: session.device_id,
            home_server: home_server.to_owned(),
        });
        Self {
            user_id: session.user_id,
            session: tokens,
        }
    }
}

/// # `POST /_matrix/client/v3/register`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3register>
pub async fn register(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    MatrixQuery(query): MatrixQuery<KindQuery>,
    MatrixJson(body): MatrixJson<RegisterRequest>,
) -> ApiResult<Json<LoginResponse>> {
    if query.kind.as_deref() == Some("guest") {
        return Err(ApiError::new(
            ErrorKind::GuestAccessForbidden,
            "Guest access is not enabled on this server",
        ));
    }
    if query.kind.as_deref().is_some_and(|k| k != "user") {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "kind must be user or guest",
        ));
    }
    if !services.config.allow_registration {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "Registration is disabled",
        ));
    }
    if let Some(name) = &body.username {
        services.accounts.check_available(name).await?;
    }
    let stage = body.auth.as_ref().and_then(|a| a.kind.as_deref());
    if stage != Some("m.login.dummy") {
        return Err(uia_required("m.login.dummy"));
    }
    services
        .rate_limiter
        .check(Action::Register, &peer.ip().to_string())
        .await?;
    if body.password.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "A password is required",
        ));
    }
    let session = services
        .accounts
        .register(
            body.username.as_deref(),
            body.password.as_deref(),
            body.device_id.as_deref(),
            body.initial_device_display_name.as_deref(),
            body.inhibit_login,
        )
        .await?;
    Ok(Json(LoginResponse::new(
        session,
        &services.config.server_name,
    )))
}

#[derive(Debug, Deserialize)]
pub struct AvailableQuery {
    pub username: String,
}

/// # `GET /_matrix/client/v3/register/available`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3registeravailable>
pub async fn register_available(
    State(services): State<Arc<Services>>,
    MatrixQuery(query): MatrixQuery<AvailableQuery>,
) -> ApiResult<Json<AvailableResponse>> {
    services.accounts.check_available(&query.username).await?;
    Ok(Json(AvailableResponse { available: true }))
}

#[derive(Serialize)]
pub struct AvailableResponse {
    pub available: bool,
}

/// # `GET /_matrix/client/v3/login`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3login>
pub async fn login_flows() -> Json<LoginFlowsResponse> {
    let flows = vec![LoginFlow {
        kind: "m.login.password",
    }];
    Json(LoginFlowsResponse { flows })
}

#[derive(Serialize)]
pub struct LoginFlowsResponse {
    pub flows: Vec<LoginFlow>,
}

#[derive(Serialize)]
pub struct LoginFlow {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub identifier: Option<UserIdentifier>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub device_id: Option<OwnedDeviceId>,
    pub initial_device_display_name: Option<String>,
}

fn identified_user(identifier: Option<&UserIdentifier>, user: Option<&str>) -> ApiResult<String> {
    match (identifier, user) {
        (Some(id), _) if id.kind == "m.id.user" => id
            .user
            .clone()
            .ok_or_else(|| ApiError::new(ErrorKind::BadJson, "identifier.user is required")),
        (Some(_), _) => Err(ApiError::new(
            ErrorKind::InvalidParam,
            "Only m.id.user identifiers are supported",
        )),
        (None, Some(user)) => Ok(user.to_owned()),
        (None, None) => Err(ApiError::new(
            ErrorKind::BadJson,
            "A user identifier is required",
        )),
    }
}

/// # `POST /_matrix/client/v3/login`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3login>
pub async fn login(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    MatrixJson(body): MatrixJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    if body.kind != "m.login.password" {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "Unsupported login type",
        ));
    }
    services
        .rate_limiter
        .check(Action::Login, &peer.ip().to_string())
        .await?;
    let user = identified_user(body.identifier.as_ref(), body.user.as_deref())?;
    let password = body
        .password
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorKind::BadJson, "password is required"))?;
    let session = services
        .accounts
        .login(
            &user,
            password,
            body.device_id.as_deref(),
            body.initial_device_display_name.as_deref(),
        )
        .await?;
    Ok(Json(LoginResponse::new(
        session,
        &services.config.server_name,
    )))
}

/// # `POST /_matrix/client/v3/logout`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3logout>
pub async fn logout(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<EmptyResponse>> {
    services.accounts.logout(&auth.who).await?;
    services
        .pushers
        .remove_for_logout(&auth.who.user_id, Some(&auth.who.device_id), None)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/logout/all`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3logoutall>
pub async fn logout_all(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .accounts
        .logout_all(&auth.who.user_id, None)
        .await?;
    services
        .pushers
        .remove_for_logout(&auth.who.user_id, None, None)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/v3/account/whoami`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3accountwhoami>
pub async fn whoami(auth: Auth) -> Json<WhoamiResponse> {
    Json(WhoamiResponse {
        user_id: auth.who.user_id,
        device_id: auth.who.device_id,
        is_guest: false,
    })
}

#[derive(Serialize)]
pub struct WhoamiResponse {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
}

#[derive(Debug, Deserialize)]
pub struct PasswordRequest {
    pub new_password: String,
    pub logout_devices: Option<bool>,
    pub auth: Option<AuthData>,
}

/// # `POST /_matrix/client/v3/account/password`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3accountpassword>
pub async fn change_password(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<PasswordRequest>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .accounts
        .interactive_auth(&auth.who, "change_password", body.auth.as_ref())
        .await?;
    services
        .accounts
        .change_password(
            &auth.who,
            &body.new_password,
            body.logout_devices.unwrap_or(true),
        )
        .await?;
    if body.logout_devices.unwrap_or(true) {
        services
            .pushers
            .remove_for_logout(&auth.who.user_id, None, Some(&auth.who.device_id))
            .await?;
    }
    Ok(Json(EmptyResponse {}))
}
