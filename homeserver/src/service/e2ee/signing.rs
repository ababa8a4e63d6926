//! Cross-signing: a user's master, self-signing and user-signing keys, and
//! the signatures that link keys (`/keys/device_signing/upload`,
//! `/keys/signatures/upload`).

use std::collections::BTreeMap;

use ruma_common::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::signatures::{cross_signing_public_key, signed_by};
use super::{DeviceChange, E2eeService};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::rooms::Requester;
use crate::store::e2ee::{CrossSigningKind, KeySignature};

#[derive(Debug, Default, Deserialize)]
pub struct CrossSigningUpload {
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    pub user_signing_key: Option<Value>,
}

impl CrossSigningUpload {
    fn keys(&self) -> impl Iterator<Item = (CrossSigningKind, &Value)> {
        [
            (CrossSigningKind::Master, &self.master_key),
            (CrossSigningKind::SelfSigning, &self.self_signing_key),
            (CrossSigningKind::UserSigning, &self.user_signing_key),
        ]
        .into_iter()
        .filter_map(|(kind, key)| Some((kind, key.as_ref()?)))
    }
}

/// Why one signature of an upload was refused.
#[derive(Debug, Serialize)]
pub struct SignatureFailure {
    pub errcode: &'static str,
    pub error: String,
}

fn failure(errcode: &'static str, error: impl Into<String>) -> SignatureFailure {
    SignatureFailure {
        errcode,
        error: error.into(),
    }
}

/// A key object without what signing leaves out, to compare an uploaded
/// copy with the stored one.
fn signed_part(key: &Value) -> Value {
    let mut key = key.clone();
    if let Some(object) = key.as_object_mut() {
        object.remove("signatures");
        object.remove("unsigned");
    }
    key
}

/// Checks a cross-signing key's shape: the owner's, for its usage, with
/// one ed25519 key. Returns its public key.
fn check_shape<'a>(who: &UserId, kind: CrossSigningKind, key: &'a Value) -> ServiceResult<&'a str> {
    let invalid = |what: &str| ServiceError::invalid_param(format!("{}: {what}", kind.as_str()));
    if key.get("user_id").and_then(Value::as_str) != Some(who.as_str()) {
        return Err(invalid("user_id must be the uploader"));
    }
    let usage = key.get("usage").and_then(Value::as_array);
    if !usage.is_some_and(|u| u.iter().any(|x| x.as_str() == Some(kind.as_str()))) {
        return Err(invalid("usage must include the key's kind"));
    }
    cross_signing_public_key(key)
        .map(|(public, _)| public)
        .ok_or_else(|| invalid("keys must hold exactly one ed25519 key, named by itself"))
}

impl E2eeService {
    /// Whether replacing the user's cross-signing keys with `upload` needs
    /// user-interactive auth: not for the first keys, nor for the same keys
    /// again (MSC3967, in the spec since v1.11).
    pub async fn cross_signing_needs_auth(
        &self,
        who: &UserId,
        upload: &CrossSigningUpload,
    ) -> ServiceResult<bool> {
        let stored = self.store.cross_signing_keys(&[who.to_owned()]).await?;
        if !stored
            .iter()
            .any(|(_, kind, _)| *kind == CrossSigningKind::Master)
        {
            return Ok(false);
        }
        let same = upload.keys().all(|(kind, key)| {
            stored
                .iter()
                .any(|(_, k, old)| *k == kind && signed_part(old) == signed_part(key))
        });
        Ok(!same)
    }

