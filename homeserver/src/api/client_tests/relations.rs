//! Relations, threads and the summaries bundled with events.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::super::tests::{app, call, register};
use super::{create_room, get, join, put, say, sync};

const V1: &str = "/_matrix/client/v1";

async fn relate(app: &axum::Router, token: &str, room: &str, txn: &str, content: Value) -> String {
    let path = format!("/rooms/{room}/send/m.room.message/{txn}");
    let (status, body) = put(app, &path, token, content).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

fn reply(root: &str, text: &str) -> Value {
    json!({"msgtype": "m.text", "body": text, "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

fn edit(target: &str, text: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("* {text}"), "m.new_content": {"msgtype": "m.text", "body": text},
           "m.relates_to": {"rel_type": "m.replace", "event_id": target}})
}

fn bodies(chunk: &Value) -> Vec<&str> {
    chunk
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn threads_edits_and_references_are_listed_and_bundled() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let room = create_room(&app, &alice, json!({"preset": "public_chat"})).await;
    join(&app, &bob, &room).await;
    join(&app, &carol, &room).await;

    let root = say(&app, &alice, &room, "root").await;
    let other = say(&app, &carol, &room, "other-root").await;
    relate(&app, &bob, &room, "r1", reply(&root, "first reply")).await;
    let second = relate(&app, &alice, &room, "r2", reply(&root, "second reply")).await;
    relate(
        &app,
        &carol,
        &room,
        "r3",
        reply(&other, "carol's own thread"),
    )
    .await;
    relate(&app, &alice, &room, "e1", edit(&root, "root, edited")).await;
    relate(&app, &bob, &room, "e2", edit(&root, "bob may not edit")).await;
    let note = json!({"msgtype": "m.text", "body": "see above", "m.relates_to": {"rel_type": "m.reference", "event_id": root}});
    let reference = relate(&app, &carol, &room, "f1", note).await;

    // The root, as /event gives it, bundles its thread, Alice's edit (not
    // Bob's) and the reference.
    let (_, event) = get(&app, &format!("/rooms/{room}/event/{root}"), Some(&bob)).await;
    let bundle = &event["unsigned"]["m.relations"];
    assert_eq!(bundle["m.thread"]["count"], 2);
    assert_eq!(
        bundle["m.thread"]["latest_event"]["event_id"],
        second.as_str()
    );
    assert_eq!(
        bundle["m.thread"]["current_user_participated"], true,
        "Bob replied"
    );
    assert_eq!(
        bundle["m.replace"]["content"]["m.new_content"]["body"],
        "root, edited"
    );
    assert_eq!(
        bundle["m.reference"]["chunk"],
        json!([{"event_id": reference}])
    );
    let (_, as_carol) = get(&app, &format!("/rooms/{room}/event/{root}"), Some(&carol)).await;
    assert_eq!(
        as_carol["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        false
    );
    // /messages and an initial sync bundle the same.
    let (_, page) = get(
        &app,
        &format!("/rooms/{room}/messages?dir=b&limit=50"),
        Some(&bob),
    )
    .await;
    let in_page = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == root.as_str())
        .unwrap();
    assert_eq!(in_page["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    let synced = sync(&app, &carol).await;
    let timeline = synced["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let in_sync = timeline
        .iter()
        .find(|e| e["event_id"] == root.as_str())
        .expect("the root in the last 10");
    assert_eq!(
        in_sync["unsigned"]["m.relations"]["m.replace"]["sender"],
        "@alice:localhost"
    );

    // /relations: all of them newest first, by type, forward, in pages.
    let all = format!("{V1}/rooms/{room}/relations/{root}");
    let (status, body) = call(&app, "GET", &all, Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        bodies(&body["chunk"]),
        [
            "see above",
            "* bob may not edit",
            "* root, edited",
            "second reply",
            "first reply"
        ]
    );
    let (_, body) = call(
        &app,
        "GET",
        &format!("{all}/m.thread?dir=f"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(bodies(&body["chunk"]), ["first reply", "second reply"]);
    let (_, body) = call(
        &app,
        "GET",
        &format!("{all}/m.thread/m.room.message?limit=1"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(bodies(&body["chunk"]), ["second reply"]);
    let next = body["next_batch"].as_str().expect("a next page").to_owned();
    let (_, body) = call(
        &app,
        "GET",
        &format!("{all}/m.thread?limit=1&from={next}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(bodies(&body["chunk"]), ["first reply"]);
    let (_, body) = call(
        &app,
        "GET",
        &format!("{all}/m.thread/m.reaction"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(body["chunk"], json!([]));

    // /threads: most recently replied first; `participated` is the user's.
    let threads = format!("{V1}/rooms/{room}/threads");
    let (_, body) = call(&app, "GET", &threads, Some(&bob), None).await;
    assert_eq!(bodies(&body["chunk"]), ["other-root", "root"]);
    let (_, body) = call(
        &app,
        "GET",
        &format!("{threads}?include=participated"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(bodies(&body["chunk"]), ["root"]);
    let (_, body) = call(&app, "GET", &format!("{threads}?limit=1"), Some(&bob), None).await;
    assert_eq!(bodies(&body["chunk"]), ["other-root"]);
    let next = body["next_batch"].as_str().unwrap().to_owned();
    let (_, body) = call(
        &app,
        "GET",
        &format!("{threads}?limit=1&from={next}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(bodies(&body["chunk"]), ["root"]);
    assert_eq!(
        body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"],
        2
    );
}

#[tokio::test]
async fn relations_follow_what_the_reader_may_see() {
    let (_dir, app) = app().await;
    let alice = register(&app, "alice").await;
    let eve = register(&app, "eve").await;
    let room = create_room(&app, &alice, json!({})).await;
    let root = say(&app, &alice, &room, "private-root").await;
    let reply_id = relate(&app, &alice, &room, "r1", reply(&root, "private-reply")).await;
    let react =
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": reply_id, "key": "👍"}});
    let (status, _) = put(
        &app,
        &format!("/rooms/{room}/send/m.reaction/a1"),
        &alice,
        react,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let all = format!("{V1}/rooms/{room}/relations/{root}");
    let (status, _) = call(&app, "GET", &all, Some(&eve), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a stranger to a private room"
    );
    let (status, _) = call(
        &app,
        "GET",
        &format!("{V1}/rooms/{room}/threads"),
        Some(&eve),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &app,
        "GET",
        &format!("{V1}/rooms/{room}/relations/$nothing"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    // `recurse` reaches the reaction to the reply.
    let (_, body) = call(
        &app,
        "GET",
        &format!("{all}?recurse=true"),
        Some(&alice),
        None,
    )
    .await;
    let kinds: Vec<&str> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["m.reaction", "m.room.message"]);
    assert_eq!(body["recursion_depth"], 3);
    let (_, body) = call(&app, "GET", &all, Some(&alice), None).await;
    assert_eq!(
        body["chunk"].as_array().unwrap().len(),
        1,
        "without recurse: the reply only"
    );
    for query in ["dir=up", "limit=0", "from=nonsense"] {
        let (status, body) = call(&app, "GET", &format!("{all}?{query}"), Some(&alice), None).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
            "{query}"
        );
    }
    let (status, _) = call(
        &app,
        "GET",
        &format!("{V1}/rooms/{room}/threads?include=mine"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
