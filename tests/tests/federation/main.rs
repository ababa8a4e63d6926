//! Federation, between Tern servers and with Synapse 1.163.2 as the
//! reference peer, all on loopback:
//! - `identity`: the TLS listener, the key server and notary, X-Matrix both
//!   ways, the outbound guard;
//! - `hostile`: forged, changed and foreign events from a peer;
//! - `lookups`: profiles, aliases, media and public room directories;
//! - `rooms`: joining Synapse's rooms and messages both ways;
//! - `resident`: Synapse's users joining, leaving and invited to Tern's rooms;
//! - `terns`: two Tern servers sharing a room;
//! - `e2ee`: device keys, one-time keys, to-device messages and device-list
//!   changes between Tern and Synapse.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use ruma_common::CanonicalJsonObject;
use serde_json::{json, Value};
use tern_tests::*;

async fn set_displayname(client: &Client, name: &str) {
    let path = format!("{V3}/profile/{}/displayname", enc(&client.user_id));
    assert_ok(client.put(&path, &json!({"displayname": name})).await);
}

/// `GET /_matrix/key/v2/server` over the TLS listener.
async fn key_document(tern: &FederatingTern) -> Value {
    let response = insecure_https()
        .get(format!("{}/_matrix/key/v2/server", tern.federation_url()))
        .send()
        .await
        .expect("the federation listener answers over TLS");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Checks that `document` is signed by `server` with one of its own
/// current keys.
fn assert_self_signed(document: &Value, server: &str) {
    let keys: BTreeMap<String, ruma_common::serde::Base64> = document["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, key)| {
            let key = ruma_common::serde::Base64::parse(key["key"].as_str().unwrap()).unwrap();
            (id.clone(), key)
        })
        .collect();
    let mut object: CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
    if let Some(ruma_common::CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures")
    {
        signatures.retain(|entity, _| entity == server);
    }
    let map = BTreeMap::from([(server.to_owned(), keys)]);
    ruma_signatures::verify_json(&map, &object).expect("the key document is self-signed");
}

/// GET over HTTPS (self-signed certificates accepted), answered with JSON.
async fn get_json(url: &str) -> Value {
    insecure_https()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The id of the `(kind, key)` event in a `/state` answer.
fn id_in(state: &Value, kind: &str, key: &str) -> Value {
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == key)
        .map(|e| e["event_id"].clone())
        .unwrap()
}

/// `client` joins `room` through `server` (`?server_name=`): the status
/// and the answer.
async fn join_through(client: &Client, room: &str, server: &str) -> (u16, Value) {
    let path = format!("{V3}/join/{}?server_name={}", enc(room), enc(server));
    client.post(&path, &json!({})).await
}

/// Waits until `client` (on either server) sees `user`'s membership in
/// `room` become `membership`.
async fn shows_membership(client: &Client, room: &str, user: &str, membership: &str) {
    eventually(
        &format!("{} sees {user} as {membership}", client.user_id),
        async || {
            let (status, member) = client
                .get(&format!(
                    "{V3}/rooms/{}/state/m.room.member/{}",
                    enc(room),
                    enc(user)
                ))
                .await;
            (status == 200 && member["membership"] == membership)
                .then_some(())
                .ok_or(member)
        },
    )
    .await;
}

mod e2ee;
mod forks;
mod hostile;
mod identity;
mod lookups;
mod resident;
mod rooms;
mod terns;
