//! The `E2eeStore` part of the conformance suite: devices, keys, the
//! device-list and to-device streams, UIA sessions and key backups.

use std::sync::Arc;

use ruma_common::{owned_device_id, room_id, user_id, OwnedDeviceId};
use serde_json::{json, Value};

use crate::store::e2ee::{
    BackupKey, CrossSigningKind, KeySignature, OneTimeKey, OutboundEdu, ToDeviceMessage, UiaSession,
};
use crate::store::{AccountStore, E2eeStore, RoomStore, StoreError};

fn otk(algorithm: &str, key_id: &str, key: &str) -> OneTimeKey {
    OneTimeKey {
        algorithm: algorithm.into(),
        key_id: key_id.into(),
        key: json!({ "key": key }),
    }
}

pub async fn e2ee_store(
    store: Arc<dyn E2eeStore>,
    accounts: Arc<dyn AccountStore>,
    rooms: Arc<dyn RoomStore>,
) {
    devices(store.as_ref(), accounts.as_ref()).await;
    one_time_keys(store.as_ref()).await;
    cross_signing(store.as_ref()).await;
    device_lists(store.as_ref(), rooms.as_ref()).await;
    to_device(store.as_ref()).await;
    uia(store.as_ref()).await;
    backups(store.as_ref()).await;
}

async fn devices(store: &dyn E2eeStore, accounts: &dyn AccountStore) {
    let alice = user_id!("@alice:test");
    for (device, token) in [("PHONE", "h1"), ("LAPTOP", "h2")] {
        accounts
            .create_device_with_token(alice, device.into(), Some(device), token)
            .await
            .unwrap();
    }
    store
        .record_seen(alice, "PHONE".into(), "10.0.0.7", 1234)
        .await
        .unwrap();
    assert!(store
        .set_device_name(alice, "LAPTOP".into(), Some("Work laptop"))
        .await
        .unwrap());
    assert!(!store
        .set_device_name(alice, "NOPE".into(), Some("x"))
        .await
        .unwrap());
    let listed = store.devices(alice).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].device_id, "LAPTOP");
    assert_eq!(listed[0].display_name.as_deref(), Some("Work laptop"));
    assert_eq!(listed[1].last_seen_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(listed[1].last_seen_ts, Some(1234));

    // Deleting a device takes its token, keys and inbox with it.
    let phone: OwnedDeviceId = owned_device_id!("PHONE");
    store
        .set_device_keys(alice, &phone, &json!({"device_id": "PHONE"}))
        .await
        .unwrap();
    store
        .add_one_time_keys(alice, &phone, &[otk("signed_curve25519", "A", "k")])
        .await
        .unwrap();
    store
        .queue_to_device(
            alice,
            "LAPTOP".into(),
            "t-del",
            1,
            &[ToDeviceMessage {
                user_id: alice.to_owned(),
                device_id: phone.clone(),
                kind: "m.x".into(),
                content: json!({}),
            }],
            &mut [],
        )
        .await
        .unwrap();
    let before = store.device_list_position().await.unwrap();
    let hashes = store
        .delete_devices(alice, std::slice::from_ref(&phone))
        .await
        .unwrap();
    assert_eq!(hashes, vec!["h1".to_owned()]);
    assert!(accounts.find_token("h1").await.unwrap().is_none());
    assert!(accounts.find_token("h2").await.unwrap().is_some());
    assert_eq!(store.devices(alice).await.unwrap().len(), 1);
    let keys = store.device_keys(&[alice.to_owned()]).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(store.key_counts(alice, &phone).await.unwrap().0, vec![]);
    assert!(store.inbox_sizes(alice).await.unwrap().is_empty());
    assert!(store.device_list_position().await.unwrap() > before);
}

