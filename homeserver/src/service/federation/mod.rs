//! Federation: this server among other Matrix servers (the Server-Server
//! API). Built only when federation is configured; without it the server
//! says at start that it is an island and refuses remote look-ups.
//!
//! - [`keys`]: our key document and the cache of other servers' keys.
//! - [`client`]: signed requests out (discovery, the outbound guard, caps).
//! - [`discovery`]: from a server name to an address.
//! - [`event`]: the checks of a PDU that need no room state.
//! - [`guard`]: which addresses requests may reach.
//! - [`invite`]: our invites of other servers' users.
//! - [`join`]: joining a room another server holds.
//! - [`media`]: other servers' media.
//! - [`missing`]: events a server's new event refers to that we never got.
//! - [`sender`]: our events to the other servers of a room.
//! - this file: checking the X-Matrix signature of requests in, and the
//!   look-ups clients make through other servers (profiles, aliases).

pub mod client;
pub mod discovery;
pub mod event;
pub mod guard;
pub mod invite;
pub mod join;
pub mod keys;
pub mod media;
pub mod missing;
pub mod presence;
pub mod sender;

use std::collections::BTreeMap;
use std::sync::Arc;

use ruma_common::{OwnedRoomId, OwnedServerName, RoomAliasId, ServerName, UserId};
use ruma_federation_api::authentication::XMatrix;
use ruma_federation_api::directory::get_public_rooms;
use ruma_federation_api::query::{get_profile_information, get_room_information};

use super::error::{ErrorKind, ServiceError, ServiceResult};
use super::keys::ServerKey;
use crate::config::federation::FederationConfig;
use client::FederationClient;
use keys::KeyRing;

/// Why a request to or from another server failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("{0}")]
    Refused(String),
    #[error("{server} could not be reached: {cause}")]
    Unreachable {
        server: OwnedServerName,
        cause: String,
    },
    #[error("{server} answered {status}: {error}")]
    Remote {
        server: OwnedServerName,
        status: u16,
        error: String,
    },
    #[error("{server} answered with something unusable: {cause}")]
    BadResponse {
        server: OwnedServerName,
        cause: String,
    },
    #[error("an answer was larger than {cap} bytes")]
    TooLarge { cap: usize },
    #[error("{server} has no valid key {key_ids}")]
    UnknownKey {
        server: OwnedServerName,
        key_ids: String,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Local(String),
}

impl From<FederationError> for ServiceError {
    /// What a client sees when a look-up through another server fails.
    fn from(err: FederationError) -> Self {
        tracing::info!(error = %err, "federation request failed");
        match err {
            FederationError::Remote { status: 404, .. } => {
                ServiceError::not_found("The other server does not know it")
            }
            FederationError::Refused(reason) => ServiceError::forbidden(reason),
            FederationError::Unauthorized(reason) => {
                ServiceError::new(ErrorKind::Unauthorized, reason)
            }
            err => ServiceError::new(
                ErrorKind::BadGateway,
                format!("The other server could not answer: {err}"),
            ),
        }
    }
}

pub struct FederationService {
    pub server_name: OwnedServerName,
    pub keys: KeyRing,
    pub client: FederationClient,
    pub config: FederationConfig,
    /// Transactions answered lately, by (origin, txn id), with their
    /// answer: a transaction sent again gets the same answer, undone work
    /// not redone (in this process; a PDU is idempotent anyway).
    answered: parking_lot::Mutex<lru::LruCache<(OwnedServerName, String), Arc<TxnAnswer>>>,
    /// Per destination, what wakes its sender from a backoff: a request
    /// from that server shows it is up again.
    wakers:
        parking_lot::Mutex<std::collections::HashMap<OwnedServerName, Arc<tokio::sync::Notify>>>,
}

/// Per PDU of a transaction: `None` accepted, or why it was refused.
pub type TxnAnswer = BTreeMap<ruma_common::OwnedEventId, Option<String>>;

/// Transactions remembered for deduplication.
const ANSWERED_TXNS: usize = 4096;

