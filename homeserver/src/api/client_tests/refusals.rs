//! What needs a service this server does not run (mail, SMS, identity
//! servers, bridges) is refused clearly; TURN and the support contacts
//! answer from the configuration.

use axum::http::StatusCode;
use serde_json::json;

use super::super::tests::{app, app_with, call, register};
use super::{get, post, V3};
use crate::config::client::{SupportConfig, SupportContact, TurnConfig};
use crate::config::Config;

#[tokio::test]
async fn third_party_ids_are_refused_clearly() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let (_, body) = get(&app, "/account/3pid", Some(&alice)).await;
    assert_eq!(body, json!({"threepids": []}));
    let email = json!({"client_secret": "s", "email": "a@example.org", "send_attempt": 1});
    let phone = json!({"client_secret": "s", "country": "FR", "phone_number": "0600000000", "send_attempt": 1});
    for (path, body) in [
        ("/register/email/requestToken", &email),
        ("/account/password/email/requestToken", &email),
        ("/account/3pid/email/requestToken", &email),
        ("/register/msisdn/requestToken", &phone),
        ("/account/password/msisdn/requestToken", &phone),
        ("/account/3pid/msisdn/requestToken", &phone),
    ] {
        let (status, answer) = call(
            &app,
            "POST",
            &format!("{V3}{path}"),
            None,
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (StatusCode::FORBIDDEN, Some("M_THREEPID_DENIED")),
            "{path}"
        );
        let (status, answer) = call(&app, "POST", &format!("{V3}{path}"), None, Some("{}")).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
            "{path}"
        );
    }
    let session = json!({"client_secret": "s", "sid": "1"});
    let (_, body) = post(&app, "/account/3pid/add", &alice, session.clone()).await;
    assert_eq!(body["errcode"], "M_THREEPID_AUTH_FAILED");
    let (_, body) = post(&app, "/account/3pid/bind", &alice, session).await;
    assert_eq!(body["errcode"], "M_SERVER_NOT_TRUSTED");
    let threepid = json!({"medium": "email", "address": "a@example.org"});
    for path in ["/account/3pid/delete", "/account/3pid/unbind"] {
        let (status, body) = post(&app, path, &alice, threepid.clone()).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::OK,
                json!({"id_server_unbind_result": "no-support"})
            )
        );
    }
}

#[tokio::test]
async fn third_party_networks_are_empty() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let (_, body) = get(&app, "/thirdparty/protocols", Some(&alice)).await;
    assert_eq!(body, json!({}));
    for path in [
        "/thirdparty/protocol/irc",
        "/thirdparty/location/irc",
        "/thirdparty/user/irc",
    ] {
        let (status, _) = get(&app, path, Some(&alice)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, body) = get(&app, "/thirdparty/location?alias=%23a:b", Some(&alice)).await;
    assert_eq!(body, json!([]));
    let (_, body) = get(&app, "/thirdparty/user?userid=x", Some(&alice)).await;
    assert_eq!(body, json!([]));
    let (_, body) = get(&app, "/thirdparty/user", Some(&alice)).await;
    assert_eq!(body["errcode"], "M_MISSING_PARAM");
}

#[tokio::test]
async fn turn_credentials_and_support_come_from_the_configuration() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let (_, body) = get(&app, "/voip/turnServer", Some(&alice)).await;
    assert_eq!(body, json!({}), "no TURN server configured");
    let (status, _) = call(&app, "GET", "/.well-known/matrix/support", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_dir, app) = app_with(Config {
        turn: Some(TurnConfig {
            uris: vec!["turn:turn.example.org:3478?transport=udp".into()],
            shared_secret: "s3cret".into(),
            user_lifetime_s: 600,
        }),
        support: Some(SupportConfig {
            contacts: vec![SupportContact {
                role: "m.role.admin".into(),
                matrix_id: Some("@admin:localhost".try_into().unwrap()),
                email_address: None,
            }],
            support_page: Some("https://example.org/help".into()),
        }),
        ..Config::default()
    })
    .await;
    let alice = register(&app, "alice").await;
    let (_, body) = get(&app, "/voip/turnServer", Some(&alice)).await;
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "@alice:localhost");
    let expiry: i64 = expiry.parse().unwrap();
    let now = crate::service::rooms::now_ms() / 1000;
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(
        body["password"].as_str().unwrap().len(),
        28,
        "base64 of a SHA-1 HMAC"
    );
    assert_eq!(
        (body["ttl"].as_u64(), &body["uris"]),
        (
            Some(600),
            &json!(["turn:turn.example.org:3478?transport=udp"])
        )
    );
    let (_, body) = call(&app, "GET", "/.well-known/matrix/support", None, None).await;
    assert_eq!(
        body,
        json!({"contacts": [{"role": "m.role.admin", "matrix_id": "@admin:localhost"}], "support_page": "https://example.org/help"})
    );
}
