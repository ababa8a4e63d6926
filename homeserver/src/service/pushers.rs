//! Pushers (spec: "Push Notifications", `POST /pushers/set`): where a user's
//! push notifications go. Validation lives here; delivery to the gateways is
//! the push sender's job.

use parking_lot::Mutex;
use ruma_common::{DeviceId, OwnedUserId, UserId};
use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{ErrorKind, ServiceError, ServiceResult};
use super::fcm::Fcm;
use super::rooms::{now_ms, Requester};
use crate::store::cluster::ClusterMessage;
use crate::store::{EventBus, PushStore, PusherRecord};

/// The path every Matrix push gateway serves.
pub const GATEWAY_PATH: &str = "/_matrix/push/v1/notify";
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;
const MAX_TEXT_CHARS: usize = 256;
const MAX_URL_BYTES: usize = 2048;
/// `GET /pushers`.
#[derive(Serialize)]
pub struct PushersResponse {
    pub pushers: Vec<Pusher>,
}

/// A pusher as `GET /pushers` shows it.
#[derive(Serialize)]
pub struct Pusher {
    pub pushkey: String,
    pub kind: String,
    pub app_id: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub lang: String,
    pub data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_tag: Option<String>,
}

/// Pushers one user may hold (one per app on each device is typical).
const MAX_PUSHERS_PER_USER: usize = 100;

pub struct PusherService {
    store: Arc<dyn PushStore>,
    /// Apps delivered to FCM directly: their pushers need no gateway URL.
    fcm: Arc<Fcm>,
    bus: Arc<dyn EventBus>,
    /// Every user's pushers, so deciding pushes for a message costs no
    /// query; rebuilt after each (rare) change.
    index: Mutex<HashMap<OwnedUserId, Arc<Vec<PusherRecord>>>>,
}

fn missing(field: &str) -> ServiceError {
    ServiceError::new(ErrorKind::MissingParam, format!("Missing {field}"))
}

