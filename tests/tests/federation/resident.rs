//! Tern's rooms joined from Synapse: Synapse's users join (through
//! `make_join`/`send_join`), read the history from before their join
//! (`backfill`), talk both ways and leave; Tern's users invite Synapse's
//! (`invite` v2), who accept (a join through Tern) or reject (`make_leave`
//! and `send_leave`).

use super::*;

/// The room's events as a Synapse user pages back through them.
async fn synapse_history(client: &Client, room: &str) -> Vec<Value> {
    let page = client
        .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=50", enc(room)))
        .await
        .1;
    page["chunk"].as_array().cloned().unwrap_or_default()
}

/// Waits until `client` (on Synapse) shows `body` from `sender`.
async fn synapse_shows(client: &Client, room: &str, body: &str, sender: &str) {
    eventually(&format!("Synapse shows {body:?}"), async || {
        let events = synapse_history(client, room).await;
        events
            .iter()
            .any(|e| e["content"]["body"] == body && e["sender"] == sender)
            .then_some(())
            .ok_or(events)
    })
    .await;
}

/// Waits until `client` (on Synapse) shows `expected` in that order, among
/// the messages that start as its first does.
async fn synapse_shows_in_order(client: &Client, room: &str, expected: &[String]) {
    let prefix: String = expected[0].chars().take(8).collect();
    eventually(
        &format!("Synapse shows {expected:?} in order"),
        async || {
            let bodies: Vec<String> = synapse_history(client, room)
                .await
                .iter()
                .rev()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .filter(|body| body.starts_with(&prefix))
                .collect();
            (bodies == expected).then_some(()).ok_or(bodies)
        },
    )
    .await;
}

/// Stops Synapse as an outage would (off the runtime: it waits for the
/// process).
pub(super) async fn stopped(synapse: Synapse) -> Synapse {
    tokio::task::spawn_blocking(move || {
        let mut synapse = synapse;
        synapse.stop();
        synapse
    })
    .await
    .unwrap()
}

