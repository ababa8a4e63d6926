//! Accounts and devices: registration (with its interactive-auth dance), login,
//! logout, password change and profiles, checked the way a client uses them.

use serde_json::{json, Value};
use tern_tests::{
    assert_error, assert_ok, enc, errcode, Client, ServerOptions, TestServer, PASSWORD, V3,
};

fn password_login(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
}

#[tokio::test]
async fn registration_follows_user_interactive_auth() {
    let server = TestServer::start().await;
    let anon = Client::anonymous(&server);
    let register = format!("{V3}/register");
    let mut body = json!({"username": "alice", "password": PASSWORD});

    let (status, challenge) = anon.post(&register, &body).await;
    assert_eq!(status, 401, "first request without auth: {challenge}");
    let flows = challenge["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows in {challenge}"));
    assert!(
        flows.iter().any(|f| f["stages"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "m.login.dummy"))),
        "a flow with m.login.dummy: {challenge}"
    );
    let session = challenge["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {challenge}"));

    body["auth"] = json!({"type": "m.login.dummy", "session": session});
    let done = assert_ok(anon.post(&register, &body).await);
    assert_eq!(done["user_id"], "@alice:localhost");
    let token = done["access_token"].as_str().expect("access_token");
    assert!(done["device_id"].is_string(), "{done}");

    let whoami = assert_ok(
        anon.with_token(Some(token))
            .get(&format!("{V3}/account/whoami"))
            .await,
    );
    assert_eq!(whoami["user_id"], "@alice:localhost");
    assert_eq!(whoami["device_id"], done["device_id"]);
}

#[tokio::test]
async fn username_availability() {
    let server = TestServer::start().await;
    let anon = Client::anonymous(&server);
    let available = |name: &str| format!("{V3}/register/available?username={}", enc(name));

    let free = assert_ok(anon.get(&available("bob")).await);
    assert_eq!(free["available"], true);
    Client::register(&server, "bob").await;
    assert_error(&anon.get(&available("bob")).await, 400, "M_USER_IN_USE");
    assert_error(
        &anon.get(&available("Not Valid!")).await,
        400,
        "M_INVALID_USERNAME",
    );
}

#[tokio::test]
async fn inhibit_login_registers_without_a_session() {
    let server = TestServer::start().await;
    let anon = Client::anonymous(&server);
    let done = assert_ok(
        anon.post(
            &format!("{V3}/register"),
            &json!({
                "username": "carol",
                "password": PASSWORD,
                "inhibit_login": true,
                "auth": {"type": "m.login.dummy"},
            }),
        )
        .await,
    );
    assert_eq!(done["user_id"], "@carol:localhost");
    assert!(done.get("access_token").is_none(), "{done}");
    assert!(done.get("device_id").is_none(), "{done}");
    // The account exists all the same.
    Client::login(&server, "carol", PASSWORD).await;
}

