//! The X-Matrix extractor: what [`super::super::extract::Auth`] is for
//! clients, [`Signed`] is for servers. It reads the body (within the
//! request limit), checks the signature over method, URI and body, and
//! hands the handler the origin and the parsed body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request};
use ruma_common::OwnedServerName;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::service::error::ErrorKind;
use crate::service::Services;

/// A request signed by another server: its name and the request's body.
pub struct Signed<T> {
    pub origin: OwnedServerName,
    pub body: T,
}

/// The body of a request that has none (GET).
#[derive(Deserialize)]
pub struct NoBody {}

impl<T> FromRequest<Arc<Services>> for Signed<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self, ApiError> {
        let Some(federation) = services.federation.clone() else {
            return Err(ApiError::new(
                ErrorKind::Unrecognized,
                "This server does not federate",
            ));
        };
        let (mut parts, body) = req.into_parts();
        // The signature covers the URI as sent, before any routing rewrite.
        if let Some(OriginalUri(uri)) = parts.extensions.get::<OriginalUri>().cloned() {
            parts.uri = uri;
        }
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), services)
            .await
            .map_err(|_| ApiError::new(ErrorKind::TooLarge, "Request body is too large"))?;
        let signed = http::Request::from_parts(parts, bytes.as_ref());
        let origin = federation.authenticate(&signed).await.map_err(|err| {
            tracing::info!(error = %err, "refused a federation request");
            ApiError::new(ErrorKind::Unauthorized, err.to_string())
        })?;
        federation.heard_from(&origin);
        let json: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let body = serde_json::from_slice(json).map_err(|e| {
            ApiError::new(ErrorKind::BadJson, format!("Body has the wrong shape: {e}"))
        })?;
        Ok(Signed { origin, body })
    }
}
