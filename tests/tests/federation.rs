//! Federation transport and identity: the TLS listener, the key server and
//! notary, X-Matrix both ways, the outbound guard, and the look-ups clients
//! make through other servers (profiles, aliases) — between Tern servers
//! and with Synapse 1.163.2 as the reference peer.

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

#[tokio::test]
async fn the_key_server_signs_its_key_and_lists_the_retired_one() {
    let tern = FederatingTern::start_with(FederationOptions {
        rotate_key_first: true,
        ..FederationOptions::default()
    })
    .await;
    let document = key_document(&tern).await;
    assert_eq!(document["server_name"], tern.name.as_str());
    let current: Vec<&String> = document["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let old: Vec<&String> = document["old_verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(current.len(), 1, "{document}");
    assert_eq!(old.len(), 1, "the rotated key is listed: {document}");
    assert_ne!(current[0], old[0], "a new key has a new id");
    assert!(document["old_verify_keys"][old[0]]["expired_ts"].is_u64());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let valid_until = document["valid_until_ts"].as_u64().unwrap();
    assert!(valid_until > now_ms, "valid_until_ts is in the future");
    assert_self_signed(&document, &tern.name);

    // The same routes answer on the main listener (for a TLS proxy).
    let (status, plain) = Client::anonymous(&tern.server)
        .get("/_matrix/key/v2/server")
        .await;
    assert_eq!(status, 200);
    assert_eq!(plain["verify_keys"], document["verify_keys"]);
    let (status, version) = Client::anonymous(&tern.server)
        .get("/_matrix/federation/v1/version")
        .await;
    assert_eq!(
        (status, version["server"]["name"].as_str()),
        (200, Some("Tern"))
    );
}

#[tokio::test]
async fn a_server_that_does_not_federate_says_so() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let (status, body) = alice.get("/_matrix/key/v2/server").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );
    let (status, body) = alice
        .get(&format!("{V3}/profile/{}", enc("@bob:remote.example")))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("does not federate"),
        "{body}"
    );
    assert!(
        server.log_tail(20_000).contains("not federating"),
        "the start-up log says so"
    );
}

#[tokio::test]
async fn two_terns_look_up_each_others_profiles_and_aliases() {
    let (a, b) = tokio::join!(FederatingTern::start(), FederatingTern::start());
    let alice = Client::register(&a.server, "alice").await;
    let bob = Client::register(&b.server, "bob").await;
    assert_eq!(bob.user_id, b.user("bob"));
    set_displayname(&bob, "Bob on B").await;
    let room = bob.create_room(&json!({"room_alias_name": "lobby"})).await;

    // A asks B (signing with its key; B fetches A's key to check).
    let profile = assert_ok(
        alice
            .get(&format!("{V3}/profile/{}", enc(&bob.user_id)))
            .await,
    );
    assert_eq!(profile["displayname"], "Bob on B");
    let displayname = assert_ok(
        alice
            .get(&format!("{V3}/profile/{}/displayname", enc(&bob.user_id)))
            .await,
    );
    assert_eq!(displayname, json!({"displayname": "Bob on B"}));
    let alias = format!("#lobby:{}", b.name);
    let resolved = assert_ok(
        alice
            .get(&format!("{V3}/directory/room/{}", enc(&alias)))
            .await,
    );
    assert_eq!(resolved["room_id"], room.as_str());
    assert_eq!(resolved["servers"], json!([b.name]));

    // Unknown users and aliases of B are 404 on A, as on B.
    let (status, body) = alice
        .get(&format!("{V3}/profile/{}", enc(&b.user("nobody"))))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    let (status, _) = alice
        .get(&format!(
            "{V3}/directory/room/{}",
            enc(&format!("#none:{}", b.name))
        ))
        .await;
    assert_eq!(status, 404);

    // And the other way round.
    let profile = assert_ok(
        bob.get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
            .await,
    );
    assert_eq!(profile, json!({"displayname": "alice"}));
}

/// An `Authorization: X-Matrix` header for a request, signed by `pair`
/// under `origin` and `key_id`.
fn x_matrix(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    pair: &ruma_signatures::Ed25519KeyPair,
    key_id: &str,
) -> String {
    let mut object: CanonicalJsonObject = serde_json::from_value(json!({
        "method": method, "uri": uri, "origin": origin, "destination": destination,
    }))
    .unwrap();
    ruma_signatures::sign_json(origin, pair, &mut object).unwrap();
    let signatures = serde_json::to_value(&object["signatures"]).unwrap();
    let sig = signatures[origin][format!("ed25519:{}", pair.version())]
        .as_str()
        .unwrap()
        .to_owned();
    format!(
        "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"{key_id}\",sig=\"{sig}\""
    )
}

