//! What clients look up through other servers: profiles, aliases, media
//! and public room directories, with Tern and with Synapse.

use super::*;

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
