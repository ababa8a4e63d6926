//! Tags, directory listing, jumping to a date, mutual rooms and reports.

use axum::http::StatusCode;
use serde_json::json;

use super::super::tests::{app, app_and_services, call, register};
use super::{create_room, get, join, post, put, say, sync, V3};
use crate::config::Config;

#[tokio::test]
async fn tags_are_room_account_data_edited_one_at_a_time() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let room = create_room(&app, &alice, json!({})).await;
    let tags = format!("/user/@alice:localhost/rooms/{room}/tags");

    let (_, empty) = get(&app, &tags, Some(&alice)).await;
    assert_eq!(empty, json!({"tags": {}}));
    let (status, _) = put(
        &app,
        &format!("{tags}/m.favourite"),
        &alice,
        json!({"order": 0.25}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put(&app, &format!("{tags}/u.work"), &alice, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) = get(&app, &tags, Some(&alice)).await;
    assert_eq!(
        listed,
        json!({"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}})
    );
    // Clients read them from sync, as the room's `m.tag` account data.
    let synced = sync(&app, &alice).await;
    let data = synced["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let tag = data
        .iter()
        .find(|e| e["type"] == "m.tag")
        .expect("m.tag in sync");
    assert_eq!(tag["content"]["tags"]["m.favourite"]["order"], 0.25);

    let (status, _) = call(
        &app,
        "DELETE",
        &format!("{V3}{tags}/m.favourite"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        "DELETE",
        &format!("{V3}{tags}/never"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "removing an absent tag is done already"
    );
    let (_, listed) = get(&app, &tags, Some(&alice)).await;
    assert_eq!(listed, json!({"tags": {"u.work": {}}}));

    let (status, _) = get(&app, &tags, Some(&bob)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, body) = put(&app, &format!("{tags}/x"), &alice, json!({"order": "high"})).await;
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let long = "t".repeat(256);
    let (_, body) = put(&app, &format!("{tags}/{long}"), &alice, json!({})).await;
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
}

#[tokio::test]
async fn only_moderators_list_a_room_in_the_directory() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let room = create_room(&app, &alice, json!({"preset": "public_chat"})).await;
    join(&app, &bob, &room).await;
    let listing = format!("/directory/list/room/{room}");

    let (_, body) = get(&app, &listing, None).await;
    assert_eq!(body, json!({"visibility": "private"}));
    let (status, _) = put(&app, &listing, &bob, json!({"visibility": "public"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a plain member may not");
    let (_, body) = put(&app, &listing, &alice, json!({"visibility": "everyone"})).await;
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
    let (status, _) = put(&app, &listing, &alice, json!({"visibility": "public"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = get(&app, &listing, None).await;
    assert_eq!(body, json!({"visibility": "public"}));
    let (_, public) = get(&app, "/publicRooms", Some(&bob)).await;
    assert!(public["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["room_id"] == room));
    let (status, _) = put(&app, &listing, &alice, json!({"visibility": "private"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, public) = get(&app, "/publicRooms", Some(&bob)).await;
    assert!(public["chunk"].as_array().unwrap().is_empty());

    let (status, body) = get(&app, "/directory/list/room/!nowhere:localhost", None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
}

/// The `origin_server_ts` of an event, as `/event` shows it.
async fn sent_at(app: &axum::Router, token: &str, room: &str, event: &str) -> i64 {
    let (_, body) = get(app, &format!("/rooms/{room}/event/{event}"), Some(token)).await;
    body["origin_server_ts"].as_i64().unwrap()
}

#[tokio::test]
async fn timestamp_to_event_finds_the_nearest_visible_event() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let room = create_room(&app, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..30 {
        let id = say(&app, &alice, &room, &format!("m{i}")).await;
        sent.push((sent_at(&app, &alice, &room, &id).await, id));
    }
    let jump = |ts: i64, dir: &str| {
        format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}")
    };
    // For several messages: forward from its time lands on the first event
    // sent at or after it, backward on the last at or before it.
    for i in [0, 7, 15, 29] {
        let (ts, _) = &sent[i];
        let first_at = sent.iter().find(|(t, _)| t >= ts).unwrap();
        let last_at = sent.iter().rev().find(|(t, _)| t <= ts).unwrap();
        let (status, body) = call(&app, "GET", &jump(*ts, "f"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["event_id"], first_at.1.as_str());
        assert_eq!(body["origin_server_ts"], *ts);
        let (_, body) = call(&app, "GET", &jump(*ts, "b"), Some(&alice), None).await;
        assert_eq!(body["event_id"], last_at.1.as_str());
    }
    // After the last message there is nothing forward; before the room, nothing backward.
    let last = sent.last().unwrap().0;
    let (status, body) = call(&app, "GET", &jump(last + 60_000, "f"), Some(&alice), None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let (_, body) = call(&app, "GET", &jump(last + 60_000, "b"), Some(&alice), None).await;
    assert_eq!(body["event_id"], sent.last().unwrap().1.as_str());
    let (status, _) = call(&app, "GET", &jump(1, "b"), Some(&alice), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A stranger to a private room learns nothing; bad parameters are refused.
    let (status, _) = call(&app, "GET", &jump(last, "b"), Some(&bob), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let path = format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event");
    for (query, errcode) in [
        ("?dir=f", "M_MISSING_PARAM"),
        ("?ts=1", "M_MISSING_PARAM"),
        ("?ts=x&dir=f", "M_INVALID_PARAM"),
        ("?ts=1&dir=up", "M_INVALID_PARAM"),
    ] {
        let (status, body) = call(&app, "GET", &format!("{path}{query}"), Some(&alice), None).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some(errcode)),
            "{query}"
        );
    }
}

#[tokio::test]
async fn mutual_rooms_are_the_rooms_both_joined() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let shared = create_room(&app, &alice, json!({"preset": "public_chat"})).await;
    join(&app, &bob, &shared).await;
    create_room(&app, &alice, json!({})).await;
    create_room(&app, &bob, json!({"invite": ["@alice:localhost"]})).await;
    let uri = "/_matrix/client/v1/mutual_rooms?user_id=@bob:localhost";
    let (status, body) = call(&app, "GET", uri, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"joined": [shared], "count": 1}));
    let (_, body) = call(
        &app,
        "GET",
        "/_matrix/client/v1/mutual_rooms?user_id=@nobody:localhost",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        body,
        json!({"joined": [], "count": 0}),
        "nobody's id: no rooms, as the spec asks"
    );
    for invalid in ["nobody", "@alice:localhost"] {
        let uri = format!("/_matrix/client/v1/mutual_rooms?user_id={invalid}");
        let (status, body) = call(&app, "GET", &uri, Some(&alice), None).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
            "{invalid}"
        );
    }
    let (_, body) = call(
        &app,
        "GET",
        "/_matrix/client/v1/mutual_rooms",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(body["errcode"], "M_MISSING_PARAM");
}

#[tokio::test]
async fn reports_are_kept_for_the_administrators() {
    let (_dir, services, app) = app_and_services(Config::default()).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let room = create_room(&app, &alice, json!({"preset": "public_chat"})).await;
    let secret = create_room(&app, &alice, json!({})).await;
    join(&app, &bob, &room).await;
    let spam = say(&app, &alice, &room, "spam").await;
    let hidden = say(&app, &alice, &secret, "hidden").await;

    let (status, _) = post(
        &app,
        &format!("/rooms/{room}/report/{spam}"),
        &bob,
        json!({"reason": "spam", "score": -100}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        &app,
        &format!("/rooms/{room}/report"),
        &bob,
        json!({"reason": "whole room"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        &app,
        "/users/@alice:localhost/report",
        &bob,
        json!({"reason": "rude"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // What Bob cannot see, and what does not exist, is "not found".
    let (status, _) = post(
        &app,
        &format!("/rooms/{secret}/report/{hidden}"),
        &bob,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, "/rooms/!nowhere:localhost/report", &bob, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, "/users/@nobody:localhost/report", &bob, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = post(
        &app,
        &format!("/rooms/{room}/report/{spam}"),
        &bob,
        json!({"score": 5}),
    )
    .await;
    assert_eq!(body["errcode"], "M_INVALID_PARAM");

    let reports = services.accounts.reports(0, 10).await.unwrap();
    assert_eq!(reports.len(), 3);
    assert!(reports.iter().all(|r| r.reporter == "@bob:localhost"));
    assert_eq!(
        reports[0].event_id.as_deref().map(|e| e.as_str()),
        Some(spam.as_str())
    );
    assert_eq!(reports[0].score, Some(-100));
    assert_eq!(
        (
            reports[1].room_id.as_deref().map(|r| r.as_str()),
            reports[1].event_id.as_ref()
        ),
        (Some(room.as_str()), None)
    );
    assert_eq!(
        reports[2].user_id.as_deref().map(|u| u.as_str()),
        Some("@alice:localhost")
    );
}

#[tokio::test]
async fn former_members_read_the_room_as_they_left_it() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let room = create_room(
        &app,
        &alice,
        json!({"preset": "public_chat", "name": "Before"}),
    )
    .await;
    join(&app, &bob, &room).await;
    let (status, _) = post(&app, &format!("/rooms/{room}/leave"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // A pagination token from before Carol came.
    let (_, page) = get(
        &app,
        &format!("/rooms/{room}/messages?dir=b&limit=1"),
        Some(&alice),
    )
    .await;
    let before_carol = page["start"].as_str().unwrap().to_owned();
    let (status, _) = put(
        &app,
        &format!("/rooms/{room}/state/m.room.name/"),
        &alice,
        json!({"name": "After"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    join(&app, &carol, &room).await;

    let (status, name) = get(
        &app,
        &format!("/rooms/{room}/state/m.room.name/"),
        Some(&bob),
    )
    .await;
    assert_eq!((status, &name["name"]), (StatusCode::OK, &json!("Before")));
    let (_, state) = get(&app, &format!("/rooms/{room}/state"), Some(&bob)).await;
    let members: Vec<&str> = state
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(
        members.contains(&"@bob:localhost") && !members.contains(&"@carol:localhost"),
        "{members:?}"
    );
    let (_, members) = get(&app, &format!("/rooms/{room}/members"), Some(&bob)).await;
    assert_eq!(
        members["chunk"].as_array().unwrap().len(),
        2,
        "Alice and Bob, as he left them"
    );

    // `at` gives the members at that point; the membership filters apply to them.
    let (_, now) = get(
        &app,
        &format!("/rooms/{room}/members?membership=join"),
        Some(&alice),
    )
    .await;
    assert_eq!(now["chunk"].as_array().unwrap().len(), 2, "Alice and Carol");
    let (_, then) = get(
        &app,
        &format!("/rooms/{room}/members?at={before_carol}"),
        Some(&alice),
    )
    .await;
    let then: Vec<(&str, &str)> = then["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state_key"].as_str().unwrap(),
                e["content"]["membership"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(then.len(), 2, "{then:?}");
    assert!(
        then.contains(&("@bob:localhost", "leave")) && then.contains(&("@alice:localhost", "join"))
    );
    let (_, body) = get(
        &app,
        &format!("/rooms/{room}/members?at=nonsense"),
        Some(&alice),
    )
    .await;
    assert_eq!(body["errcode"], "M_INVALID_PARAM");

    // Once Bob forgets the room, he reads it as a stranger, and an
    // include_leave sync no longer lists it.
    let (status, _) = post(&app, &format!("/rooms/{room}/forget"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&app, &format!("/rooms/{room}/state"), Some(&bob)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let filter = urlencode(&json!({"room": {"include_leave": true}}).to_string());
    let (_, synced) = get(
        &app,
        &format!("/sync?timeout=0&filter={filter}"),
        Some(&bob),
    )
    .await;
    assert!(
        synced["rooms"]["leave"].get(&room).is_none(),
        "{}",
        synced["rooms"]
    );
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
