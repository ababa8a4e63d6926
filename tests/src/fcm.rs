//! [`FakeFcm`]: Google's OAuth2 token endpoint and the FCM HTTP v1 send
//! endpoint on a free loopback port, checking what the real ones check:
//! the JWT assertion's RS256 signature, issuer, audience and scope; the
//! bearer token on every send; the message's shape. Tests tell it which
//! registration tokens are dead and which sends fail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::eventually_within;

/// The scope FCM's send endpoint wants.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[derive(Default)]
struct FcmState {
    /// Accepted messages, in arrival order.
    messages: Vec<Value>,
    /// Every send attempt's registration token, accepted or not.
    attempts: Vec<String>,
    issued: HashSet<String>,
    token_requests: usize,
    bad_assertions: usize,
    unauthorized_sends: usize,
    unregistered: HashSet<String>,
    /// Registration token -> how many more sends answer 503.
    failures: HashMap<String, usize>,
}

struct Shared {
    state: Mutex<FcmState>,
    key: DecodingKey,
    client_email: String,
    project: String,
    token_url: String,
}

pub struct FakeFcm {
    port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    assertion: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    scope: String,
    iat: u64,
    exp: u64,
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<TokenForm>,
) -> (StatusCode, Json<Value>) {
    // gcp_auth pads its base64url segments, which Google accepts and
    // jsonwebtoken does not: strip the padding (the signature covers the
    // padded text, so verify against that).
    let claims = verify(
        &form.assertion,
        &shared.key,
        &shared.client_email,
        &shared.token_url,
    );
    let mut state = shared.state.lock().unwrap();
    state.token_requests += 1;
    let valid = form.grant_type == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        && claims.is_ok_and(|c| c.scope.split(' ').any(|s| s == FCM_SCOPE));
    if !valid {
        state.bad_assertions += 1;
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT"})),
        );
    }
    let issued = format!("ya29.test-{}", state.token_requests);
    state.issued.insert(issued.clone());
    (
        StatusCode::OK,
        Json(json!({"access_token": issued, "expires_in": 3599, "token_type": "Bearer"})),
    )
}

/// Checks an RS256 JWT whose segments may carry base64 padding.
fn verify(
    jwt: &str,
    key: &DecodingKey,
    expected_iss: &str,
    expected_aud: &str,
) -> Result<Claims, String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err("not three segments".into());
    };
    let signed = format!("{header}.{payload}");
    let signature = signature.trim_end_matches('=');
    let ok = jsonwebtoken::crypto::verify(signature, signed.as_bytes(), key, Algorithm::RS256)
        .map_err(|e| e.to_string())?;
    if !ok {
        return Err("bad signature".into());
    }
    // Signature checked: read the claims and check them by hand.
    let unpadded = format!(
        "{}.{}.{signature}",
        header.trim_end_matches('='),
        payload.trim_end_matches('=')
    );
    let claims: Claims =
        jsonwebtoken::dangerous::insecure_decode_claims(&unpadded).map_err(|e| e.to_string())?;
    let now = jsonwebtoken::get_current_timestamp();
    if claims.iss != expected_iss || claims.aud != expected_aud {
        return Err(format!("iss {} / aud {}", claims.iss, claims.aud));
    }
    if claims.exp <= now || claims.iat > now + 60 || claims.exp > claims.iat + 3600 {
        return Err("expired or too long-lived".into());
    }
    Ok(claims)
}