    /// Stores the user's cross-signing keys: the subkeys must be signed by
    /// the master key (the one uploaded with them, else the stored one).
    pub async fn upload_cross_signing(
        &self,
        who: &Requester,
        upload: CrossSigningUpload,
    ) -> ServiceResult<()> {
        let user = &who.user_id;
        let mut publics = BTreeMap::new();
        for (kind, key) in upload.keys() {
            publics.insert(kind, check_shape(user, kind, key)?.to_owned());
        }
        let master = match &upload.master_key {
            Some(_) => publics.get(&CrossSigningKind::Master).cloned(),
            None => self
                .store
                .cross_signing_keys(std::slice::from_ref(user))
                .await?
                .into_iter()
                .find(|(_, kind, _)| *kind == CrossSigningKind::Master)
                .and_then(|(_, _, key)| cross_signing_public_key(&key).map(|(p, _)| p.to_owned())),
        };
        for (kind, key) in upload.keys() {
            if kind == CrossSigningKind::Master {
                continue;
            }
            let Some(master) = &master else {
                return Err(ServiceError::invalid_param(
                    "Upload a master key before its subkeys",
                ));
            };
            if !signed_by(key, user.as_str(), &format!("ed25519:{master}"), master) {
                return Err(ServiceError::invalid_param(format!(
                    "{}: not signed by the master key",
                    kind.as_str()
                )));
            }
        }
        let keys: Vec<(CrossSigningKind, Value)> = upload
            .keys()
            .map(|(kind, key)| (kind, key.clone()))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let stream = self.store.set_cross_signing_keys(user, &keys).await?;
        self.announce(user, stream, DeviceChange::CrossSigning)
            .await;
        Ok(())
    }

    /// Stores the valid signatures `who` made of keys; the rest are
    /// reported, per user and key.
    pub async fn upload_signatures(
        &self,
        who: &Requester,
        upload: &BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> ServiceResult<BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>>> {
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>> =
            BTreeMap::new();
        let mut accepted = Vec::new();
        let signer = &who.user_id;
        let own_cross = self.cross_signing_of(signer).await?;
        for (user_id, keys) in upload {
            let targets = self.signable_keys(user_id).await?;
            for (key_id, signed) in keys {
                match self.check_upload(signer, &own_cross, user_id, &targets, key_id, signed) {
                    Ok(mut found) => accepted.append(&mut found),
                    Err(why) => {
                        failures
                            .entry(user_id.clone())
                            .or_default()
                            .insert(key_id.clone(), why);
                    }
                }
            }
        }
        if !accepted.is_empty() {
            let stream = self.store.add_signatures(&accepted).await?;
            let mut changed: Vec<(&OwnedUserId, &str)> = accepted
                .iter()
                .map(|s| (&s.user_id, s.key_id.as_str()))
                .collect();
            changed.sort();
            changed.dedup();
            for (user, key_id) in changed {
                // A device id names a device's keys; else a master key.
                let change = match self.is_local(user) && !key_id.is_empty() {
                    true if upload
                        .get(user)
                        .and_then(|k| k.get(key_id))
                        .is_some_and(|k| k.get("usage").is_none()) =>
                    {
                        DeviceChange::Updated(key_id.into())
                    }
                    _ => DeviceChange::CrossSigning,
                };
                self.announce(user, stream, change).await;
            }
        }
        Ok(failures)
    }

    /// A user's cross-signing public keys by kind.
    async fn cross_signing_of(
        &self,
        user_id: &UserId,
    ) -> ServiceResult<BTreeMap<CrossSigningKind, String>> {
        Ok(self
            .store
            .cross_signing_keys(&[user_id.to_owned()])
            .await?
            .into_iter()
            .filter_map(|(_, kind, key)| Some((kind, cross_signing_public_key(&key)?.0.to_owned())))
            .collect())
    }

    /// The keys of `user_id` others may sign, by key id: device keys by
    /// device id, the master key by its public key. `None` for a user not
    /// of this server (remote keys are not signed here yet).
    async fn signable_keys(&self, user_id: &UserId) -> ServiceResult<BTreeMap<String, Value>> {
        let mut keys = BTreeMap::new();
        if !self.is_local(user_id) {
            return Ok(keys);
        }
        for device in self.store.device_keys(&[user_id.to_owned()]).await? {
            keys.insert(device.device_id.to_string(), device.keys);
        }
        for (_, kind, key) in self.store.cross_signing_keys(&[user_id.to_owned()]).await? {
            if kind == CrossSigningKind::Master {
                if let Some((public, _)) = cross_signing_public_key(&key) {
                    keys.insert(public.to_owned(), key.clone());
                }
            }
        }
        Ok(keys)
    }

    /// The signatures by `signer` in one uploaded key, each checked with
    /// the key that must have made it.
    fn check_upload(
        &self,
        signer: &UserId,
        own_cross: &BTreeMap<CrossSigningKind, String>,
        user_id: &UserId,
        targets: &BTreeMap<String, Value>,
        key_id: &str,
        signed: &Value,
    ) -> Result<Vec<KeySignature>, SignatureFailure> {
        let stored = targets
            .get(key_id)
            .ok_or_else(|| failure("M_NOT_FOUND", "No such key"))?;
        if signed_part(stored) != signed_part(signed) {
            return Err(failure(
                "M_INVALID_PARAM",
                "The key differs from the stored one",
            ));
        }
        let by_signer = signed
            .get("signatures")
            .and_then(|s| s.get(signer.as_str()))
            .and_then(Value::as_object)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| failure("M_INVALID_SIGNATURE", "No signature by the uploader"))?;
        let is_master = stored.get("usage").is_some();
        let mut found = Vec::new();
        // Signatures the stored key already carries (the device's own) are
        // not new: only the rest are checked and stored.
        let known = |key_id: &str, signature: &Value| {
            stored
                .get("signatures")
                .and_then(|s| s.get(signer.as_str()))
                .and_then(|s| s.get(key_id))
                == Some(signature)
        };
        for (signer_key_id, signature) in by_signer {
            if known(signer_key_id, signature) {
                continue;
            }
            let public = self.signing_key_for(
                signer,
                own_cross,
                user_id,
                targets,
                is_master,
                signer_key_id,
            )?;
            if !signed_by(signed, signer.as_str(), signer_key_id, &public) {
                return Err(failure(
                    "M_INVALID_SIGNATURE",
                    "A signature does not verify",
                ));
            }
            found.push(KeySignature {
                user_id: user_id.to_owned(),
                key_id: key_id.to_owned(),
                signer: signer.to_owned(),
                signer_key_id: signer_key_id.clone(),
                signature: signature.as_str().unwrap_or_default().to_owned(),
            });
        }
        if found.is_empty() {
            return Err(failure(
                "M_INVALID_SIGNATURE",
                "No new signature by the uploader",
            ));
        }
        Ok(found)
    }

