//! The `AccountStore` part of the conformance suite: users, devices,
//! tokens and account data.

use std::sync::Arc;

use ruma_common::{device_id, owned_event_id, owned_room_id, room_id, user_id};
use serde_json::json;

use crate::store::{AccountStore, Report, StoreError, UserRecord};

fn user(id: &str) -> UserRecord {
    UserRecord {
        user_id: super::user(id),
        password_hash: Some("hash".into()),
        displayname: None,
        avatar_url: None,
        created_ts: 1,
        deactivated: false,
    }
}

pub async fn account_store(store: Arc<dyn AccountStore>) {
    store.create_user(&user("@a:test")).await.unwrap();
    assert!(matches!(
        store.create_user(&user("@a:test")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store
            .get_user(user_id!("@a:test"))
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "@a:test"
    );
    assert!(store
        .get_user(user_id!("@nobody:test"))
        .await
        .unwrap()
        .is_none());

    store
        .set_displayname(user_id!("@a:test"), Some("Alice"))
        .await
        .unwrap();
    store
        .set_password_hash(user_id!("@a:test"), "new")
        .await
        .unwrap();
    let got = store.get_user(user_id!("@a:test")).await.unwrap().unwrap();
    assert_eq!(got.displayname.as_deref(), Some("Alice"));
    assert_eq!(got.password_hash.as_deref(), Some("new"));

    // Tokens: create, find, replace on re-login of the same device, delete.
    store
        .create_device_with_token(user_id!("@a:test"), device_id!("D1"), None, "h1")
        .await
        .unwrap();
    store
        .create_device_with_token(user_id!("@a:test"), device_id!("D2"), None, "h2")
        .await
        .unwrap();
    assert_eq!(
        store.find_token("h1").await.unwrap().unwrap().device_id,
        "D1"
    );
    store
        .create_device_with_token(user_id!("@a:test"), device_id!("D1"), None, "h1b")
        .await
        .unwrap();
    assert!(store.find_token("h1").await.unwrap().is_none());
    store.delete_token("h1b").await.unwrap();
    assert!(store.find_token("h1b").await.unwrap().is_none());
    store
        .create_device_with_token(user_id!("@a:test"), device_id!("D3"), None, "h3")
        .await
        .unwrap();
    let removed = store
        .delete_all_tokens(user_id!("@a:test"), Some(device_id!("D3")))
        .await
        .unwrap();
    assert_eq!(removed, vec!["h2".to_string()]);
    assert!(store.find_token("h3").await.unwrap().is_some());

    // Filters get per-user ids and round-trip.
    let f0 = store
        .save_filter(user_id!("@a:test"), &json!({"room": {}}))
        .await
        .unwrap();
    let f1 = store
        .save_filter(user_id!("@a:test"), &json!({"presence": {}}))
        .await
        .unwrap();
    assert_ne!(f0, f1);
    assert_eq!(
        store.get_filter(user_id!("@a:test"), f1).await.unwrap(),
        Some(json!({"presence": {}}))
    );
    assert_eq!(
        store.get_filter(user_id!("@b:test"), f1).await.unwrap(),
        None
    );

    // Account data is stream-positioned: positions grow, `since` filters.
    let p1 = store
        .set_account_data(user_id!("@a:test"), None, "m.direct", &json!({"x": 1}))
        .await
        .unwrap();
    let p2 = store
        .set_account_data(
            user_id!("@a:test"),
            Some(room_id!("!r:test")),
            "m.tag",
            &json!({"t": 1}),
        )
        .await
        .unwrap();
    assert!(p2 > p1);
    let p3 = store
        .set_account_data(user_id!("@a:test"), None, "m.direct", &json!({"x": 2}))
        .await
        .unwrap();
    assert!(p3 > p2);
    let since = store
        .account_data_since(user_id!("@a:test"), p2)
        .await
        .unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].content, json!({"x": 2}));
    assert_eq!(
        store
            .account_data_since(user_id!("@a:test"), 0)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.account_data_position().await.unwrap(), p3);
    assert_eq!(
        store
            .get_account_data(user_id!("@a:test"), Some(room_id!("!r:test")), "m.tag")
            .await
            .unwrap(),
        Some(json!({"t": 1}))
    );

    // Forgotten rooms: per user, forgetting again moves the position.
    let a = user_id!("@a:test");
    assert!(store.forgotten_rooms(a).await.unwrap().is_empty());
    store.forget_room(a, room_id!("!r:test"), 5).await.unwrap();
    store.forget_room(a, room_id!("!s:test"), 6).await.unwrap();
    store.forget_room(a, room_id!("!r:test"), 9).await.unwrap();
    let mut forgotten = store.forgotten_rooms(a).await.unwrap();
    forgotten.sort();
    assert_eq!(
        forgotten,
        vec![
            (owned_room_id!("!r:test"), 9),
            (owned_room_id!("!s:test"), 6)
        ]
    );
    assert!(store
        .forgotten_rooms(user_id!("@b:test"))
        .await
        .unwrap()
        .is_empty());

    // OpenID tokens: valid until they expire; expired ones are swept.
    store.create_openid_token("h1", a, 1_000, 0).await.unwrap();
    assert_eq!(
        store
            .openid_token_user("h1", 1_000)
            .await
            .unwrap()
            .as_deref(),
        Some(a)
    );
    assert_eq!(store.openid_token_user("h1", 1_001).await.unwrap(), None);
    assert_eq!(store.openid_token_user("h2", 0).await.unwrap(), None);
    store
        .create_openid_token("h2", a, 5_000, 2_000)
        .await
        .unwrap();
    assert_eq!(
        store.openid_token_user("h1", 0).await.unwrap(),
        None,
        "swept"
    );
    profile_fields_and_deactivation(&*store).await;
    reports(&*store).await;
}

