//! Signing keys across servers: our key document (`/_matrix/key/v2/server`),
//! and a cache of other servers' keys by (server, key id) that honours
//! `valid_until_ts`.
//!
//! A key enters the cache only from the server it belongs to: fetched from
//! that server's own address, naming that server, and signed by the key
//! itself. Nothing a third party says (a notary's answer, a request's
//! header) can put a key there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ruma_common::serde::{Base64, Raw};
use ruma_common::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName,
    ServerName,
};
use ruma_federation_api::discovery::{get_server_keys, OldVerifyKey, ServerSigningKeys, VerifyKey};
use ruma_signatures::PublicKeySet;

use super::client::FederationClient;
use super::FederationError;
use crate::service::keys::ServerKey;

/// How long others may rely on our key document (Synapse's default).
const OUR_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The longest we trust a fetched key without asking again, whatever the
/// document says (the spec's cap for `valid_until_ts`).
const MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct KeyRing {
    server_name: OwnedServerName,
    own: Arc<ServerKey>,
    remote: RwLock<HashMap<OwnedServerName, RemoteServer>>,
    /// One fetch at a time per server: a burst of requests from a server we
    /// do not know yet costs one key request, not one each.
    fetching: tokio::sync::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

/// What we know of one server's keys.
#[derive(Default)]
struct RemoteServer {
    keys: HashMap<String, CachedKey>,
    /// The last document it served, as signed, for the notary endpoints.
    document: Option<CanonicalJsonObject>,
    valid_until_ts: u64,
}

#[derive(Clone)]
struct CachedKey {
    key: Base64,
    /// Until when (ms) the key may be used: `valid_until_ts` for a current
    /// key, `expired_ts` for an old one.
    valid_until_ts: u64,
}

impl KeyRing {
    pub fn new(server_name: OwnedServerName, own: Arc<ServerKey>) -> Self {
        Self {
            server_name,
            own,
            remote: RwLock::default(),
            fetching: tokio::sync::Mutex::default(),
        }
    }

    /// Our key document, self-signed, valid for a day.
    pub fn own_document(&self) -> CanonicalJsonObject {
        let valid_until = now_ms() + OUR_VALIDITY.as_millis() as u64;
        let mut keys = ServerSigningKeys::new(self.server_name.clone(), ms(valid_until));
        keys.verify_keys.insert(
            self.own.key_id().try_into().expect("our key id is valid"),
            VerifyKey::new(Base64::new(self.own.pair.public_key().to_vec())),
        );
        for old in &self.own.old {
            let Ok(key) = Base64::parse(&old.public_key) else {
                continue;
            };
            let Ok(id) = format!("ed25519:{}", old.version).try_into() else {
                continue;
            };
            keys.old_verify_keys
                .insert(id, OldVerifyKey::new(old.expired_ts, key));
        }
        let mut object = to_canonical(&keys);
        self.sign(&mut object);
        object
    }

    /// The key this server signs with.
    pub fn own_key(&self) -> &ServerKey {
        &self.own
    }

    /// Our current and retired public keys, by key id.
    fn own_public_keys(&self) -> PublicKeySet {
        let mut set = PublicKeySet::new();
        set.insert(
            self.own.key_id(),
            Base64::new(self.own.pair.public_key().to_vec()),
        );
        for old in &self.own.old {
            if let Ok(key) = Base64::parse(&old.public_key) {
                set.insert(format!("ed25519:{}", old.version), key);
            }
        }
        set
    }

    /// Adds our signature to a JSON object (our key document, or another
    /// server's as a notary relays it).
    pub fn sign(&self, object: &mut CanonicalJsonObject) {
        if let Err(err) =
            ruma_signatures::sign_json(self.server_name.as_str(), &self.own.pair, object)
        {
            tracing::error!(%err, "could not sign a key document");
        }
    }

    /// The public keys of `origin` named `key_ids` that are valid at
    /// `at_ms`, fetching its key document when the cache cannot answer.
    pub async fn public_keys(
        &self,
        client: &FederationClient,
        origin: &ServerName,
        key_ids: &[&str],
        at_ms: u64,
    ) -> Result<PublicKeySet, FederationError> {
        self.cached_or_fetched(client, origin, key_ids, |ring| {
            ring.cached(origin, key_ids, at_ms)
        })
        .await
    }

    /// The last document `server` served us if it is valid until at least
    /// `min_valid_ms`, fetching it when not (for the notary endpoints).
    pub async fn document(
        &self,
        client: &FederationClient,
        server: &ServerName,
        min_valid_ms: u64,
    ) -> Result<CanonicalJsonObject, FederationError> {
        if server == self.server_name {
            return Ok(self.own_document());
        }
        let fresh = |ring: &Self| {
            ring.remote.read().get(server).and_then(|known| {
                (known.valid_until_ts >= min_valid_ms)
                    .then(|| known.document.clone())
                    .flatten()
            })
        };
        if let Some(document) = fresh(self) {
            return Ok(document);
        }
        self.fetch(client, server).await?;
        self.remote
            .read()
            .get(server)
            .and_then(|known| known.document.clone())
            .ok_or_else(|| FederationError::UnknownKey {
                server: server.to_owned(),
                key_ids: "any".into(),
            })
    }

    /// Those of `key_ids` of `server` valid at `at_ms` (at least one),
    /// fetching its key document when the cache has none: what checking an
    /// event's signatures needs, where any one valid key will do.
    pub async fn any_public_keys(
        &self,
        client: &FederationClient,
        server: &ServerName,
        key_ids: &[&str],
        at_ms: u64,
    ) -> Result<PublicKeySet, FederationError> {
        if server == self.server_name {
            // Our own events (a join the resident server sends back).
            return Ok(self.own_public_keys());
        }
        self.cached_or_fetched(client, server, key_ids, |ring| {
            let set = ring.cached_subset(server, key_ids, at_ms);
            (!set.is_empty()).then_some(set)
        })
        .await
    }

    /// `found` from the cache, else after fetching `server`'s key document;
    /// one fetch at a time per server, so a burst of requests from a server
    /// we do not know yet costs one key request.
    async fn cached_or_fetched(
        &self,
        client: &FederationClient,
        server: &ServerName,
        key_ids: &[&str],
        found: impl Fn(&Self) -> Option<PublicKeySet>,
    ) -> Result<PublicKeySet, FederationError> {
        if let Some(set) = found(self) {
            return Ok(set);
        }
        let lock = {
            let mut fetching = self.fetching.lock().await;
            fetching.entry(server.to_owned()).or_default().clone()
        };
        let _one_fetch = lock.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(set) = found(self) {
            return Ok(set);
        }
        self.fetch(client, server).await?;
        found(self).ok_or_else(|| FederationError::UnknownKey {
            server: server.to_owned(),
            key_ids: key_ids.join(", "),
        })
    }

    fn cached(&self, origin: &ServerName, key_ids: &[&str], at_ms: u64) -> Option<PublicKeySet> {
        let set = self.cached_subset(origin, key_ids, at_ms);
        (set.len() == key_ids.len()).then_some(set)
    }

    fn cached_subset(&self, origin: &ServerName, key_ids: &[&str], at_ms: u64) -> PublicKeySet {
        let remote = self.remote.read();
        let Some(known) = remote.get(origin) else {
            return PublicKeySet::new();
        };
        key_ids
            .iter()
            .filter_map(|id| {
                let key = known.keys.get(*id)?;
                (key.valid_until_ts >= at_ms).then(|| ((*id).to_owned(), key.key.clone()))
            })
            .collect()
    }

    /// Fetches `origin`'s key document from `origin` itself and caches it.
    async fn fetch(
        &self,
        client: &FederationClient,
        origin: &ServerName,
    ) -> Result<(), FederationError> {
        let response = client
            .send_unsigned(origin, get_server_keys::v2::Request::new())
            .await?;
        self.learn(origin, &response.server_key)
    }

    /// Takes `origin`'s key document into the cache if it holds (see
    /// [`accept_document`]); the document must have come from `origin`.
    pub(crate) fn learn(
        &self,
        origin: &ServerName,
        raw: &Raw<ServerSigningKeys>,
    ) -> Result<(), FederationError> {
        let (document, known) = accept_document(origin, raw, now_ms())?;
        tracing::debug!(server = %origin, keys = known.keys.len(), "fetched signing keys");
        let mut remote = self.remote.write();
        let entry = remote.entry(origin.to_owned()).or_default();
        entry.keys.extend(known.keys);
        entry.valid_until_ts = known.valid_until_ts;
        entry.document = Some(document);
        Ok(())
    }
}

/// Checks a key document that `origin` served: it names `origin`, and it is
/// signed by one of the keys it lists. Returns the document and its keys.
fn accept_document(
    origin: &ServerName,
    raw: &Raw<ServerSigningKeys>,
    now_ms: u64,
) -> Result<(CanonicalJsonObject, RemoteServer), FederationError> {
    let bad = |cause: String| FederationError::BadResponse {
        server: origin.to_owned(),
        cause,
    };
    let keys: ServerSigningKeys = raw
        .deserialize()
        .map_err(|e| bad(format!("key document: {e}")))?;
    if keys.server_name != origin {
        return Err(bad(format!(
            "key document names {} instead",
            keys.server_name
        )));
    }
    let object: CanonicalJsonObject =
        serde_json::from_str(raw.json().get()).map_err(|e| bad(format!("key document: {e}")))?;
    let verify_keys: PublicKeySet = keys
        .verify_keys
        .iter()
        .map(|(id, key)| (id.to_string(), key.key.clone()))
        .collect();
    // Only the origin's own signatures are checked (a notary's are not ours
    // to trust here), and at least one of them must hold.
    let mut own_signed = object.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = own_signed.get_mut("signatures") {
        signatures.retain(|entity, _| entity == origin.as_str());
    }
    let map = BTreeMap::from([(origin.to_string(), verify_keys.clone())]);
    ruma_signatures::verify_json(&map, &own_signed)
        .map_err(|e| bad(format!("key document signature: {e}")))?;
    let valid_until_ts =
        u64::from(keys.valid_until_ts.get()).min(now_ms + MAX_VALIDITY.as_millis() as u64);
    let mut cached: HashMap<String, CachedKey> = verify_keys
        .into_iter()
        .map(|(id, key)| {
            (
                id,
                CachedKey {
                    key,
                    valid_until_ts,
                },
            )
        })
        .collect();
    for (id, old) in keys.old_verify_keys {
        cached.entry(id.to_string()).or_insert(CachedKey {
            key: old.key,
            valid_until_ts: old.expired_ts.get().into(),
        });
    }
    Ok((
        object,
        RemoteServer {
            keys: cached,
            document: None,
            valid_until_ts,
        },
    ))
}

fn to_canonical<T: serde::Serialize>(value: &T) -> CanonicalJsonObject {
    let json = serde_json::to_value(value).expect("key documents serialize");
    match CanonicalJsonValue::try_from(json) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => unreachable!("a key document is a JSON object of strings and small integers"),
    }
}