/// Starts the stopped Synapse again on its data.
pub(super) async fn started_again(synapse: Synapse) -> Synapse {
    tokio::task::spawn_blocking(move || {
        let mut synapse = synapse;
        synapse.start_again();
        synapse
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_synapse_user_joins_a_tern_room_reads_its_history_talks_and_leaves() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let room = alice
        .create_room(&json!({"preset": "public_chat", "name": "Tern's place"}))
        .await;
    alice.send_text(&room, "a0", "before bob came").await;

    let (status, joined) = join_through(&bob, &room, &tern.name).await;
    assert_eq!(
        status,
        200,
        "{joined}\ntern log:\n{}\nsynapse log:\n{}",
        tern.server.log_tail(4000),
        synapse.log_tail()
    );
    shows_membership(&alice, &room, &bob.user_id, "join").await;

    // Synapse has the room's state from the join, and pages back into the
    // history from before it (backfilled from Tern: the room is public).
    let name = assert_ok(
        bob.get(&format!("{V3}/rooms/{}/state/m.room.name", enc(&room)))
            .await,
    );
    assert_eq!(name["name"], "Tern's place");
    synapse_shows(&bob, &room, "before bob came", &alice.user_id).await;

    // Both ways.
    alice.send_text(&room, "a1", "hello bob").await;
    synapse_shows(&bob, &room, "hello bob", &alice.user_id).await;
    let sync = alice.sync(None, 0, None).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let hello = bob.send_text(&room, "b1", "hello alice").await;
    alice
        .sync_until(&since, WAIT, None, |resp| {
            resp["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["content"]["body"] == "hello alice")
        })
        .await;

    // Bob takes his message back: Tern strips it too.
    let redact = format!("{V3}/rooms/{}/redact/{}/r1", enc(&room), enc(&hello));
    assert_ok(bob.put(&redact, &json!({"reason": "typo"})).await);
    eventually("Tern shows bob's message redacted", async || {
        let path = format!("{V3}/rooms/{}/event/{}", enc(&room), enc(&hello));
        let (status, event) = alice.get(&path).await;
        (status == 200 && event["content"] == json!({}))
            .then_some(())
            .ok_or(event)
    })
    .await;

    // Bob leaves: Tern shows it, and Tern's next event no longer goes to
    // a server with nobody in the room (nothing to check there but that
    // sending still works).
    assert_ok(bob.leave(&room).await);
    shows_membership(&alice, &room, &bob.user_id, "leave").await;
    alice.send_text(&room, "a2", "bob left").await;
}

#[tokio::test]
async fn synapse_users_accept_or_reject_invites_to_a_tern_room() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let carol = Client::register_at(&synapse.client_url, "carol").await;
    let dave = Client::register_at(&synapse.client_url, "dave").await;
    let room = alice
        .create_room(&json!({"preset": "private_chat", "name": "Invitation only"}))
        .await;

    // A private room: without an invite Synapse's join is refused by Tern.
    let (status, refused) = join_through(&carol, &room, &tern.name).await;
    assert_eq!(status, 403, "{refused}");

    // Invited: Synapse countersigned each invite and its users see them.
    let tokens = [sync_token(&carol).await, sync_token(&dave).await];
    for (i, invitee) in [&carol, &dave].into_iter().enumerate() {
        let (status, invited) = alice.invite(&room, &invitee.user_id).await;
        assert_eq!(
            status,
            200,
            "{invited}\ntern log:\n{}\nsynapse log:\n{}",
            tern.server.log_tail(4000),
            synapse.log_tail()
        );
        shows_membership(&alice, &room, &invitee.user_id, "invite").await;
        sync_shows(invitee, &tokens[i], |sync| {
            sync["rooms"]["invite"][&room].is_object()
        })
        .await;
    }

    // Dave rejects his while Synapse has nobody in the room: Synapse
    // leaves through Tern (make_leave, send_leave).
    let (status, left) = dave.leave(&room).await;
    assert_eq!(
        status,
        200,
        "{left}\ntern log:\n{}",
        tern.server.log_tail(4000)
    );
    shows_membership(&alice, &room, &dave.user_id, "leave").await;

    // Carol accepts: Synapse joins through Tern.
    let (status, joined) = carol.join(&room).await;
    assert_eq!(
        status,
        200,
        "{joined}\ntern log:\n{}",
        tern.server.log_tail(4000)
    );
    shows_membership(&alice, &room, &carol.user_id, "join").await;
    alice.send_text(&room, "a1", "welcome carol").await;
    synapse_shows(&carol, &room, "welcome carol", &alice.user_id).await;
}

/// Whether a sync shows, in `room`'s ephemeral events, one of type `kind`
/// that `check` accepts.
fn ephemeral_has(sync: &Value, room: &str, kind: &str, check: impl Fn(&Value) -> bool) -> bool {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["type"] == kind && check(&e["content"]))
}

/// Waits until an incremental sync of `client` from `since` shows what
/// `check` looks for. (Synapse keeps answering a repeated initial sync
/// from a cache for a while, so waiting polls from a token instead.)
async fn sync_shows(client: &Client, since: &str, check: impl Fn(&Value) -> bool) -> String {
    next_batch(&client.sync_until(since, WAIT, None, check).await)
}

/// A sync token of `client` from now.
async fn sync_token(client: &Client) -> String {
    next_batch(&client.sync(None, 0, None).await)
}

#[tokio::test]
async fn typing_read_receipts_and_presence_cross_between_tern_and_synapse() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(join_through(&bob, &room, &tern.name).await);
    shows_membership(&alice, &room, &bob.user_id, "join").await;

    let (alice_since, bob_since) = (sync_token(&alice).await, sync_token(&bob).await);

    // Typing, each way.
    let typing =
        |client: &Client| format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&client.user_id));
    let body = json!({"typing": true, "timeout": 30000});
    assert_ok(alice.put(&typing(&alice), &body).await);
    let bob_since = sync_shows(&bob, &bob_since, |sync| {
        ephemeral_has(sync, &room, "m.typing", |c| {
            c["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.contains(&json!(alice.user_id)))
        })
    })
    .await;
    assert_ok(bob.put(&typing(&bob), &body).await);
    let alice_since = sync_shows(&alice, &alice_since, |sync| {
        ephemeral_has(sync, &room, "m.typing", |c| {
            c["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.contains(&json!(bob.user_id)))
        })
    })
    .await;

    // Read receipts, each way.
    let from_alice = alice.send_text(&room, "a1", "read me, bob").await;
    synapse_shows(&bob, &room, "read me, bob", &alice.user_id).await;
    let receipt = |event: &str| format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(event));
    assert_ok(bob.post(&receipt(&from_alice), &json!({})).await);
    sync_shows(&alice, &alice_since, |sync| {
        ephemeral_has(sync, &room, "m.receipt", |c| {
            c[&from_alice]["m.read"][&bob.user_id]["ts"].is_i64()
        })
    })
    .await;
    let from_bob = bob.send_text(&room, "b1", "read me, alice").await;
    eventually("Tern has bob's message", async || {
        let (status, _) = alice
            .get(&format!(
                "{V3}/rooms/{}/event/{}",
                enc(&room),
                enc(&from_bob)
            ))
            .await;
        (status == 200).then_some(()).ok_or(status)
    })
    .await;
    assert_ok(alice.post(&receipt(&from_bob), &json!({})).await);
    sync_shows(&bob, &bob_since, |sync| {
        ephemeral_has(sync, &room, "m.receipt", |c| {
            c[&from_bob]["m.read"][&alice.user_id]["ts"].is_i64()
        })
    })
    .await;

    // Presence, each way: a status set on one server shows on the other.
    let status = |user: &str| format!("{V3}/presence/{}/status", enc(user));
    let away = json!({"presence": "unavailable", "status_msg": "at lunch"});
    assert_ok(alice.put(&status(&alice.user_id), &away).await);
    eventually("Synapse shows alice at lunch", async || {
        let (code, shown) = bob.get(&status(&alice.user_id)).await;
        (code == 200 && shown["presence"] == "unavailable" && shown["status_msg"] == "at lunch")
            .then_some(())
            .ok_or(shown)
    })
    .await;
    let back = json!({"presence": "online", "status_msg": "back from lunch"});
    assert_ok(bob.put(&status(&bob.user_id), &back).await);
    eventually("Tern shows bob back", async || {
        let (code, shown) = alice.get(&status(&bob.user_id)).await;
        (code == 200 && shown["presence"] == "online" && shown["status_msg"] == "back from lunch")
            .then_some(())
            .ok_or(shown)
    })
    .await;
}

