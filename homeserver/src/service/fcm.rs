//! Firebase Cloud Messaging through its HTTP v1 API, for apps the operator
//! names in `[[push.fcm]]`: their pushers' pushkeys are FCM registration
//! tokens, and the homeserver is its own push gateway for them.
//!
//! Google shut the legacy FCM API down in 2024; v1 wants an OAuth2 access
//! token made from a service-account key (a JWT signed with the key,
//! exchanged at the key's `token_uri`). `gcp_auth` does that exchange and
//! caches the token until it expires. The send and token URLs can be
//! pointed elsewhere, which is how the tests run against local servers.

use std::collections::HashMap;

use gcp_auth::{CustomServiceAccount, TokenProvider};
use serde_json::{json, Map, Value};

use crate::config::FcmAppConfig;

/// The OAuth2 scope FCM's send endpoint requires.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// FCM refuses data payloads over 4 KiB; event content larger than this is
/// left out (the app fetches the event by id instead).
const MAX_CONTENT_BYTES: usize = 2048;

/// What became of one send.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// FCM says the token is dead (`UNREGISTERED`, `SENDER_ID_MISMATCH`):
    /// its pusher is removed.
    Unregistered,
    /// Worth trying again later (5xx, 429, 401, network, token exchange).
    Retry,
    /// FCM refused the message itself; retrying would not help.
    GiveUp,
}

struct App {
    send_url: String,
    auth: CustomServiceAccount,
    /// One token look-up at a time: `gcp_auth` caches the token, but
    /// concurrent first sends would each exchange a JWT for one.
    fetching: tokio::sync::Mutex<()>,
}

/// The configured FCM apps, by `app_id`.
#[derive(Default)]
pub struct Fcm {
    apps: HashMap<String, App>,
}

impl Fcm {
    /// Reads each app's service-account key; a bad key stops start-up with
    /// a message naming the file, rather than failing every push later.
    pub fn from_config(configs: &[FcmAppConfig]) -> anyhow::Result<Self> {
        let mut apps = HashMap::new();
        for config in configs {
            let path = config.service_account_file.display();
            let text = std::fs::read_to_string(&config.service_account_file)
                .map_err(|e| anyhow::anyhow!("push.fcm: reading {path}: {e}"))?;
            let mut key: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("push.fcm: {path} is not JSON: {e}"))?;
            if let Some(url) = &config.token_url {
                key["token_uri"] = json!(url);
            }
            let auth = CustomServiceAccount::from_json(&key.to_string()).map_err(|e| {
                anyhow::anyhow!("push.fcm: {path} is not a service-account key: {e}")
            })?;
            let project = match (&config.project_id, auth.project_id()) {
                (Some(p), _) => p.clone(),
                (None, Some(p)) => p.to_owned(),
                (None, None) => anyhow::bail!(
                    "push.fcm: {path} names no project_id; set project_id for app {}",
                    config.app_id
                ),
            };
            let send_url = format!(
                "{}/v1/projects/{project}/messages:send",
                config.base_url.trim_end_matches('/')
            );
            let fetching = tokio::sync::Mutex::new(());
            let app = App {
                send_url,
                auth,
                fetching,
            };
            apps.insert(config.app_id.clone(), app);
        }
        Ok(Self { apps })
    }

    /// Whether pushers of this app go to FCM directly.
    pub fn handles(&self, app_id: &str) -> bool {
        self.apps.contains_key(app_id)
    }

    /// Sends one message built by [`message`].
    pub async fn send(&self, http: &reqwest::Client, app_id: &str, body: &Value) -> Outcome {
        let Some(app) = self.apps.get(app_id) else {
            tracing::warn!(%app_id, "an FCM push for an app no longer configured; dropping it");
            return Outcome::GiveUp;
        };
        let token = {
            let _one_at_a_time = app.fetching.lock().await;
            app.auth.token(&[SCOPE]).await
        };
        let token = match token {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(%err, %app_id, "getting an FCM access token failed");
                return Outcome::Retry;
            }
        };
        let response = http
            .post(&app.send_url)
            .bearer_auth(token.as_str())
            .json(body)
            .send()
            .await;
        match response {
            Ok(resp) if resp.status().is_success() => Outcome::Delivered,
            Ok(resp) => {
                let status = resp.status();
                let error: Value = resp.json().await.unwrap_or(Value::Null);
                let outcome = classify(status.as_u16(), &error);
                if outcome == Outcome::GiveUp {
                    tracing::warn!(%status, %error, %app_id, "FCM refused a message; dropping it");
                }
                outcome
            }
            Err(err) => {
                tracing::debug!(%err, %app_id, "FCM unreachable");
                Outcome::Retry
            }
        }
    }
}