fn fcm_error(status: StatusCode, code: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"error": {
            "code": status.as_u16(), "message": code, "status": code,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}],
        }})),
    )
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut state = shared.state.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.issued.contains(bearer) {
        state.unauthorized_sends += 1;
        return fcm_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    if project != shared.project {
        return fcm_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let message = &body["message"];
    let Some(token) = message["token"].as_str() else {
        return fcm_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    };
    // FCM: every data value is a string.
    let data_ok = message["data"]
        .as_object()
        .is_some_and(|d| d.values().all(Value::is_string));
    if !data_ok {
        return fcm_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    }
    state.attempts.push(token.to_owned());
    if state.unregistered.contains(token) {
        return fcm_error(StatusCode::NOT_FOUND, "UNREGISTERED");
    }
    if let Some(left) = state.failures.get_mut(token) {
        if *left > 0 {
            *left -= 1;
            return fcm_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
        }
    }
    state.messages.push(body.clone());
    (
        StatusCode::OK,
        Json(json!({"name": format!("projects/{project}/messages/{}", state.messages.len())})),
    )
}

impl FakeFcm {
    /// Listens on a free port; sends must be for `project` and tokens are
    /// issued only to JWTs signed by `public_key_pem`'s key and issued by
    /// `client_email`.
    pub async fn start(public_key_pem: &str, client_email: &str, project: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake FCM");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            state: Mutex::new(FcmState::default()),
            key: DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).expect("public key"),
            client_email: client_email.to_owned(),
            project: project.to_owned(),
            token_url: format!("http://127.0.0.1:{port}/token"),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeFcm { port, shared, task }
    }

    /// What `[[push.fcm]] base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `[[push.fcm]] token_url` should be.
    pub fn token_url(&self) -> String {
        self.shared.token_url.clone()
    }

    /// Sends to this registration token answer 404 `UNREGISTERED`.
    pub fn unregister(&self, registration_token: &str) {
        let mut state = self.shared.state.lock().unwrap();
        state.unregistered.insert(registration_token.to_owned());
    }

    /// The next `times` sends to this registration token answer 503.
    pub fn fail(&self, registration_token: &str, times: usize) {
        let mut state = self.shared.state.lock().unwrap();
        state.failures.insert(registration_token.to_owned(), times);
    }

    /// Accepted messages so far.
    pub fn messages(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().messages.clone()
    }

    /// Send attempts (accepted or not) for this registration token.
    pub fn attempts(&self, registration_token: &str) -> usize {
        let state = self.shared.state.lock().unwrap();
        state
            .attempts
            .iter()
            .filter(|t| *t == registration_token)
            .count()
    }

    /// `(token requests, of which refused, sends refused for their bearer)`.
    pub fn auth_counts(&self) -> (usize, usize, usize) {
        let state = self.shared.state.lock().unwrap();
        (
            state.token_requests,
            state.bad_assertions,
            state.unauthorized_sends,
        )
    }

    /// Waits for an accepted message to `registration_token` about
    /// `event_id`; panics after `within`.
    pub async fn wait_for(
        &self,
        registration_token: &str,
        event_id: &str,
        within: Duration,
    ) -> Value {
        let what = format!("an FCM message for {registration_token} about {event_id}");
        eventually_within(within, &what, async || {
            let messages = self.messages();
            let found = messages.iter().find(|m| {
                m["message"]["token"] == registration_token
                    && m["message"]["data"]["event_id"] == event_id
            });
            match found {
                Some(message) => Ok(message.clone()),
                None => Err(messages),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const PRIVATE: &str = include_str!("../fixtures/fcm-test-key.pem");
    const PUBLIC: &str = include_str!("../fixtures/fcm-test-key.pub.pem");

    fn jwt(iss: &str) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"iss": iss, "aud": "http://t/token", "scope": FCM_SCOPE,
                            "iat": now, "exp": now + 3000});
        let key = EncodingKey::from_rsa_pem(PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    }

    #[test]
    fn the_fake_token_endpoint_checks_signature_and_claims() {
        let key = DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap();
        let good = jwt("me@x");
        assert!(verify(&good, &key, "me@x", "http://t/token").is_ok());
        assert!(verify(&good, &key, "other@x", "http://t/token").is_err());
        assert!(verify(&good, &key, "me@x", "http://elsewhere").is_err());
        // Claims swapped under the same signature.
        let other = jwt("evil@x");
        let mut forged: Vec<&str> = good.split('.').collect();
        forged[1] = other.split('.').nth(1).unwrap();
        assert!(verify(&forged.join("."), &key, "evil@x", "http://t/token").is_err());
    }
}
