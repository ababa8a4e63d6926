//! The server's ed25519 signing keys: the current one, generated on first
//! start and kept in the data directory as base64 PKCS#8 so restarts sign
//! with the same key, and the public halves of the keys it replaced, which
//! other servers still need to check what those signed.

use std::path::Path;

use base64::Engine;
use ruma_common::MilliSecondsSinceUnixEpoch;
use ruma_signatures::Ed25519KeyPair;

const CURRENT: &str = "signing.key";
const OLD: &str = "signing.old_keys";

pub struct ServerKey {
    pub pair: Ed25519KeyPair,
    /// Keys this server signed with before, newest last.
    pub old: Vec<OldKey>,
}

/// A retired key: its id, its public half (unpadded base64) and when it
/// stopped being used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldKey {
    pub version: String,
    pub public_key: String,
    pub expired_ts: MilliSecondsSinceUnixEpoch,
}

impl ServerKey {
    /// Loads `signing.key` from `dir`, creating it on first start, and the
    /// retired keys listed in `signing.old_keys`.
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(CURRENT);
        let (version, der) = if path.exists() {
            read_current(&path)?
        } else {
            write_new(dir)?
        };
        let pair = Ed25519KeyPair::from_der(&der, version)?;
        Ok(Self {
            pair,
            old: read_old(&dir.join(OLD))?,
        })
    }

    /// Retires the current key (its public half goes to the old keys with
    /// `expired_ts` now) and makes a new one under a new key id: other
    /// servers cache a key by id, so an id is never reused.
    pub fn rotate(dir: &Path) -> anyhow::Result<String> {
        let current = Self::load_or_generate(dir)?;
        let retired = OldKey {
            version: current.pair.version().to_owned(),
            public_key: unpadded(&current.pair.public_key()),
            expired_ts: MilliSecondsSinceUnixEpoch::now(),
        };
        let mut old = current.old;
        old.push(retired);
        let lines: String = old
            .iter()
            .map(|k| format!("{} {} {}\n", k.version, k.public_key, k.expired_ts.get()))
            .collect();
        write_atomically(&dir.join(OLD), &lines)?;
        std::fs::remove_file(dir.join(CURRENT))?;
        let (version, _) = write_new(dir)?;
        Ok(format!("ed25519:{version}"))
    }

    /// `ed25519:<version>`, as it appears in `signatures`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// The current public key, unpadded base64 as key documents carry it.
    pub fn public_key(&self) -> String {
        unpadded(&self.pair.public_key())
    }
}

fn read_current(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(path)?;
    let (version, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("{} is malformed", path.display()))?;
    let der = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    Ok((version.to_owned(), der))
}

/// A fresh key under a random id `a_xxxxxx`, written before it is used.
fn write_new(dir: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let der = Ed25519KeyPair::generate().to_vec();
    let version: String = {
        use rand::Rng;
        rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(6)
            .map(char::from)
            .collect()
    };
    let version = format!("a_{version}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&der);
    write_atomically(&dir.join(CURRENT), &format!("{version} {encoded}\n"))?;
    Ok((version, der))
}

fn read_old(path: &Path) -> anyhow::Result<Vec<OldKey>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let malformed = || anyhow::anyhow!("{}: malformed line {line:?}", path.display());
            let mut parts = line.split_whitespace();
            let (Some(version), Some(public_key), Some(ts), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(malformed());
            };
            let ts: u64 = ts.parse().map_err(|_| malformed())?;
            Ok(OldKey {
                version: version.to_owned(),
                public_key: public_key.to_owned(),
                expired_ts: MilliSecondsSinceUnixEpoch(
                    js_int::UInt::new(ts).ok_or_else(malformed)?,
                ),
            })
        })
        .collect()
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn unpadded(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_public_key_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerKey::load_or_generate(dir.path()).unwrap();
        let again = ServerKey::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.key_id(), again.key_id(), "a restart keeps the key");

        let new_id = ServerKey::rotate(dir.path()).unwrap();
        let rotated = ServerKey::load_or_generate(dir.path()).unwrap();
        assert_eq!(rotated.key_id(), new_id);
        assert_ne!(rotated.key_id(), first.key_id(), "a new key gets a new id");
        assert_eq!(rotated.old.len(), 1);
        assert_eq!(rotated.old[0].version, first.pair.version());
        assert_eq!(rotated.old[0].public_key, first.public_key());
    }
}