async fn one_time_keys(store: &dyn E2eeStore) {
    let bob = user_id!("@bob:test");
    let dev = owned_device_id!("BOBDEV");
    let keys: Vec<OneTimeKey> = (0..3)
        .map(|i| otk("signed_curve25519", &format!("K{i}"), &format!("v{i}")))
        .collect();
    store.add_one_time_keys(bob, &dev, &keys).await.unwrap();
    // The same upload again (a retry) is fine; a new key under a used id is not.
    store.add_one_time_keys(bob, &dev, &keys).await.unwrap();
    let clash = store
        .add_one_time_keys(
            bob,
            &dev,
            &[
                otk("signed_curve25519", "K9", "new"),
                otk("signed_curve25519", "K1", "other"),
            ],
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict)), "{clash:?}");
    store
        .set_fallback_keys(bob, &dev, &[otk("signed_curve25519", "F1", "fb")])
        .await
        .unwrap();
    let (counts, fallbacks) = store.key_counts(bob, &dev).await.unwrap();
    assert_eq!(counts, vec![("signed_curve25519".to_owned(), 3)]);
    assert_eq!(fallbacks, vec!["signed_curve25519".to_owned()]);

    let mut claimed = Vec::new();
    for _ in 0..3 {
        let key = store
            .claim_key(bob, &dev, "signed_curve25519")
            .await
            .unwrap()
            .expect("a one-time key");
        claimed.push(key.key_id);
    }
    claimed.sort();
    assert_eq!(claimed, ["K0", "K1", "K2"]);
    // Then the fallback key, as often as asked, and it shows as used.
    for _ in 0..2 {
        let key = store
            .claim_key(bob, &dev, "signed_curve25519")
            .await
            .unwrap()
            .expect("the fallback key");
        assert_eq!(key.key_id, "F1");
        assert_eq!(key.key, json!({"key": "fb"}));
    }
    let (counts, fallbacks) = store.key_counts(bob, &dev).await.unwrap();
    assert!(counts.is_empty() && fallbacks.is_empty());
    // The same fallback key again stays used; a new one is fresh.
    store
        .set_fallback_keys(bob, &dev, &[otk("signed_curve25519", "F1", "fb")])
        .await
        .unwrap();
    assert!(store.key_counts(bob, &dev).await.unwrap().1.is_empty());
    store
        .set_fallback_keys(bob, &dev, &[otk("signed_curve25519", "F2", "fb2")])
        .await
        .unwrap();
    assert_eq!(store.key_counts(bob, &dev).await.unwrap().1.len(), 1);
    assert!(store
        .claim_key(bob, &dev, "curve25519")
        .await
        .unwrap()
        .is_none());
}

async fn cross_signing(store: &dyn E2eeStore) {
    let carol = user_id!("@carol:test");
    let dave = user_id!("@dave:test");
    store
        .set_cross_signing_keys(
            carol,
            &[
                (CrossSigningKind::Master, json!({"usage": ["master"]})),
                (
                    CrossSigningKind::SelfSigning,
                    json!({"usage": ["self_signing"]}),
                ),
            ],
        )
        .await
        .unwrap();
    store
        .set_cross_signing_keys(
            carol,
            &[(
                CrossSigningKind::Master,
                json!({"usage": ["master"], "v": 2}),
            )],
        )
        .await
        .unwrap();
    let mut found = store
        .cross_signing_keys(&[carol.to_owned(), dave.to_owned()])
        .await
        .unwrap();
    found.sort_by_key(|(_, kind, _)| *kind);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].1, CrossSigningKind::Master);
    assert_eq!(found[0].2["v"], 2);

    let signature = |signer: &str, sig: &str| KeySignature {
        user_id: carol.to_owned(),
        key_id: "CAROLDEV".into(),
        signer: signer.try_into().unwrap(),
        signer_key_id: "ed25519:SSK".into(),
        signature: sig.into(),
    };
    let before = store.device_list_position().await.unwrap();
    store
        .add_signatures(&[
            signature("@carol:test", "s1"),
            signature("@dave:test", "s2"),
        ])
        .await
        .unwrap();
    store
        .add_signatures(&[signature("@carol:test", "s3")])
        .await
        .unwrap();
    let mut sigs = store.signatures(&[carol.to_owned()]).await.unwrap();
    sigs.sort_by(|a, b| a.signer.cmp(&b.signer));
    let texts: Vec<&str> = sigs.iter().map(|s| s.signature.as_str()).collect();
    assert_eq!(texts, ["s3", "s2"]);
    assert_eq!(store.device_list_position().await.unwrap(), before + 2);
}