async fn profile_fields_and_deactivation(store: &dyn AccountStore) {
    let a = user_id!("@a:test");
    store
        .set_profile_field(a, "m.tz", Some(&json!("Europe/Paris")))
        .await
        .unwrap();
    store
        .set_profile_field(a, "b.list", Some(&json!([1, 2])))
        .await
        .unwrap();
    store
        .set_profile_field(a, "m.tz", Some(&json!("UTC")))
        .await
        .unwrap();
    assert_eq!(
        store.profile_fields(a).await.unwrap(),
        vec![
            ("b.list".to_owned(), json!([1, 2])),
            ("m.tz".to_owned(), json!("UTC"))
        ]
    );
    store.set_profile_field(a, "b.list", None).await.unwrap();
    store.set_profile_field(a, "never.set", None).await.unwrap();
    assert_eq!(store.profile_fields(a).await.unwrap().len(), 1);
    assert!(store
        .profile_fields(user_id!("@b:test"))
        .await
        .unwrap()
        .is_empty());

    // Deactivation: the row stays (the name is never reissued), marked;
    // password, profile, fields, tokens and devices go.
    store.set_displayname(a, Some("A")).await.unwrap();
    store
        .create_device_with_token(a, device_id!("D1"), None, "tok-a")
        .await
        .unwrap();
    let hashes = store.deactivate_user(a, 77).await.unwrap();
    assert!(hashes.contains(&"tok-a".to_owned()));
    assert_eq!(store.find_token("tok-a").await.unwrap(), None);
    let record = store.get_user(a).await.unwrap().unwrap();
    assert!(record.deactivated);
    assert_eq!((record.password_hash, record.displayname), (None, None));
    assert!(store.profile_fields(a).await.unwrap().is_empty());
    assert!(matches!(
        store.create_user(&user("@a:test")).await,
        Err(StoreError::Conflict)
    ));
}

async fn reports(store: &dyn AccountStore) {
    let report = |reporter: &str, reason: &str| Report {
        id: 0,
        reporter: super::user(reporter),
        room_id: Some(owned_room_id!("!r:test")),
        event_id: Some(owned_event_id!("$e")),
        user_id: None,
        reason: Some(reason.to_owned()),
        score: Some(-100),
        received_ts: 5,
    };
    store.add_report(&report("@a:test", "spam")).await.unwrap();
    store.add_report(&report("@b:test", "abuse")).await.unwrap();
    let all = store.reports(0, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].reason.as_deref(), Some("spam"));
    assert_eq!(all[1].reporter, "@b:test");
    assert_eq!(all[1].event_id.as_deref().map(|e| e.as_str()), Some("$e"));
    let rest = store.reports(all[0].id, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, all[1].id);
}
