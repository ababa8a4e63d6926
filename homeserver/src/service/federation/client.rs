//! Requests to other servers: discovery, X-Matrix signing, the outbound
//! guard, timeouts and a size cap on every answer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ruma_common::api::auth_scheme::NoAuthentication;
use ruma_common::api::error::FromHttpResponseError;
use ruma_common::api::path_builder::SinglePath;
use ruma_common::api::{IncomingResponseExt, OutgoingRequest, OutgoingRequestExt};
use ruma_common::{OwnedServerName, ServerName};
use ruma_federation_api::authentication::{ServerSignatures, XMatrixSigningInput};

use super::discovery::{Destination, Discovery};
use super::guard::{check_literal, GuardedResolver, SrvTargets};
use super::FederationError;
use crate::config::federation::FederationConfig;
use crate::service::keys::ServerKey;

/// Connecting takes at most this long; a whole request at most `TIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(30);
/// Answers above this size are refused (endpoints that return room state
/// will get their own, larger cap).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How much one request may take: time and answer size.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        timeout: TIMEOUT,
        max_bytes: MAX_RESPONSE_BYTES,
    };
}

pub struct FederationClient {
    http: reqwest::Client,
    discovery: Discovery,
    server_name: OwnedServerName,
    key: Arc<ServerKey>,
    allow_private: bool,
}

impl FederationClient {
    pub fn new(
        config: &FederationConfig,
        server_name: OwnedServerName,
        key: Arc<ServerKey>,
    ) -> anyhow::Result<Self> {
        let srv_targets = SrvTargets::default();
        let builder = |srv_targets: SrvTargets, redirects: usize| {
            reqwest::Client::builder()
                .dns_resolver(Arc::new(GuardedResolver {
                    allow_private: config.allow_private,
                    srv_targets,
                }))
                .danger_accept_invalid_certs(config.insecure_skip_verify)
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(TIMEOUT)
                .redirect(redirect_policy(redirects, config.allow_private))
                .user_agent(concat!("Tern/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let http = builder(srv_targets.clone(), 0)?;
        // `.well-known` may redirect (the spec follows 30x); its host never
        // goes through an SRV mapping.
        let well_known = builder(SrvTargets::default(), 3)?;
        Ok(Self {
            http,
            discovery: Discovery::new(well_known, srv_targets, config.allow_private),
            server_name,
            key,
            allow_private: config.allow_private,
        })
    }

    /// Sends a request signed with X-Matrix to `destination`.
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        self.send_limited(destination, request, Limits::DEFAULT)
            .await
    }

    /// [`Self::send`] with other limits (media, room state).
    pub async fn send_limited<R>(
        &self,
        destination: &ServerName,
        request: R,
        limits: Limits,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let dest = self.destination(destination).await?;
        let input = XMatrixSigningInput::new(
            self.server_name.clone(),
            destination.to_owned(),
            &self.key.pair,
        );
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&dest.base_url, input, ())
            .map_err(|e| FederationError::Local(e.to_string()))?;
        self.execute::<R>(destination, http_request, limits).await
    }

    /// Sends a request that needs no signature (the key server).
    pub async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = NoAuthentication, PathBuilder = SinglePath>,
    {
        let dest = self.destination(destination).await?;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&dest.base_url, (), ())
            .map_err(|e| FederationError::Local(e.to_string()))?;
        self.execute::<R>(destination, http_request, Limits::DEFAULT)
            .await
    }

    /// A plain GET of a URL another server pointed us at (a media
    /// `Location`): no signature, the same guard, timeout and cap.
    pub async fn fetch_url(&self, url: &str, limits: Limits) -> Result<Vec<u8>, FederationError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| FederationError::Refused(format!("bad URL {url:?}: {e}")))?;
        if parsed.scheme() != "https" && parsed.scheme() != "http" {
            return Err(FederationError::Refused(format!(
                "not an http(s) URL: {url}"
            )));
        }
        check_literal(parsed.host_str().unwrap_or_default(), self.allow_private)
            .map_err(FederationError::Refused)?;
        let response = self
            .http
            .get(parsed)
            .timeout(limits.timeout)
            .send()
            .await
            .map_err(|e| FederationError::Unreachable {
                server: ruma_common::owned_server_name!("unknown.invalid"),
                cause: chain(&e),
            })?;
        if !response.status().is_success() {
            return Err(FederationError::Refused(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        read_capped(response, limits.max_bytes).await
    }

    async fn destination(&self, destination: &ServerName) -> Result<Destination, FederationError> {
        if destination == self.server_name {
            return Err(FederationError::Local(
                "a request to this server itself".into(),
            ));
        }
        let dest = self.discovery.resolve(destination).await?;
        let host = reqwest::Url::parse(&dest.base_url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        check_literal(&host, self.allow_private).map_err(FederationError::Refused)?;
        Ok(dest)
    }

    async fn execute<R: OutgoingRequest>(
        &self,
        destination: &ServerName,
        http_request: http::Request<Vec<u8>>,
        limits: Limits,
    ) -> Result<R::IncomingResponse, FederationError> {
        let mut request = reqwest::Request::try_from(http_request)
            .map_err(|e| FederationError::Local(e.to_string()))?;
        *request.timeout_mut() = Some(limits.timeout);
        let unreachable = |err: reqwest::Error| FederationError::Unreachable {
            server: destination.to_owned(),
            cause: chain(&err),
        };
        let response = self.http.execute(request).await.map_err(unreachable)?;
        let status = response.status();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let body = read_capped(response, limits.max_bytes).await?;
        let mut http_response = http::Response::builder().status(status.as_u16());
        if let Some(content_type) = content_type {
            // Multipart answers (media) carry their boundary here.
            http_response = http_response.header(http::header::CONTENT_TYPE, content_type);
        }
        let http_response = http_response
            .body(body.as_slice())
            .map_err(|e| FederationError::Local(e.to_string()))?;
        R::IncomingResponse::try_from_http_response(http_response).map_err(|err| match err {
            FromHttpResponseError::Server(error) => FederationError::Remote {
                server: destination.to_owned(),
                status: status.as_u16(),
                error: format!("{error}"),
            },
            other => FederationError::BadResponse {
                server: destination.to_owned(),
                cause: other.to_string(),
            },
        })
    }
}

/// Reads a response body, refusing one larger than `cap` without reading
/// past it.
pub async fn read_capped(
    response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, FederationError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(FederationError::TooLarge { cap });
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FederationError::BadResponse {
            server: ruma_common::owned_server_name!("unknown.invalid"),
            cause: chain(&e),
        })?;
        if body.len() + chunk.len() > cap {
            return Err(FederationError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Redirects are followed only where asked for, and never to an internal
/// IP literal (names are checked by the resolver).
fn redirect_policy(max: usize, allow_private: bool) -> reqwest::redirect::Policy {
    if max == 0 {
        return reqwest::redirect::Policy::none();
    }
    reqwest::redirect::Policy::custom(move |attempt| {
        let host = attempt.url().host_str().unwrap_or_default().to_owned();
        if attempt.previous().len() >= max {
            attempt.error("too many redirects")
        } else if attempt.url().scheme() != "https" {
            attempt.error("redirect away from https")
        } else if let Err(refused) = check_literal(&host, allow_private) {
            attempt.error(refused)
        } else {
            attempt.follow()
        }
    })
}

/// An error with its causes, for logs (reqwest hides the interesting part
/// in its sources).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