async fn device_lists(store: &dyn E2eeStore, rooms: &dyn RoomStore) {
    // erin and frank share a room; gina is in none of theirs.
    super::append_sample(rooms, "!dl:test", 1).await;
    let member = |n: usize, user: &str| {
        let mut event = super::sample_message("!dl:test", 10 + n);
        event.kind = "m.room.member".into();
        event.state_key = Some(user.into());
        event.membership = Some("join".into());
        event
    };
    rooms
        .append(vec![member(0, "@erin:test"), member(1, "@frank:test")])
        .unwrap()
        .await
        .unwrap();
    let (erin, frank, gina) = (
        user_id!("@erin:test"),
        user_id!("@frank:test"),
        user_id!("@gina:test"),
    );
    let since = store.device_list_position().await.unwrap();
    store.note_device_list_change(frank).await.unwrap();
    store.note_device_list_change(gina).await.unwrap();
    store.note_device_list_change(erin).await.unwrap();
    let upto = store.device_list_position().await.unwrap();
    assert_eq!(upto, since + 3);
    let mut seen = store.device_list_changes(erin, since, upto).await.unwrap();
    seen.sort();
    assert_eq!(seen, vec![erin.to_owned(), frank.to_owned()]);
    // Only the window asked for.
    let seen = store
        .device_list_changes(erin, since + 1, upto)
        .await
        .unwrap();
    assert_eq!(seen, vec![erin.to_owned()]);
    assert!(store
        .device_list_changes(erin, upto, upto)
        .await
        .unwrap()
        .is_empty());
    let sharing = store
        .sharing_a_room(erin, &[frank.to_owned(), gina.to_owned()])
        .await
        .unwrap();
    assert_eq!(sharing, vec![frank.to_owned()]);

    // frank leaves: from erin's view he parted (in that window only).
    let before = rooms.events_position().await.unwrap();
    let mut leave = member(2, "@frank:test");
    leave.membership = Some("leave".into());
    rooms.append(vec![leave]).unwrap().await.unwrap();
    let after = rooms.events_position().await.unwrap();
    assert_eq!(
        store.parted(erin, before, after).await.unwrap(),
        vec![frank.to_owned()]
    );
    assert!(store.parted(erin, after, after).await.unwrap().is_empty());
    assert!(store
        .sharing_a_room(erin, &[frank.to_owned()])
        .await
        .unwrap()
        .is_empty());
    let _ = room_id!("!dl:test");
}

async fn to_device(store: &dyn E2eeStore) {
    let (sender, target) = (user_id!("@hank:test"), user_id!("@ivy:test"));
    let message = |device: &str, n: i64| ToDeviceMessage {
        user_id: target.to_owned(),
        device_id: device.into(),
        kind: "m.room_key_request".into(),
        content: json!({ "n": n }),
    };
    let start = store.to_device_position().await.unwrap();
    let far: ruma_common::OwnedServerName = "far.example".try_into().unwrap();
    let mut outbound = vec![
        OutboundEdu {
            id: 0,
            destination: far.clone(),
            edu: r#"{"edu_type":"m.direct_to_device","content":{"message_id":"m1"}}"#.into(),
        },
        OutboundEdu {
            id: 0,
            destination: far.clone(),
            edu: r#"{"edu_type":"m.direct_to_device","content":{"message_id":"m2"}}"#.into(),
        },
    ];
    let pos = store
        .queue_to_device(
            sender,
            "HANKDEV".into(),
            "txn1",
            1_000,
            &[message("A", 1), message("B", 1), message("A", 2)],
            &mut outbound,
        )
        .await
        .unwrap()
        .expect("a new transaction");
    assert_eq!(pos, start + 3);
    // The same transaction again is not queued twice.
    let again = store
        .queue_to_device(
            sender,
            "HANKDEV".into(),
            "txn1",
            1_001,
            &[message("A", 9)],
            &mut outbound.clone(),
        )
        .await
        .unwrap();
    assert_eq!(again, None);
    // The EDUs for the other server wait, once each, until sent.
    assert!(outbound[0].id != outbound[1].id);
    let pending = store.pending_outbound().await.unwrap();
    assert_eq!(pending, outbound);
    store.outbound_sent(&[outbound[0].id]).await.unwrap();
    assert_eq!(
        store.pending_outbound().await.unwrap(),
        vec![outbound[1].clone()]
    );
    assert_eq!(store.to_device_position().await.unwrap(), pos);

    let inbox = store
        .to_device_inbox(target, "A".into(), start, pos, 100)
        .await
        .unwrap();
    let ns: Vec<&Value> = inbox.iter().map(|m| &m.content["n"]).collect();
    assert_eq!(ns, [&json!(1), &json!(2)]);
    assert_eq!(inbox[0].sender, sender);
    let first = store
        .to_device_inbox(target, "A".into(), start, pos, 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let mut sizes = store.inbox_sizes(target).await.unwrap();
    sizes.sort();
    assert_eq!(sizes, vec![("A".into(), 2), ("B".into(), 1)]);
    store
        .acknowledge_to_device(target, "A".into(), first[0].stream)
        .await
        .unwrap();
    let rest = store
        .to_device_inbox(target, "A".into(), 0, pos, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].content["n"], 2);
    // Positions never go back, though messages are deleted.
    store
        .acknowledge_to_device(target, "A".into(), pos)
        .await
        .unwrap();
    store
        .acknowledge_to_device(target, "B".into(), pos)
        .await
        .unwrap();
    let next = store
        .queue_to_device(
            sender,
            "HANKDEV".into(),
            "txn2",
            2_000,
            &[message("A", 3)],
            &mut [],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, pos + 1);
}

