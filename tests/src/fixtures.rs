//! The fixtures most tests start from: users in a room together.

use serde_json::{json, Value};

use crate::{assert_ok, Client, TestServer};

/// Registers `alice` and `bob` and puts them in a public room alice made.
/// Returns `(alice, bob, room_id)`.
pub async fn room_of_two(server: &TestServer) -> (Client, Client, String) {
    let alice = Client::register(server, "alice").await;
    let bob = Client::register(server, "bob").await;
    let room = public_room(&alice, &[&bob]).await;
    (alice, bob, room)
}

/// A public room `owner` made and each of `members` joined; panics unless
/// every step succeeds.
pub async fn public_room(owner: &Client, members: &[&Client]) -> String {
    public_room_with(owner, members, json!({})).await
}

/// [`public_room`] with more `createRoom` fields (a name, say).
pub async fn public_room_with(owner: &Client, members: &[&Client], extra: Value) -> String {
    let mut body = json!({"preset": "public_chat"});
    for (key, value) in extra.as_object().into_iter().flatten() {
        body[key] = value.clone();
    }
    let room = owner.create_room(&body).await;
    for member in members {
        assert_ok(member.join(&room).await);
    }
    room
}

/// The content of a plain text message.
pub fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}
