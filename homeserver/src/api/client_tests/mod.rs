//! Router tests of the everyday Client-Server API beyond messaging:
//! accounts (deactivation, profile fields, ignored users, the user
//! directory) here, rooms
//! (tags, listing, jumping to a date, reports) in `rooms.rs`, relations and
//! threads in `relations.rs`, and the
//! services this server does not run in `refusals.rs`.

mod refusals;
mod relations;
mod rooms;

use axum::http::StatusCode;
use axum::Router;
use serde_json::{json, Value};

use super::tests::{app, call, get, post, put, register};

const V3: &str = "/_matrix/client/v3";

async fn create_room(app: &Router, token: &str, body: Value) -> String {
    let (status, json) = post(app, "/createRoom", token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["room_id"].as_str().unwrap().to_owned()
}

async fn join(app: &Router, token: &str, room: &str) {
    let (status, json) = post(app, &format!("/join/{room}"), token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

async fn say(app: &Router, token: &str, room: &str, text: &str) -> String {
    let path = format!("/rooms/{room}/send/m.room.message/{text}");
    let (status, json) = put(
        app,
        &path,
        token,
        json!({"msgtype": "m.text", "body": text}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["event_id"].as_str().unwrap().to_owned()
}

async fn sync(app: &Router, token: &str) -> Value {
    let (status, body) = get(app, "/sync?timeout=0", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The message bodies of a room's timeline in a sync response.
fn bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn password_auth(user: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "pw"})
}

#[tokio::test]
async fn deactivation_asks_for_the_password_then_parts_and_locks_the_account() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let room = create_room(&app, &alice, json!({"preset": "public_chat"})).await;
    join(&app, &bob, &room).await;
    let other = create_room(&app, &alice, json!({"invite": ["@bob:localhost"]})).await;

    let (status, body) = post(&app, "/account/deactivate", &bob, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["flows"][0]["stages"][0], "m.login.password");
    let wrong = json!({"type": "m.login.password", "user": "bob", "password": "no", "session": body["session"]});
    let (status, _) = post(&app, "/account/deactivate", &bob, json!({"auth": wrong})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&app, "/account/whoami", Some(&bob)).await;
    assert_eq!(status, StatusCode::OK, "a failed attempt changes nothing");

    let (status, body) = post(
        &app,
        "/account/deactivate",
        &bob,
        json!({"auth": password_auth("bob")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");

    let (status, body) = get(&app, "/account/whoami", Some(&bob)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN"))
    );
    let login = json!({"type": "m.login.password", "user": "bob", "password": "pw"});
    let (status, body) = call(
        &app,
        "POST",
        &format!("{V3}/login"),
        None,
        Some(&login.to_string()),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_USER_DEACTIVATED"))
    );
    let again = json!({"username": "bob", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let (_, body) = call(
        &app,
        "POST",
        &format!("{V3}/register"),
        None,
        Some(&again.to_string()),
    )
    .await;
    assert_eq!(body["errcode"], "M_USER_IN_USE");

    // Alice sees Bob gone from the room he was in and the one he was invited to.
    for room in [&room, &other] {
        let (_, state) = get(
            &app,
            &format!("/rooms/{room}/state/m.room.member/@bob:localhost"),
            Some(&alice),
        )
        .await;
        assert_eq!(state["membership"], "leave", "{room}");
    }
    let (_, profile) = get(&app, "/profile/@bob:localhost", None).await;
    assert_eq!(profile, json!({}), "the profile is cleared");
}

#[tokio::test]
async fn profile_fields_are_set_read_and_removed() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let room = create_room(&app, &alice, json!({})).await;

    let me = "/profile/@alice:localhost";
    let (status, _) = put(
        &app,
        &format!("{me}/m.tz"),
        &alice,
        json!({"m.tz": "Europe/Paris"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put(
        &app,
        &format!("{me}/org.example.langs"),
        &alice,
        json!({"org.example.langs": ["fr", "en"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, field) = get(&app, &format!("{me}/m.tz"), None).await;
    assert_eq!(field, json!({"m.tz": "Europe/Paris"}));
    let (_, profile) = get(&app, me, None).await;
    assert_eq!(
        profile,
        json!({"displayname": "alice", "m.tz": "Europe/Paris", "org.example.langs": ["fr", "en"]})
    );

    // The display name through the generic route renames Alice in her rooms too.
    let (status, _) = put(
        &app,
        &format!("{me}/displayname"),
        &alice,
        json!({"displayname": "Alice A."}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, member) = get(
        &app,
        &format!("/rooms/{room}/state/m.room.member/@alice:localhost"),
        Some(&alice),
    )
    .await;
    assert_eq!(member["displayname"], "Alice A.");

    let (status, _) = call(
        &app,
        "DELETE",
        &format!("{V3}{me}/m.tz"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&app, &format!("{me}/m.tz"), None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    // Refusals: someone else's profile, a mismatched body, a long name, a huge profile.
    let (status, body) = put(&app, &format!("{me}/m.tz"), &bob, json!({"m.tz": "UTC"})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    let (_, body) = put(&app, &format!("{me}/m.tz"), &alice, json!({"other": "UTC"})).await;
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let (_, body) = put(
        &app,
        &format!("{me}/displayname"),
        &alice,
        json!({"displayname": 5}),
    )
    .await;
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let long = "k".repeat(256);
    let (_, body) = put(
        &app,
        &format!("{me}/{long}"),
        &alice,
        json!({ long.clone(): 1 }),
    )
    .await;
    assert_eq!(body["errcode"], "M_KEY_TOO_LARGE");
    let huge = "x".repeat(70 * 1024);
    let (_, body) = put(&app, &format!("{me}/big"), &alice, json!({"big": huge})).await;
    assert_eq!(body["errcode"], "M_PROFILE_TOO_LARGE");
    let (_, field) = get(&app, &format!("{me}/big"), None).await;
    assert_eq!(
        field["errcode"], "M_NOT_FOUND",
        "a refused field is not stored"
    );
}

#[tokio::test]
async fn ignored_users_messages_and_invites_are_hidden() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let room = create_room(&app, &alice, json!({"preset": "public_chat"})).await;
    join(&app, &bob, &room).await;
    join(&app, &carol, &room).await;

    let list = "/user/@alice:localhost/account_data/m.ignored_user_list";
    let (status, body) = put(
        &app,
        list,
        &alice,
        json!({"ignored_users": ["@bob:localhost"]}),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON"))
    );
    let (status, _) = put(
        &app,
        list,
        &alice,
        json!({"ignored_users": {"@bob:localhost": {}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    say(&app, &bob, &room, "from-bob").await;
    say(&app, &carol, &room, "from-carol").await;
    let seen = bodies(&sync(&app, &alice).await, &room);
    assert!(seen.contains(&"from-carol".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"from-bob".to_owned()), "{seen:?}");
    let (_, page) = get(
        &app,
        &format!("/rooms/{room}/messages?dir=b&limit=20"),
        Some(&alice),
    )
    .await;
    let texts: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(texts, ["from-carol"]);
    // Bob's membership (state) still shows: the room's state is the room's.
    assert!(page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["state_key"] == "@bob:localhost"));

    // An invite from Bob does not show; one from Carol does.
    let by_bob = create_room(&app, &bob, json!({"invite": ["@alice:localhost"]})).await;
    let by_carol = create_room(&app, &carol, json!({"invite": ["@alice:localhost"]})).await;
    let invites = sync(&app, &alice).await["rooms"]["invite"].clone();
    assert!(invites.get(&by_carol).is_some(), "{invites}");
    assert!(invites.get(&by_bob).is_none(), "{invites}");

    // Un-ignoring shows Bob's new messages again.
    let (status, _) = put(&app, list, &alice, json!({"ignored_users": {}})).await;
    assert_eq!(status, StatusCode::OK);
    say(&app, &bob, &room, "bob-again").await;
    assert!(bodies(&sync(&app, &alice).await, &room).contains(&"bob-again".to_owned()));
}

#[tokio::test]
async fn the_user_directory_finds_co_members_and_people_in_public_rooms() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let dave = register(&app, "dave").await;
    register(&app, "hermit").await; // in no room: nobody finds them
    let (status, _) = put(
        &app,
        "/profile/@bob:localhost/displayname",
        &bob,
        json!({"displayname": "Bobby 50%_off"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Alice shares a private room with Bob; Carol is in a public room.
    let private = create_room(&app, &alice, json!({"invite": ["@bob:localhost"]})).await;
    join(&app, &bob, &private).await;
    create_room(&app, &carol, json!({"preset": "public_chat"})).await;
    // Dave is in a private room of his own.
    create_room(&app, &dave, json!({})).await;

    let search = |term: &str, limit: i64| json!({"search_term": term, "limit": limit});
    let found = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, body) = post(&app, "/user_directory/search", &alice, search("bob", 10)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(found(&body), ["@bob:localhost"]);
    assert_eq!(body["results"][0]["display_name"], "Bobby 50%_off");
    // By display name, any case; `%` and `_` are matched as themselves.
    let (_, body) = post(&app, "/user_directory/search", &alice, search("BOBBY", 10)).await;
    assert_eq!(found(&body), ["@bob:localhost"]);
    let (_, body) = post(&app, "/user_directory/search", &alice, search("50%_", 10)).await;
    assert_eq!(found(&body), ["@bob:localhost"]);
    let (_, body) = post(&app, "/user_directory/search", &alice, search("5_%", 10)).await;
    assert_eq!(found(&body), Vec::<String>::new());
    let (_, body) = post(&app, "/user_directory/search", &alice, search("carol", 10)).await;
    assert_eq!(found(&body), ["@carol:localhost"], "in a public room");
    for hidden in ["dave", "hermit"] {
        let (_, body) = post(&app, "/user_directory/search", &alice, search(hidden, 10)).await;
        assert_eq!(found(&body), Vec::<String>::new(), "{hidden}");
    }
    // `limited` when more matched than asked for.
    let (_, body) = post(
        &app,
        "/user_directory/search",
        &alice,
        search("localhost", 2),
    )
    .await;
    assert_eq!((found(&body).len(), &body["limited"]), (2, &json!(true)));
    let (_, body) = post(
        &app,
        "/user_directory/search",
        &alice,
        search("localhost", 10),
    )
    .await;
    assert_eq!(
        (found(&body), &body["limited"]),
        (
            vec![
                "@alice:localhost".to_owned(),
                "@bob:localhost".into(),
                "@carol:localhost".into()
            ],
            &json!(false)
        )
    );
    // Kept current: once Bob leaves their only shared room, Alice no longer finds him.
    let (status, _) = post(&app, &format!("/rooms/{private}/leave"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = post(&app, "/user_directory/search", &alice, search("bob", 10)).await;
    assert_eq!(found(&body), Vec::<String>::new());
    let (_, body) = post(&app, "/user_directory/search", &alice, json!({"limit": 3})).await;
    assert_eq!(body["errcode"], "M_BAD_JSON");
}
