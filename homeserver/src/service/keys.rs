//! The server's ed25519 signing key: generated on first start, kept in the
//! data directory as base64 PKCS#8 so restarts sign with the same key.

use std::path::Path;

use base64::Engine;
use ruma_signatures::Ed25519KeyPair;

pub struct ServerKey {
    pub pair: Ed25519KeyPair,
}

impl ServerKey {
    /// Loads `signing.key` from `dir`, creating it on first start.
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("signing.key");
        let engine = base64::engine::general_purpose::STANDARD;
        let (version, der) = if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            let (version, encoded) = text
                .trim()
                .split_once(' ')
                .ok_or_else(|| anyhow::anyhow!("{} is malformed", path.display()))?;
            (version.to_owned(), engine.decode(encoded)?)
        } else {
            let der = Ed25519KeyPair::generate().to_vec();
            let version: String = {
                use rand::Rng;
                rand::thread_rng()
                    .sample_iter(&rand::distributions::Alphanumeric)
                    .take(6)
                    .map(char::from)
                    .collect()
            };
            let tmp = dir.join("signing.key.tmp");
            std::fs::write(&tmp, format!("a_{version} {}\n", engine.encode(&der)))?;
            std::fs::rename(&tmp, &path)?;
            (format!("a_{version}"), der)
        };
        let pair = Ed25519KeyPair::from_der(&der, version)?;
        Ok(Self { pair })
    }

    /// `ed25519:<version>`, as it appears in `signatures`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }
}
