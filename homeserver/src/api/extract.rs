//! Extractors that parse and authenticate requests, answering every failure
//! with a Matrix error instead of axum's plain-text rejections.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;

use super::error::ApiError;
use crate::service::error::ErrorKind;
use crate::service::rooms::Requester;
use crate::service::Services;

/// The authenticated caller, with the token it presented.
pub struct Auth {
    pub who: Requester,
    pub token: String,
}

impl Auth {
    /// `M_FORBIDDEN` unless `user_id` is the caller: for what only a user
    /// may read or change of their own.
    pub fn must_be(&self, user_id: &ruma_common::UserId) -> Result<(), ApiError> {
        if self.who.user_id != user_id {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "Cannot access another user's data",
            ));
        }
        Ok(())
    }
}

/// The access token from `Authorization: Bearer` or the `access_token` query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token=").map(percent_decode))
    })
}

fn percent_decode(input: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<S> FromRequestParts<S> for Auth
where
    S: Send + Sync,
    Arc<Services>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let services = Arc::<Services>::from_ref(state);
        let token = access_token(parts)
            .ok_or_else(|| ApiError::new(ErrorKind::MissingToken, "Missing access token"))?;
        let who = services.accounts.authenticate(&token).await?;
        // Where the device was last seen, for `/devices`.
        if let Ok(ConnectInfo(peer)) =
            ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await
        {
            services.accounts.seen(&who, peer.ip());
        }
        Ok(Auth { who, token })
    }
}

/// A JSON body: `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it has the
/// wrong shape, `M_TOO_LARGE` past the body limit.
pub struct MatrixJson<T>(pub T);

impl<S, T> FromRequest<S> for MatrixJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(ErrorKind::TooLarge, "Request body is too large")
                } else {
                    ApiError::new(ErrorKind::NotJson, "Could not read the request body")
                }
            })?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(ErrorKind::NotJson, format!("Body is not valid JSON: {e}"))
        })?;
        serde_json::from_value(value).map(MatrixJson).map_err(|e| {
            ApiError::new(ErrorKind::BadJson, format!("Body has the wrong shape: {e}"))
        })
    }
}

/// Path parameters, refused with `M_INVALID_PARAM` when malformed.
pub struct MatrixPath<T>(pub T);

impl<S, T> FromRequestParts<S> for MatrixPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| MatrixPath(v))
            .map_err(|e: PathRejection| ApiError::new(ErrorKind::InvalidParam, e.body_text()))
    }
}

/// Query parameters, refused with `M_INVALID_PARAM` when malformed.
pub struct MatrixQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for MatrixQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| MatrixQuery(v))
            .map_err(|e: QueryRejection| ApiError::new(ErrorKind::InvalidParam, e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_query_tokens() {
        assert_eq!(percent_decode("abc%2Bdef"), "abc+def");
        assert_eq!(percent_decode("%e6%97%a5%"), "日%");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}