#[tokio::test]
async fn synapse_down_catches_up_on_what_was_sent_meanwhile() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let mut tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    assert_ok(join_through(&bob, &room, &tern.name).await);
    shows_membership(&alice, &room, &bob.user_id, "join").await;

    // Synapse goes down; Tern's messages wait in its queue, retried.
    let synapse = stopped(synapse).await;
    for n in 0..3 {
        alice
            .send_text(
                &room,
                &format!("away{n}"),
                &format!("while you were away {n}"),
            )
            .await;
    }
    let synapse = started_again(synapse).await;

    // Back: bob's message reaches Tern, which hears Synapse is up and
    // sends what waited at once, in order.
    bob.send_text(&room, "b1", "I am back").await;
    let expected: Vec<String> = (0..3).map(|n| format!("while you were away {n}")).collect();
    synapse_shows_in_order(&bob, &room, &expected).await;

    // Again, and this time Tern is killed (`kill -9`) with the messages
    // still queued for Synapse: the queue in memory is gone, but what
    // Synapse has not accepted is sent after the restart.
    let synapse = stopped(synapse).await;
    for n in 0..2 {
        alice
            .send_text(
                &room,
                &format!("crash{n}"),
                &format!("before the crash {n}"),
            )
            .await;
    }
    tern.server.kill_hard();
    tern.server.restart().await;
    let synapse = started_again(synapse).await;
    bob.send_text(&room, "b2", "back once more").await;
    let expected: Vec<String> = (0..2).map(|n| format!("before the crash {n}")).collect();
    synapse_shows_in_order(&bob, &room, &expected).await;
    drop(synapse);
}