/// A required string field no longer than `max` characters.
fn text<'a>(body: &'a Map<String, Value>, field: &str, max: usize) -> ServiceResult<&'a str> {
    let value = body.get(field).ok_or_else(|| missing(field))?;
    let text = value
        .as_str()
        .ok_or_else(|| ServiceError::bad_json(format!("{field} must be a string")))?;
    if text.chars().count() > max {
        return Err(ServiceError::invalid_param(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(text)
}

/// A gateway URL: http(s), no spaces, ending in the push gateway path. Plain
/// http is allowed for gateways on a private network (and tests).
fn check_gateway_url(url: &str) -> ServiceResult<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let valid = url.len() <= MAX_URL_BYTES
        && rest.is_some_and(|r| {
            let host = r.split('/').next().unwrap_or("");
            !host.is_empty() && !r.contains(char::is_whitespace)
        })
        && url.ends_with(GATEWAY_PATH);
    if valid {
        Ok(())
    } else {
        Err(ServiceError::invalid_param(format!(
            "data.url must be an http(s) URL ending in {GATEWAY_PATH}"
        )))
    }
}

impl PusherService {
    pub async fn new(
        store: Arc<dyn PushStore>,
        fcm: Arc<Fcm>,
        bus: Arc<dyn EventBus>,
    ) -> ServiceResult<Self> {
        let service = Self {
            store,
            fcm,
            bus,
            index: Mutex::new(HashMap::new()),
        };
        service.reload().await?;
        Ok(service)
    }

    /// Rebuilds the index after a change here, and has the other nodes of a
    /// cluster rebuild theirs.
    async fn reindex(&self) -> ServiceResult<()> {
        let reloaded = self.reload().await;
        self.bus.share(&|| ClusterMessage::PushersChanged);
        reloaded
    }

    /// Rebuilds the in-memory index from the store (pushers change rarely).
    pub async fn reload(&self) -> ServiceResult<()> {
        let mut index: HashMap<OwnedUserId, Vec<PusherRecord>> = HashMap::new();
        for pusher in self.store.all_pushers().await? {
            index
                .entry(pusher.user_id.clone())
                .or_default()
                .push(pusher);
        }
        *self.index.lock() = index
            .into_iter()
            .map(|(user, list)| (user, Arc::new(list)))
            .collect();
        Ok(())
    }

    pub fn anyone_has_pushers(&self) -> bool {
        !self.index.lock().is_empty()
    }

    /// The user's pushers (empty for most users), without a query.
    pub fn pushers_of(&self, user_id: &UserId) -> Arc<Vec<PusherRecord>> {
        self.index.lock().get(user_id).cloned().unwrap_or_default()
    }

    /// The user logged out `device_id`, or (`None`) every device but
    /// `keep_device`: their pushers go with them.
    pub async fn remove_for_logout(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
        keep_device: Option<&DeviceId>,
    ) -> ServiceResult<()> {
        self.store
            .delete_device_pushers(user_id, device_id, keep_device)
            .await?;
        self.reindex().await
    }

    /// A gateway said this pushkey is dead: whoever holds it loses it.
    pub async fn remove_pushkey(&self, app_id: &str, pushkey: &str) {
        let removed = self.store.delete_pushkey(app_id, pushkey).await;
        let reindexed = self.reindex().await;
        if let Err(err) = removed.map_err(ServiceError::from).and(reindexed) {
            tracing::warn!(error = %err.message, "removing a rejected pushkey failed");
        }
    }

    /// `GET /pushers`, in the spec's shape.
    pub async fn list(&self, user_id: &UserId) -> ServiceResult<PushersResponse> {
        let pushers = self.store.pushers(user_id).await?;
        let pushers = pushers.into_iter().map(|p| Pusher {
            pushkey: p.pushkey,
            kind: p.kind,
            app_id: p.app_id,
            app_display_name: p.app_display_name,
            device_display_name: p.device_display_name,
            lang: p.lang,
            data: p.data,
            profile_tag: p.profile_tag,
        });
        Ok(PushersResponse {
            pushers: pushers.collect(),
        })
    }

    /// `POST /pushers/set`: creates, replaces or (with `kind: null`) deletes.
    pub async fn set(&self, who: &Requester, body: &Value) -> ServiceResult<()> {
        let body = body
            .as_object()
            .ok_or_else(|| ServiceError::bad_json("Body must be an object"))?;
        let pushkey = text(body, "pushkey", usize::MAX)?;
        if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES {
            return Err(ServiceError::invalid_param(format!(
                "pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes"
            )));
        }
        let app_id = text(body, "app_id", MAX_APP_ID_CHARS)?;
        if app_id.is_empty() {
            return Err(ServiceError::invalid_param("app_id must not be empty"));
        }
        let kind = match body.get("kind") {
            None => return Err(missing("kind")),
            Some(Value::Null) => {
                self.store
                    .delete_pusher(&who.user_id, app_id, pushkey)
                    .await?;
                self.reindex().await?;
                return Ok(());
            }
            Some(Value::String(kind)) if kind == "http" => kind.clone(),
            Some(Value::String(kind)) => {
                return Err(ServiceError::invalid_param(format!(
                    "Unsupported pusher kind {kind:?}: this server pushes to http gateways"
                )))
            }
            Some(_) => return Err(ServiceError::bad_json("kind must be a string or null")),
        };
        let data = body.get("data").ok_or_else(|| missing("data"))?;
        let data_map = data
            .as_object()
            .ok_or_else(|| ServiceError::bad_json("data must be an object"))?;
        // FCM apps' pushers are sent by this server; a URL (clients often
        // name their usual gateway) is then optional and unused.
        match data_map.get("url") {
            None if self.fcm.handles(app_id) => {}
            None => return Err(missing("data.url")),
            Some(url) => check_gateway_url(
                url.as_str()
                    .ok_or_else(|| ServiceError::bad_json("data.url must be a string"))?,
            )?,
        }
        match data_map.get("format") {
            None => {}
            Some(Value::String(f)) if f == "event_id_only" => {}
            Some(_) => {
                return Err(ServiceError::invalid_param(
                    "data.format may only be \"event_id_only\"",
                ))
            }
        }
        let profile_tag = match body.get("profile_tag") {
            None | Some(Value::Null) => None,
            Some(_) => Some(text(body, "profile_tag", MAX_TEXT_CHARS)?.to_owned()),
        };
        let append = match body.get("append") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ServiceError::bad_json("append must be a boolean")),
        };
        let existing = self.store.pushers(&who.user_id).await?;
        let replaces = existing
            .iter()
            .any(|p| p.app_id == app_id && p.pushkey == pushkey);
        if !replaces && existing.len() >= MAX_PUSHERS_PER_USER {
            return Err(ServiceError::invalid_param(format!(
                "At most {MAX_PUSHERS_PER_USER} pushers: delete one first"
            )));
        }
        let pusher = PusherRecord {
            user_id: who.user_id.clone(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
            kind,
            app_display_name: text(body, "app_display_name", MAX_TEXT_CHARS)?.to_owned(),
            device_display_name: text(body, "device_display_name", MAX_TEXT_CHARS)?.to_owned(),
            profile_tag,
            lang: text(body, "lang", MAX_TEXT_CHARS)?.to_owned(),
            data: data.clone(),
            device_id: Some(who.device_id.clone()),
            created_ts: now_ms(),
        };
        self.store.set_pusher(pusher, append).await?;
        self.reindex().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_checked() {
        assert!(check_gateway_url("https://push.example.org/_matrix/push/v1/notify").is_ok());
        assert!(check_gateway_url("http://127.0.0.1:9000/_matrix/push/v1/notify").is_ok());
        for bad in [
            "ftp://push.example.org/_matrix/push/v1/notify",
            "https:///_matrix/push/v1/notify",
            "https://push.example.org/other",
            "https://push example.org/_matrix/push/v1/notify",
            "push.example.org/_matrix/push/v1/notify",
        ] {
            assert!(check_gateway_url(bad).is_err(), "{bad}");
        }
    }
}