#[tokio::test]
async fn login_with_password() {
    let server = TestServer::start().await;
    let anon = Client::anonymous(&server);
    let first = Client::register(&server, "alice").await;

    let flows = assert_ok(anon.get(&format!("{V3}/login")).await);
    assert!(
        flows["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["type"] == "m.login.password")),
        "{flows}"
    );

    // By localpart and by full user id; each login is a new device.
    let by_local = Client::login(&server, "alice", PASSWORD).await;
    let by_mxid = Client::login(&server, "@alice:localhost", PASSWORD).await;
    assert_eq!(by_local.user_id, "@alice:localhost");
    assert_eq!(by_mxid.user_id, "@alice:localhost");
    assert_ne!(by_local.device_id, first.device_id);
    assert_ne!(by_local.device_id, by_mxid.device_id);
    let whoami = assert_ok(by_local.get(&format!("{V3}/account/whoami")).await);
    assert_eq!(whoami["device_id"], by_local.device_id.as_str());

    // A device id the client asks for is kept.
    let named = assert_ok(
        anon.post(
            &format!("{V3}/login"),
            &json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": PASSWORD,
                "device_id": "MYPHONE",
            }),
        )
        .await,
    );
    assert_eq!(named["device_id"], "MYPHONE");

    let login = format!("{V3}/login");
    assert_error(
        &anon.post(&login, &password_login("alice", "wrong")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &anon.post(&login, &password_login("nobody", PASSWORD)).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn logout_revokes_only_that_token_and_logout_all_revokes_every_one() {
    let server = TestServer::start().await;
    let phone = Client::register(&server, "alice").await;
    let laptop = Client::login(&server, "alice", PASSWORD).await;
    let tablet = Client::login(&server, "alice", PASSWORD).await;
    let whoami = format!("{V3}/account/whoami");

    assert_ok(phone.post(&format!("{V3}/logout"), &json!({})).await);
    assert_error(&phone.get(&whoami).await, 401, "M_UNKNOWN_TOKEN");
    assert_ok(laptop.get(&whoami).await);

    assert_ok(laptop.post(&format!("{V3}/logout/all"), &json!({})).await);
    assert_error(&laptop.get(&whoami).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&tablet.get(&whoami).await, 401, "M_UNKNOWN_TOKEN");

    // Logging out does not delete the account.
    Client::login(&server, "alice", PASSWORD).await;
}

#[tokio::test]
async fn change_password_with_user_interactive_auth() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let other_device = Client::login(&server, "alice", PASSWORD).await;
    let change = format!("{V3}/account/password");
    let new_password = "a much better password";
    let auth = |password: &str| {
        json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": password,
        })
    };

    // The wrong current password is refused and changes nothing.
    let (status, body) = alice
        .post(
            &change,
            &json!({"new_password": new_password, "auth": auth("wrong")}),
        )
        .await;
    assert!(
        (status == 401 || status == 403) && errcode(&body) == "M_FORBIDDEN",
        "wrong current password: {status} {body}"
    );

    let mut request = json!({"new_password": new_password, "auth": auth(PASSWORD)});
    let (mut status, mut body) = alice.post(&change, &request).await;
    if status == 401 {
        // A server may insist on a UIA session first; a client then retries with it.
        let session = body["session"].as_str().unwrap_or_default().to_owned();
        request["auth"]["session"] = json!(session);
        (status, body) = alice.post(&change, &request).await;
    }
    assert_eq!(status, 200, "change password: {body}");

    let login = format!("{V3}/login");
    let anon = Client::anonymous(&server);
    assert_error(
        &anon.post(&login, &password_login("alice", PASSWORD)).await,
        403,
        "M_FORBIDDEN",
    );
    Client::login(&server, "alice", new_password).await;

    // The device that changed the password stays logged in; by default the
    // others are logged out (logout_devices defaults to true).
    let whoami = format!("{V3}/account/whoami");
    assert_ok(alice.get(&whoami).await);
    assert_error(&other_device.get(&whoami).await, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn profile_displayname_and_avatar() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let me = enc(&alice.user_id);
    let displayname = format!("{V3}/profile/{me}/displayname");
    let avatar = format!("{V3}/profile/{me}/avatar_url");

    assert_ok(
        alice
            .put(&displayname, &json!({"displayname": "Alice A."}))
            .await,
    );
    assert_ok(
        alice
            .put(&avatar, &json!({"avatar_url": "mxc://localhost/abcdef"}))
            .await,
    );

    // Anyone can read it back, field by field or whole.
    assert_eq!(
        assert_ok(bob.get(&displayname).await)["displayname"],
        "Alice A."
    );
    assert_eq!(
        assert_ok(bob.get(&avatar).await)["avatar_url"],
        "mxc://localhost/abcdef"
    );
    let profile = assert_ok(bob.get(&format!("{V3}/profile/{me}")).await);
    assert_eq!(profile["displayname"], "Alice A.");
    assert_eq!(profile["avatar_url"], "mxc://localhost/abcdef");

    // Nobody else can change it.
    assert_error(
        &bob.put(&displayname, &json!({"displayname": "Mallory"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        assert_ok(alice.get(&displayname).await)["displayname"],
        "Alice A."
    );

    // A profile of a user that does not exist is 404.
    assert_error(
        &bob.get(&format!("{V3}/profile/{}", enc("@ghost:localhost")))
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn the_display_name_shows_in_rooms() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    assert_ok(
        alice
            .put(
                &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
                &json!({"displayname": "Alice A."}),
            )
            .await,
    );
    let room = alice.create_room(&json!({})).await;
    let member = assert_ok(
        alice
            .get(&format!(
                "{V3}/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&alice.user_id)
            ))
            .await,
    );
    assert_eq!(member["displayname"], "Alice A.", "{member}");
}

#[tokio::test]
async fn registration_is_refused_when_not_allowed() {
    let server = TestServer::start_with(ServerOptions {
        allow_registration: false,
        ..ServerOptions::default()
    })
    .await;
    let anon = Client::anonymous(&server);
    let attempt = json!({
        "username": "alice",
        "password": PASSWORD,
        "auth": {"type": "m.login.dummy"},
    });
    assert_error(
        &anon.post(&format!("{V3}/register"), &attempt).await,
        403,
        "M_FORBIDDEN",
    );
    // The rest of the server works: login still lists its flows.
    assert_ok(anon.get(&format!("{V3}/login")).await);
}