async fn uia(store: &dyn E2eeStore) {
    let session = UiaSession {
        session_id: "S1".into(),
        user_id: user_id!("@jo:test").to_owned(),
        operation: "delete_devices".into(),
        completed: vec![],
        expires_ts: 5_000,
    };
    store.save_uia_session(&session, 1_000).await.unwrap();
    let mut done = session.clone();
    done.completed.push("m.login.password".into());
    store.save_uia_session(&done, 1_000).await.unwrap();
    assert_eq!(store.uia_session("S1").await.unwrap(), Some(done.clone()));
    // Saving another session later sweeps the expired one.
    let other = UiaSession {
        session_id: "S2".into(),
        expires_ts: 20_000,
        ..session
    };
    store.save_uia_session(&other, 10_000).await.unwrap();
    assert_eq!(store.uia_session("S1").await.unwrap(), None);
    store.delete_uia_session("S2").await.unwrap();
    assert_eq!(store.uia_session("S2").await.unwrap(), None);
}

async fn backups(store: &dyn E2eeStore) {
    let kim = user_id!("@kim:test");
    assert!(store.backup_version(kim, None).await.unwrap().is_none());
    let v1 = store
        .create_backup(kim, "m.megolm_backup.v1", &json!({"public_key": "a"}))
        .await
        .unwrap();
    let v2 = store
        .create_backup(kim, "m.megolm_backup.v1", &json!({"public_key": "b"}))
        .await
        .unwrap();
    assert_eq!(v2, v1 + 1);
    let latest = store.backup_version(kim, None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.count), (v2, 0));
    assert!(store
        .update_backup(kim, v2, &json!({"public_key": "b2"}))
        .await
        .unwrap());
    let key = |room: &str, session: &str, quality: i64| BackupKey {
        room_id: room.try_into().unwrap(),
        session_id: session.into(),
        data: json!({ "q": quality }),
    };
    let better = |new: &Value, old: &Value| new["q"].as_i64() > old["q"].as_i64();
    let (etag1, count) = store
        .put_backup_keys(
            kim,
            v2,
            &[
                key("!a:test", "s1", 5),
                key("!a:test", "s2", 5),
                key("!b:test", "s3", 1),
            ],
            &better,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 3);
    // A worse key does not replace a better one; a better one does.
    let (etag2, _) = store
        .put_backup_keys(
            kim,
            v2,
            &[key("!a:test", "s1", 1), key("!a:test", "s2", 9)],
            &better,
        )
        .await
        .unwrap()
        .unwrap();
    assert_ne!(etag1, etag2);
    let room_a = store
        .backup_keys(kim, v2, Some(room_id!("!a:test")), None)
        .await
        .unwrap();
    let qualities: Vec<i64> = room_a
        .iter()
        .map(|k| k.data["q"].as_i64().unwrap())
        .collect();
    assert_eq!(qualities, [5, 9]);
    let one = store
        .backup_keys(kim, v2, Some(room_id!("!b:test")), Some("s3"))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let (_, count) = store
        .delete_backup_keys(kim, v2, Some(room_id!("!a:test")), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 1);
    assert!(store
        .put_backup_keys(kim, 99, &[key("!a:test", "s", 1)], &better)
        .await
        .unwrap()
        .is_none());
    assert!(store.delete_backup(kim, v2).await.unwrap());
    assert!(!store.delete_backup(kim, v2).await.unwrap());
    // The latest undeleted version is v1 again; a new one is never v2 again.
    assert_eq!(
        store
            .backup_version(kim, None)
            .await
            .unwrap()
            .unwrap()
            .version,
        v1
    );
    let v3 = store
        .create_backup(kim, "m.megolm_backup.v1", &json!({}))
        .await
        .unwrap();
    assert_eq!(v3, v2 + 1);
}
