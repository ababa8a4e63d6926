//! The `[federation]` section: whether this server talks to other Matrix
//! servers, where it listens for them with TLS, and how careful its own
//! requests are.

use std::net::SocketAddr;
use std::path::PathBuf;

use ruma_common::{OwnedServerName, ServerName};
use serde::Deserialize;

/// The section as written in the file (flags and environment merge in).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationFileConfig {
    /// Serve the federation routes on the main listener as well, for a TLS
    /// proxy in front; implied by `listen`.
    pub enabled: Option<bool>,
    /// The TLS listener other servers connect to (the port of the server
    /// name, 8448 when the name has none and no delegation applies).
    pub listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Let outbound requests reach loopback, private and link-local
    /// addresses (test set-ups on one machine, private networks).
    pub allow_private: Option<bool>,
    /// Accept any certificate from other servers (tests only).
    pub insecure_skip_verify: Option<bool>,
    /// What `/.well-known/matrix/server` answers as `m.server`
    /// (`matrix.example.org:443`); unset, that path is not served.
    pub well_known_server: Option<String>,
}

/// Federation settings once resolved.
#[derive(Debug, Clone, Default)]
pub struct FederationConfig {
    pub enabled: bool,
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub allow_private: bool,
    pub insecure_skip_verify: bool,
    pub well_known_server: Option<OwnedServerName>,
}

/// The certificate chain and private key of the TLS listener, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl FederationConfig {
    pub(super) fn from_file(file: FederationFileConfig) -> anyhow::Result<Self> {
        let tls = match (file.tls_cert, file.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("federation needs both tls_cert and tls_key (or neither)"),
        };
        if file.listen.is_some() && tls.is_none() {
            anyhow::bail!(
                "the federation listener speaks TLS: set tls_cert and tls_key \
                 (--tls-cert / --tls-key) with federation listen"
            );
        }
        let well_known_server = file
            .well_known_server
            .map(|name| {
                ServerName::parse(&name)
                    .map_err(|e| anyhow::anyhow!("invalid well_known_server {name:?}: {e}"))
            })
            .transpose()?;
        Ok(Self {
            enabled: file.enabled.unwrap_or(false) || file.listen.is_some(),
            listen: file.listen,
            tls,
            allow_private: file.allow_private.unwrap_or(false),
            insecure_skip_verify: file.insecure_skip_verify.unwrap_or(false),
            well_known_server,
        })
    }
}
