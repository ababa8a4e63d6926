//! Server discovery ("Resolving server names" in the Server-Server API):
//! an IP literal or an explicit port is used as given; otherwise
//! `/.well-known/matrix/server` may delegate to another name, whose SRV
//! records (`_matrix-fed._tcp`, then the deprecated `_matrix._tcp`) or port
//! 8448 give the address. Results are cached.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use ruma_common::{OwnedServerName, ServerName};
use serde::Deserialize;

use super::guard::{check_literal, SrvTargets};
use super::FederationError;

/// How long a discovery result stands when nothing says otherwise, and the
/// bounds put on a `.well-known` response's own `Cache-Control`.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MIN_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// A `.well-known` body larger than this is not a delegation.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;

/// Where requests for a server go: the base URL (its host is what the Host
/// header and the certificate check use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub base_url: String,
}

pub struct Discovery {
    /// Fetches `.well-known` (guarded; no SRV mapping applies to it).
    well_known: reqwest::Client,
    srv: Option<hickory_resolver::TokioResolver>,
    srv_targets: SrvTargets,
    allow_private: bool,
    cache: Mutex<LruCache<OwnedServerName, (Destination, Instant)>>,
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

impl Discovery {
    pub fn new(well_known: reqwest::Client, srv_targets: SrvTargets, allow_private: bool) -> Self {
        let srv = match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(resolver) => Some(resolver),
            Err(err) => {
                tracing::warn!(%err, "no DNS resolver configuration: SRV records are not looked up");
                None
            }
        };
        Self {
            well_known,
            srv,
            srv_targets,
            allow_private,
            cache: Mutex::new(LruCache::new(NonZeroUsize::new(4096).expect("non-zero"))),
        }
    }

    /// Where to send requests for `name`.
    pub async fn resolve(&self, name: &ServerName) -> Result<Destination, FederationError> {
        if let Some((dest, until)) = self.cache.lock().get(name).cloned() {
            if until > Instant::now() {
                return Ok(dest);
            }
        }
        let (dest, ttl) = self.discover(name).await?;
        self.cache
            .lock()
            .put(name.to_owned(), (dest.clone(), Instant::now() + ttl));
        Ok(dest)
    }

    async fn discover(
        &self,
        name: &ServerName,
    ) -> Result<(Destination, Duration), FederationError> {
        if let Some(dest) = self.literal_or_explicit_port(name)? {
            return Ok((dest, DEFAULT_TTL));
        }
        // Step 3: delegation through `.well-known`.
        match self.fetch_well_known(name.host()).await {
            Some((delegated, ttl)) => {
                let dest = match self.literal_or_explicit_port(&delegated)? {
                    Some(dest) => dest,
                    None => self.srv_or_default(delegated.host()).await,
                };
                Ok((dest, ttl))
            }
            None => Ok((self.srv_or_default(name.host()).await, DEFAULT_TTL)),
        }
    }

    /// Steps 1 and 2: an IP literal (port 8448 unless given), or a host
    /// name with an explicit port, are used as they are.
    fn literal_or_explicit_port(
        &self,
        name: &ServerName,
    ) -> Result<Option<Destination>, FederationError> {
        let host = name.host();
        let is_literal = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
        if is_literal {
            check_literal(host, self.allow_private).map_err(FederationError::Refused)?;
        }
        Ok(match (is_literal, name.port()) {
            (_, Some(port)) => Some(destination(host, Some(port))),
            (true, None) => Some(destination(host, Some(8448))),
            (false, None) => None,
        })
    }

    /// Steps 4 to 6: SRV `_matrix-fed._tcp`, then `_matrix._tcp`, then 8448.
    async fn srv_or_default(&self, host: &str) -> Destination {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some((target, port)) = self.lookup_srv(&format!("{service}.{host}.")).await {
                self.srv_targets
                    .write()
                    .insert(host.to_owned(), (target, port));
                return destination(host, None);
            }
        }
        self.srv_targets.write().remove(host);
        destination(host, Some(8448))
    }

    /// The best SRV record (lowest priority, then highest weight).
    async fn lookup_srv(&self, query: &str) -> Option<(String, u16)> {
        let lookup = self.srv.as_ref()?.srv_lookup(query).await.ok()?;
        lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)))
            .map(|srv| {
                let target = srv.target.to_utf8();
                (target.trim_end_matches('.').to_owned(), srv.port)
            })
    }

    /// `https://host/.well-known/matrix/server`: the delegated name and how
    /// long to trust it, or `None` when there is no usable answer.
    async fn fetch_well_known(&self, host: &str) -> Option<(OwnedServerName, Duration)> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let response = match self.well_known.get(&url).send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                tracing::debug!(%url, status = %response.status(), "no .well-known delegation");
                return None;
            }
            Err(err) => {
                tracing::debug!(%url, error = %super::client::chain(&err), "no .well-known delegation");
                return None;
            }
        };
        let ttl = cache_ttl(response.headers());
        let body = super::client::read_capped(response, WELL_KNOWN_MAX_BYTES)
            .await
            .ok()?;
        let WellKnown { server } = serde_json::from_slice(&body).ok()?;
        let delegated = ServerName::parse(&server).ok()?;
        Some((delegated, ttl))
    }
}

fn destination(host: &str, port: Option<u16>) -> Destination {
    let base_url = match port {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    };
    Destination { base_url }
}

/// `Cache-Control: max-age=N` within [`MIN_TTL`, `MAX_TTL`], else the default.
fn cache_ttl(headers: &reqwest::header::HeaderMap) -> Duration {
    let max_age = headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .split(',')
                .filter_map(|part| part.trim().strip_prefix("max-age="))
                .find_map(|secs| secs.parse::<u64>().ok())
        });
    max_age
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL)
        .clamp(MIN_TTL, MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(allow_private: bool) -> Discovery {
        Discovery::new(reqwest::Client::new(), SrvTargets::default(), allow_private)
    }

    #[tokio::test]
    async fn literals_and_explicit_ports_need_no_lookup() {
        let d = discovery(true);
        let name = <&ServerName>::try_from("example.org:8481").unwrap();
        assert_eq!(
            d.resolve(name).await.unwrap().base_url,
            "https://example.org:8481"
        );
        let name = <&ServerName>::try_from("[::1]").unwrap();
        assert_eq!(
            d.resolve(name).await.unwrap().base_url,
            "https://[::1]:8448"
        );
        let name = <&ServerName>::try_from("127.0.0.1:9000").unwrap();
        assert_eq!(
            d.resolve(name).await.unwrap().base_url,
            "https://127.0.0.1:9000"
        );
    }

    #[tokio::test]
    async fn an_internal_literal_is_refused_without_allow_private() {
        let d = discovery(false);
        let name = <&ServerName>::try_from("127.0.0.1:9000").unwrap();
        assert!(matches!(
            d.resolve(name).await,
            Err(FederationError::Refused(_))
        ));
    }

    #[test]
    fn well_known_cache_lifetimes_are_bounded() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(cache_ttl(&headers), DEFAULT_TTL);
        headers.insert("cache-control", "public, max-age=60".parse().unwrap());
        assert_eq!(cache_ttl(&headers), MIN_TTL);
        headers.insert("cache-control", "max-age=999999999".parse().unwrap());
        assert_eq!(cache_ttl(&headers), MAX_TTL);
        headers.insert("cache-control", "max-age=7200".parse().unwrap());
        assert_eq!(cache_ttl(&headers), Duration::from_secs(7200));
    }
}