fn random_pair(version: &str) -> ruma_signatures::Ed25519KeyPair {
    let der = ruma_signatures::Ed25519KeyPair::generate();
    ruma_signatures::Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap()
}

#[tokio::test]
async fn requests_without_a_valid_signature_get_401() {
    let (a, b) = tokio::join!(FederatingTern::start(), FederatingTern::start());
    let bob = Client::register(&b.server, "bob").await;
    let uri = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        enc(&bob.user_id)
    );
    let url = format!("{}{uri}", b.federation_url());
    let http = insecure_https();
    let refused = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
            "{body}"
        );
    };

    let with_auth = |header: String| {
        let request = http.get(&url).header("Authorization", header).send();
        async move { request.await.unwrap() }
    };

    // No signature at all.
    refused(http.get(&url).send().await.unwrap()).await;

    // Signed as A, under A's real key id, with a key that is not A's.
    let a_keys = key_document(&a).await;
    let a_key_id = a_keys["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let version = a_key_id.trim_start_matches("ed25519:");
    let forger = random_pair(version);
    let forged = x_matrix("GET", &uri, &a.name, &b.name, &forger, &a_key_id);
    refused(with_auth(forged).await).await;

    // A garbled header.
    refused(with_auth("X-Matrix origin=\"nonsense".into()).await).await;

    // Addressed to another server.
    let elsewhere = x_matrix(
        "GET",
        &uri,
        &a.name,
        "elsewhere.example",
        &forger,
        &a_key_id,
    );
    refused(with_auth(elsewhere).await).await;

    // Claiming to come from B itself.
    let as_b = x_matrix("GET", &uri, &b.name, &b.name, &forger, &a_key_id);
    refused(with_auth(as_b).await).await;

    // The same request properly signed goes through: A asking for bob.
    let alice = Client::register(&a.server, "alice").await;
    assert_ok(
        alice
            .get(&format!("{V3}/profile/{}", enc(&bob.user_id)))
            .await,
    );
}

#[tokio::test]
async fn internal_addresses_are_refused_without_allow_private() {
    let guarded = FederatingTern::start_with(FederationOptions {
        allow_private: false,
        ..FederationOptions::default()
    })
    .await;
    let other = FederatingTern::start().await;
    let alice = Client::register(&guarded.server, "alice").await;
    Client::register(&other.server, "bob").await;

    // An IP literal on loopback: refused before any connection.
    let literal = format!("@bob:127.0.0.1:{}", other.federation_port);
    let (status, body) = alice.get(&format!("{V3}/profile/{}", enc(&literal))).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("internal address"),
        "{body}"
    );

    // A name that resolves only to loopback: no address is allowed.
    let (status, body) = alice
        .get(&format!("{V3}/profile/{}", enc(&other.user("bob"))))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--federation-allow-private"),
        "{body}"
    );
}