pub fn now_ms() -> u64 {
    MilliSecondsSinceUnixEpoch::now().get().into()
}

fn ms(value: u64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(js_int::UInt::new_saturating(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(name: &str) -> (KeyRing, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = ServerKey::load_or_generate(dir.path()).unwrap();
        let name = ServerName::parse(name).unwrap();
        (KeyRing::new(name, Arc::new(key)), dir)
    }

    fn raw(object: &CanonicalJsonObject) -> Raw<ServerSigningKeys> {
        Raw::from_json_string(serde_json::to_string(object).unwrap()).unwrap()
    }

    #[test]
    fn a_servers_own_document_is_accepted_with_its_keys() {
        let (a, _dir) = ring("a.example");
        let document = a.own_document();
        let name = <&ServerName>::try_from("a.example").unwrap();
        let (_, known) = accept_document(name, &raw(&document), now_ms()).unwrap();
        assert!(known.keys.contains_key(&a.own.key_id()));
        assert!(known.valid_until_ts > now_ms());
    }

    #[test]
    fn a_document_for_another_server_or_badly_signed_is_refused() {
        let (a, _dir) = ring("a.example");
        let b = <&ServerName>::try_from("b.example").unwrap();
        // Served by b but naming a: b cannot plant a's keys.
        assert!(accept_document(b, &raw(&a.own_document()), now_ms()).is_err());

        // Naming a, but the signature does not match the content.
        let mut forged = a.own_document();
        forged.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(1u32.into()),
        );
        let a_name = <&ServerName>::try_from("a.example").unwrap();
        assert!(accept_document(a_name, &raw(&forged), now_ms()).is_err());
    }

    #[test]
    fn validity_is_capped_at_seven_days() {
        let (a, _dir) = ring("a.example");
        let name = <&ServerName>::try_from("a.example").unwrap();
        // "now" far in the past: the document's own day is beyond 7 days.
        let long_ago = now_ms() - 30 * 24 * 3600 * 1000;
        let (_, known) = accept_document(name, &raw(&a.own_document()), long_ago).unwrap();
        assert_eq!(
            known.valid_until_ts,
            long_ago + MAX_VALIDITY.as_millis() as u64
        );
    }
}