/// A profile as another server gives it.
pub struct RemoteProfile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl FederationService {
    pub fn new(
        config: FederationConfig,
        server_name: OwnedServerName,
        key: Arc<ServerKey>,
    ) -> anyhow::Result<Self> {
        if config.insecure_skip_verify {
            tracing::warn!(
                "federation: other servers' TLS certificates are NOT verified \
                 (--federation-insecure-skip-verify): for tests only, never in production"
            );
        }
        if config.allow_private {
            tracing::warn!(
                "federation: requests may reach loopback and private addresses \
                 (--federation-allow-private)"
            );
        }
        Ok(Self {
            client: FederationClient::new(&config, server_name.clone(), key.clone())?,
            keys: KeyRing::new(server_name.clone(), key),
            server_name,
            config,
            answered: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(ANSWERED_TXNS).expect("non-zero"),
            )),
            wakers: parking_lot::Mutex::default(),
        })
    }

    /// `origin` sent us a signed request: it is up, so a sender backing
    /// off from it tries again now.
    pub fn heard_from(&self, origin: &ServerName) {
        if let Some(waker) = self.wakers.lock().get(origin) {
            waker.notify_one();
        }
    }

    /// What [`Self::heard_from`] wakes for `destination`.
    pub fn waker(&self, destination: &ServerName) -> Arc<tokio::sync::Notify> {
        self.wakers
            .lock()
            .entry(destination.to_owned())
            .or_default()
            .clone()
    }

    /// The answer already given to `origin`'s transaction `txn_id`.
    pub fn answered(&self, origin: &ServerName, txn_id: &str) -> Option<Arc<TxnAnswer>> {
        self.answered
            .lock()
            .get(&(origin.to_owned(), txn_id.to_owned()))
            .cloned()
    }

    /// Remembers the answer to a transaction.
    pub fn remember_answer(&self, origin: &ServerName, txn_id: &str, answer: Arc<TxnAnswer>) {
        self.answered
            .lock()
            .put((origin.to_owned(), txn_id.to_owned()), answer);
    }

    /// Checks a request's X-Matrix signature: addressed to us (or to no one
    /// in particular, as older servers do), by a server other than us, and
    /// signed with a key that server publishes. Returns the origin.
    pub async fn authenticate(
        &self,
        request: &http::Request<&[u8]>,
    ) -> Result<OwnedServerName, FederationError> {
        let unauthorized = |why: String| FederationError::Unauthorized(why);
        let x_matrix = XMatrix::extract_from_http_headers(request.headers())
            .map_err(|e| unauthorized(format!("X-Matrix authorization: {e}")))?;
        if x_matrix.origin == self.server_name {
            return Err(unauthorized("the origin is this server itself".into()));
        }
        if x_matrix
            .destination
            .as_ref()
            .is_some_and(|dest| *dest != self.server_name)
        {
            return Err(unauthorized(format!(
                "the request is for {}, this is {}",
                x_matrix.destination.as_ref().expect("checked above"),
                self.server_name
            )));
        }
        let key_id = x_matrix.key.as_str();
        let keys = self
            .keys
            .public_keys(&self.client, &x_matrix.origin, &[key_id], keys::now_ms())
            .await
            .map_err(|e| unauthorized(format!("no key to check the signature with: {e}")))?;
        let map = BTreeMap::from([(x_matrix.origin.to_string(), keys)]);
        x_matrix
            .verify_http_request(request, &self.server_name, &map)
            .map_err(|e| unauthorized(format!("the signature does not hold: {e}")))?;
        Ok(x_matrix.origin)
    }

    /// A user's profile from their own server.
    pub async fn query_profile(&self, user_id: &UserId) -> ServiceResult<RemoteProfile> {
        let request = get_profile_information::v1::Request::new(user_id.to_owned());
        let response = self.client.send(user_id.server_name(), request).await?;
        let text = |field: &str| {
            response
                .get(field)
                .and_then(|value| value.as_str())
                .map(str::to_owned)
        };
        Ok(RemoteProfile {
            displayname: text("displayname"),
            avatar_url: text("avatar_url"),
        })
    }

    /// The room an alias of another server names, and servers in it.
    pub async fn query_alias(
        &self,
        alias: &RoomAliasId,
    ) -> ServiceResult<(OwnedRoomId, Vec<OwnedServerName>)> {
        let request = get_room_information::v1::Request::new(alias.to_owned());
        let response = self.client.send(alias.server_name(), request).await?;
        Ok((response.room_id, response.servers))
    }

    /// A page of another server's public room directory.
    pub async fn query_public_rooms(
        &self,
        server: &ruma_common::ServerName,
        limit: Option<u64>,
        since: Option<String>,
    ) -> ServiceResult<get_public_rooms::v1::Response> {
        let mut request = get_public_rooms::v1::Request::new();
        request.limit = limit.map(js_int::UInt::new_saturating);
        request.since = since;
        Ok(self.client.send(server, request).await?)
    }
}

/// Refuses a look-up on a server that does not federate.
pub fn not_federating() -> ServiceError {
    ServiceError::not_found("This server does not federate, so it cannot look beyond itself")
}