/// Reads an FCM v1 error answer: `{"error": {"status", "details":
/// [{"@type": "...FcmError", "errorCode": "UNREGISTERED"}]}}`.
fn classify(status: u16, error: &Value) -> Outcome {
    let codes: Vec<&str> = error["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["errorCode"].as_str())
        .collect();
    let dead = |code: &&str| *code == "UNREGISTERED" || *code == "SENDER_ID_MISMATCH";
    if codes.iter().any(dead) || status == 404 {
        Outcome::Unregistered
    } else if status == 401 || status == 429 || status >= 500 {
        Outcome::Retry
    } else {
        Outcome::GiveUp
    }
}

/// Turns a push gateway notification (`{"notification": {...}}`, one
/// device) into an FCM v1 message for that device's registration token.
/// FCM data values must be strings, so numbers and the event content are
/// written as text; the content is left out when large.
pub fn message(gateway: &Value) -> Value {
    let n = &gateway["notification"];
    let device = &n["devices"][0];
    let mut data = Map::new();
    for field in [
        "event_id",
        "room_id",
        "type",
        "sender",
        "sender_display_name",
        "room_name",
        "prio",
    ] {
        if let Some(value) = n.get(field).and_then(Value::as_str) {
            data.insert(field.to_owned(), json!(value));
        }
    }
    if let Some(unread) = n["counts"]["unread"].as_u64() {
        data.insert("unread".to_owned(), json!(unread.to_string()));
    }
    if let Some(target) = n.get("user_is_target").and_then(Value::as_bool) {
        data.insert("user_is_target".to_owned(), json!(target.to_string()));
    }
    if let Some(content) = n.get("content") {
        let text = content.to_string();
        if text.len() <= MAX_CONTENT_BYTES {
            data.insert("content".to_owned(), json!(text));
        }
    }
    let tweaks = &device["tweaks"];
    if tweaks["highlight"] == json!(true) {
        data.insert("highlight".to_owned(), json!("true"));
    }
    if let Some(sound) = tweaks["sound"].as_str() {
        data.insert("sound".to_owned(), json!(sound));
    }
    let high = n["prio"] == "high";
    json!({
        "message": {
            "token": device["pushkey"],
            "data": data,
            "android": {"priority": if high { "HIGH" } else { "NORMAL" }},
            "apns": {"headers": {"apns-priority": if high { "10" } else { "5" }}},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_as_fcm_documents_them() {
        let unregistered = json!({"error": {"code": 404, "status": "NOT_FOUND", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
        assert_eq!(classify(404, &unregistered), Outcome::Unregistered);
        let mismatch = json!({"error": {"details": [{"errorCode": "SENDER_ID_MISMATCH"}]}});
        assert_eq!(classify(403, &mismatch), Outcome::Unregistered);
        let invalid = json!({"error": {"details": [{"errorCode": "INVALID_ARGUMENT"}]}});
        assert_eq!(classify(400, &invalid), Outcome::GiveUp);
        assert_eq!(classify(503, &Value::Null), Outcome::Retry);
        assert_eq!(classify(429, &Value::Null), Outcome::Retry);
        assert_eq!(classify(401, &Value::Null), Outcome::Retry);
    }

    #[test]
    fn messages_carry_string_data_for_the_device_token() {
        let gateway = json!({"notification": {
            "event_id": "$e", "room_id": "!r:x", "type": "m.room.message", "sender": "@a:x",
            "sender_display_name": "Alice", "counts": {"unread": 3}, "prio": "high",
            "content": {"msgtype": "m.text", "body": "hi"},
            "devices": [{"app_id": "a", "pushkey": "tok", "tweaks": {"highlight": true}}],
        }});
        let m = message(&gateway);
        assert_eq!(m["message"]["token"], "tok");
        let data = &m["message"]["data"];
        assert_eq!(data["unread"], "3");
        assert_eq!(data["highlight"], "true");
        assert_eq!(data["sender_display_name"], "Alice");
        let content: Value = serde_json::from_str(data["content"].as_str().unwrap()).unwrap();
        assert_eq!(content["body"], "hi");
        assert!(data.as_object().unwrap().values().all(Value::is_string));
        assert_eq!(m["message"]["android"]["priority"], "HIGH");
    }

    #[test]
    fn large_content_is_left_out() {
        let body = "x".repeat(MAX_CONTENT_BYTES + 1);
        let gateway = json!({"notification": {
            "event_id": "$e", "room_id": "!r:x", "counts": {"unread": 1}, "prio": "low",
            "content": {"body": body}, "devices": [{"pushkey": "tok"}],
        }});
        let m = message(&gateway);
        assert!(m["message"]["data"].get("content").is_none());
        assert_eq!(m["message"]["data"]["event_id"], "$e");
        assert_eq!(m["message"]["android"]["priority"], "NORMAL");
    }
}