#[tokio::test]
async fn the_notary_serves_its_own_and_others_keys_countersigned() {
    let (a, b) = tokio::join!(FederatingTern::start(), FederatingTern::start());
    let http = insecure_https();
    let response: Value = http
        .post(format!("{}/_matrix/key/v2/query", a.federation_url()))
        .json(&json!({"server_keys": {b.name.clone(): {}, a.name.clone(): {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documents = response["server_keys"].as_array().unwrap();
    assert_eq!(documents.len(), 2, "{response}");
    let b_document = documents
        .iter()
        .find(|d| d["server_name"] == b.name.as_str())
        .expect("B's keys");
    assert_eq!(
        b_document["verify_keys"],
        key_document(&b).await["verify_keys"]
    );
    assert_self_signed(b_document, &b.name);
    assert!(
        b_document["signatures"][&a.name].is_object(),
        "the notary countersigns: {b_document}"
    );

    let one: Value = http
        .get(format!(
            "{}/_matrix/key/v2/query/{}",
            a.federation_url(),
            enc(&b.name)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["server_keys"][0]["server_name"], b.name.as_str());

    // A server that cannot be reached is left out, not an error.
    let unreachable: Value = http
        .get(format!(
            "{}/_matrix/key/v2/query/{}",
            a.federation_url(),
            enc(&format!("localhost:{}", free_port()))
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unreachable, json!({"server_keys": []}));
}

#[tokio::test]
async fn tern_and_synapse_look_up_each_others_profiles_and_aliases() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    set_displayname(&alice, "Alice on Tern").await;
    alice
        .create_room(&json!({"room_alias_name": "tern-lobby"}))
        .await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    assert_eq!(bob.user_id, synapse.user("bob"));
    set_displayname(&bob, "Bob on Synapse").await;
    let synapse_room = bob
        .create_room(&json!({"room_alias_name": "synapse-lobby"}))
        .await;

    // Tern to Synapse: Synapse checks our signature with the key it fetches
    // from our TLS listener.
    let (status, profile) = alice
        .get(&format!("{V3}/profile/{}", enc(&bob.user_id)))
        .await;
    assert_eq!(
        status,
        200,
        "{profile}\nsynapse log:\n{}",
        synapse.log_tail()
    );
    assert_eq!(profile["displayname"], "Bob on Synapse");
    let alias = format!("#synapse-lobby:{}", synapse.name);
    let resolved = assert_ok(
        alice
            .get(&format!("{V3}/directory/room/{}", enc(&alias)))
            .await,
    );
    assert_eq!(resolved["room_id"], synapse_room.as_str());
    assert!(
        resolved["servers"]
            .as_array()
            .unwrap()
            .contains(&json!(synapse.name)),
        "{resolved}"
    );

    // Synapse to Tern: we check Synapse's signature with its key.
    let (status, profile) = bob
        .get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
        .await;
    assert_eq!(
        status,
        200,
        "{profile}\ntern log:\n{}",
        tern.server.log_tail(6000)
    );
    assert_eq!(profile["displayname"], "Alice on Tern");
    let alias = format!("#tern-lobby:{}", tern.name);
    let (status, resolved) = bob
        .get(&format!("{V3}/directory/room/{}", enc(&alias)))
        .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["servers"], json!([tern.name]));
}

/// A small PNG that differs by `seed`.
fn png(seed: u8) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(64, 48, |x, y| {
        image::Rgba([x as u8 * 3, y as u8 * 5, seed, 255])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgba8(image)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// `server/media_id` of an `mxc://` URI.
fn mxc_path(uri: &str) -> String {
    uri.strip_prefix("mxc://")
        .expect("an mxc:// URI")
        .to_owned()
}

const MEDIA: &str = "/_matrix/client/v1/media";

#[tokio::test]
async fn media_crosses_between_tern_and_synapse_and_is_fetched_once() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;

    // Synapse's media through Tern.
    let from_synapse = png(1);
    let uri = bob.upload(&from_synapse, "image/png", "s.png").await;
    assert!(
        uri.starts_with(&format!("mxc://{}/", synapse.name)),
        "{uri}"
    );
    let (status, content_type, body) = alice
        .get_bytes(&format!("{MEDIA}/download/{}", mxc_path(&uri)))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "image/png");
    assert!(body == from_synapse, "the bytes Synapse holds");
    let (status, content_type, thumb) = alice
        .get_bytes(&format!(
            "{MEDIA}/thumbnail/{}?width=32&height=32&method=scale",
            mxc_path(&uri)
        ))
        .await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    let thumb = image::load_from_memory(&thumb).expect("a thumbnail image");
    assert!(thumb.width() <= 64 && thumb.height() <= 48);

    // Tern's media through Synapse (which fetches it from our federation
    // media endpoint, signed).
    let from_tern = png(2);
    let uri = alice.upload(&from_tern, "image/png", "t.png").await;
    let (status, content_type, body) = bob
        .get_bytes(&format!("{MEDIA}/download/{}", mxc_path(&uri)))
        .await;
    assert_eq!(
        status,
        200,
        "{}\ntern log:\n{}",
        String::from_utf8_lossy(&body),
        tern.server.log_tail(4000)
    );
    assert_eq!(content_type, "image/png");
    assert!(body == from_tern, "the bytes Tern holds");

    // Unknown media of a remote server is 404 on Tern.
    let (status, _, _) = alice
        .get_bytes(&format!("{MEDIA}/download/{}/NoSuchMedia", synapse.name))
        .await;
    assert_eq!(status, 404);

    // Fetched once: with Synapse gone, Tern still serves what it fetched.
    let synapse_media = format!("{MEDIA}/download/{}", {
        let uri = bob.upload(&png(3), "image/png", "later.png").await;
        let path = mxc_path(&uri);
        let (status, _, _) = alice.get_bytes(&format!("{MEDIA}/download/{path}")).await;
        assert_eq!(status, 200);
        path
    });
    drop(synapse);
    let (status, _, body) = alice.get_bytes(&synapse_media).await;
    assert_eq!(status, 200, "served from the cache");
    assert!(body == png(3));
}

#[tokio::test]
async fn public_room_directories_are_browsed_across_servers() {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let tern_room = alice
        .create_room(
            &json!({"preset": "public_chat", "visibility": "public", "name": "Tern square"}),
        )
        .await;
    let synapse_room = bob
        .create_room(
            &json!({"preset": "public_chat", "visibility": "public", "name": "Synapse square"}),
        )
        .await;

    let listed = |page: &Value, room: &str| {
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room_id"] == room)
    };
    // Synapse fills its directory from room statistics it updates in the
    // background: wait until its own users see the room.
    eventually("Synapse lists its new public room", async || {
        let (status, page) = bob.get(&format!("{V3}/publicRooms")).await;
        (status == 200 && listed(&page, &synapse_room))
            .then_some(())
            .ok_or(page)
    })
    .await;
    let page = assert_ok(
        alice
            .get(&format!("{V3}/publicRooms?server={}", enc(&synapse.name)))
            .await,
    );
    assert!(listed(&page, &synapse_room), "{page}");
    let page = assert_ok(
        alice
            .post(
                &format!("{V3}/publicRooms?server={}", enc(&synapse.name)),
                &json!({"limit": 10}),
            )
            .await,
    );
    assert!(listed(&page, &synapse_room), "{page}");
    let name = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == synapse_room.as_str())
        .unwrap()["name"]
        .clone();
    assert_eq!(name, "Synapse square");

    let (status, page) = bob
        .get(&format!("{V3}/publicRooms?server={}", enc(&tern.name)))
        .await;
    assert_eq!(
        status,
        200,
        "{page}\ntern log:\n{}",
        tern.server.log_tail(4000)
    );
    assert!(listed(&page, &tern_room), "{page}");
}

/// A Tern user joins a room Synapse holds, in the given room version.
async fn tern_user_joins_a_synapse_room(version: Option<&str>) {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let tern = FederatingTern::start().await;
    let alice = Client::register(&tern.server, "alice").await;
    let bob = Client::register_at(&synapse.client_url, "bob").await;
    let mut create = json!({"preset": "public_chat", "name": "Over there", "topic": "far away"});
    if let Some(version) = version {
        create["room_version"] = json!(version);
    }
    let room = bob.create_room(&create).await;

    // A version 12 room id names no server: the client says which to ask.
    let (status, joined) = alice
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), enc(&synapse.name)),
            &json!({}),
        )
        .await;
    assert_eq!(
        status,
        200,
        "{joined}\ntern log:\n{}\nsynapse log:\n{}",
        tern.server.log_tail(4000),
        synapse.log_tail()
    );
    assert_eq!(joined["room_id"], room.as_str());

    // Synapse accepted our signed join: bob sees alice in the room.
    let members = assert_ok(
        bob.get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
            .await,
    );
    assert!(members["joined"][&alice.user_id].is_object(), "{members}");

    // Alice's sync holds the room with its state from Synapse.
    let sync = alice.sync(None, 0, None).await;
    let joined_room = &sync["rooms"]["join"][&room];
    assert!(joined_room.is_object(), "{sync}");
    let events: Vec<&Value> = joined_room["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            joined_room["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    let name = events
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .expect("the room's name");
    assert_eq!(name["content"]["name"], "Over there");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "bob's membership: {joined_room}"
    );
    let state = assert_ok(
        alice
            .get(&format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)))
            .await,
    );
    assert_eq!(state["topic"], "far away");

    // Messages each way: Synapse's reach Tern's sync, Tern's reach Synapse.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    bob.send_text(&room, "b1", "hello from Synapse").await;
    alice
        .sync_until(&since, WAIT, None, |resp| {
            timeline_has(&resp["rooms"]["join"][&room], "hello from Synapse")
        })
        .await;
    alice.send_text(&room, "a1", "hello from Tern").await;
    eventually("Synapse shows Tern's message", async || {
        let page = bob
            .get(&format!(
                "{V3}/rooms/{}/messages?dir=b&limit=20",
                enc(&room)
            ))
            .await
            .1;
        page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["content"]["body"] == "hello from Tern" && e["sender"] == alice.user_id.as_str()
            })
            .then_some(())
            .ok_or(page)
    })
    .await;
}

/// Whether a joined room's timeline in a sync holds a message with `body`.
fn timeline_has(room: &Value, body: &str) -> bool {
    room["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["content"]["body"] == body)
}

#[tokio::test]
async fn a_tern_user_joins_a_synapse_room_of_version_12() {
    tern_user_joins_a_synapse_room(None).await;
}

#[tokio::test]
async fn a_tern_user_joins_a_synapse_room_of_version_11() {
    tern_user_joins_a_synapse_room(Some("11")).await;
}