    /// The public key that may make `signer_key_id`'s signature here: one's
    /// own devices by the self-signing key, one's master key by one's
    /// devices, another user's master key by one's user-signing key.
    fn signing_key_for(
        &self,
        signer: &UserId,
        own_cross: &BTreeMap<CrossSigningKind, String>,
        user_id: &UserId,
        targets: &BTreeMap<String, Value>,
        is_master: bool,
        signer_key_id: &str,
    ) -> Result<String, SignatureFailure> {
        let bad = || {
            failure(
                "M_INVALID_SIGNATURE",
                format!("{signer_key_id} may not sign this key"),
            )
        };
        let named = signer_key_id.strip_prefix("ed25519:").ok_or_else(bad)?;
        let allowed = match (user_id == signer, is_master) {
            (true, false) => own_cross.get(&CrossSigningKind::SelfSigning).cloned(),
            (true, true) => targets
                .get(named)
                .filter(|d| d.get("usage").is_none())
                .and_then(|d| d.get("keys")?.get(signer_key_id)?.as_str())
                .map(str::to_owned),
            (false, true) => own_cross.get(&CrossSigningKind::UserSigning).cloned(),
            (false, false) => None,
        };
        match allowed {
            Some(public) if (user_id == signer && is_master) || public == named => Ok(public),
            _ => Err(bad()),
        }
    }
}
