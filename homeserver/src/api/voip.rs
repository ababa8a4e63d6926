//! TURN credentials for calls.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;

use super::extract::Auth;
use super::EmptyResponse;
use crate::config::client::TurnConfig;
use crate::service::rooms::now_ms;
use crate::service::Services;

#[derive(Serialize)]
pub struct TurnServerResponse {
    username: String,
    password: String,
    uris: Vec<String>,
    ttl: u64,
}

/// # `GET /_matrix/client/v3/voip/turnServer`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3voipturnserver>
///
/// `{}` without a TURN server: clients then call peer to peer or over
/// their own fallback.
pub async fn turn_server(State(services): State<Arc<Services>>, auth: Auth) -> Response {
    match &services.config.turn {
        Some(turn) => {
            let expires_s = (now_ms() / 1000) as u64 + turn.user_lifetime_s;
            Json(credentials(turn, &auth.who.user_id, expires_s)).into_response()
        }
        None => Json(EmptyResponse {}).into_response(),
    }
}

/// coturn's `use-auth-secret` scheme: the user name is the expiry time and
/// the user, the password their HMAC-SHA1 under the shared secret, so the
/// TURN server checks them without asking us.
fn credentials(
    turn: &TurnConfig,
    user_id: &ruma_common::UserId,
    expires_s: u64,
) -> TurnServerResponse {
    let username = format!("{expires_s}:{user_id}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(turn.shared_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnServerResponse {
        username,
        password,
        uris: turn.uris.clone(),
        ttl: turn.user_lifetime_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_coturns_scheme() {
        let turn = TurnConfig {
            uris: vec!["turn:turn.example.org:3478?transport=udp".into()],
            shared_secret: "s3cret".into(),
            user_lifetime_s: 600,
        };
        let user: ruma_common::OwnedUserId = "@alice:example.org".try_into().unwrap();
        let answer = credentials(&turn, &user, 1_700_000_000);
        assert_eq!(answer.username, "1700000000:@alice:example.org");
        // `printf '1700000000:@alice:example.org' | openssl dgst -sha1 -hmac s3cret -binary | base64`
        assert_eq!(answer.password, "oKcYiX5WLXOJY95WjqLUBOVFmFk=");
        assert_eq!(answer.ttl, 600);
    }
}
