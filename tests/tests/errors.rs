//! Every failure is a Matrix error a client can act on: the right status, a
//! JSON body with `errcode`, and never a 5xx, whatever garbage comes in.

use reqwest::Method;
use serde_json::{json, Value};
use tern_tests::{
    assert_error, assert_error_for, assert_ok, enc, errcode, Client, TestServer, PASSWORD, V3,
};

#[tokio::test]
async fn missing_and_unknown_tokens_are_401() {
    let server = TestServer::start().await;
    let anon = Client::anonymous(&server);
    let whoami = format!("{V3}/account/whoami");

    assert_error(&anon.get(&whoami).await, 401, "M_MISSING_TOKEN");
    let bad = anon.with_token(Some("not-a-real-token"));
    assert_error(&bad.get(&whoami).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &bad.post(&format!("{V3}/createRoom"), &json!({})).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &anon.get(&format!("{V3}/sync")).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_or_have_the_wrong_shape_are_400() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({})).await;
    let create = format!("{V3}/createRoom");
    let send = format!("{V3}/rooms/{}/send/m.room.message/t1", enc(&room));
    let json_type = Some("application/json");

    // (An empty body is left out: servers commonly read it as `{}`.)
    for garbage in [&b"{not json"[..], b"{\"a\":", b"\xff\xfe{}", b"{\"a\": 1}}"] {
        let resp = alice
            .request_raw(Method::POST, &create, garbage.to_vec(), json_type)
            .await;
        let what = format!("createRoom {:?}", String::from_utf8_lossy(garbage));
        assert_error_for(&what, &resp, 400, "M_NOT_JSON");
    }
    let resp = alice
        .request_raw(Method::PUT, &send, b"{\"body\": }".to_vec(), json_type)
        .await;
    assert_error(&resp, 400, "M_NOT_JSON");

    // Valid JSON, but not an object where the API wants one.
    for shape in [json!([1, 2]), json!("text"), json!(42), json!(null)] {
        let resp = alice.post(&create, &shape).await;
        assert_error_for(&format!("createRoom {shape}"), &resp, 400, "M_BAD_JSON");
        let resp = alice.put(&send, &shape).await;
        assert_error_for(&format!("send {shape}"), &resp, 400, "M_BAD_JSON");
    }
    // Objects with fields of the wrong type.
    for body in [
        json!({"preset": 42}),
        json!({"invite": "@bob:localhost"}),
        json!({"initial_state": {"type": "m.room.name"}}),
    ] {
        let (status, resp) = alice.post(&create, &body).await;
        assert!(
            status == 400 && ["M_BAD_JSON", "M_INVALID_PARAM"].contains(&errcode(&resp)),
            "createRoom {body}: expected 400 M_BAD_JSON, got {status} {resp}"
        );
    }
    // A required field missing.
    let invite = format!("{V3}/rooms/{}/invite", enc(&room));
    let (status, resp) = alice.post(&invite, &json!({})).await;
    assert!(
        status == 400
            && ["M_BAD_JSON", "M_MISSING_PARAM", "M_INVALID_PARAM"].contains(&errcode(&resp)),
        "invite without user_id: {status} {resp}"
    );
}

#[tokio::test]
async fn unknown_endpoints_are_m_unrecognized() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let anon = Client::anonymous(&server);
    for (client, method, path) in [
        (&alice, Method::GET, format!("{V3}/no/such/endpoint")),
        (&anon, Method::GET, format!("{V3}/no/such/endpoint")),
        (&alice, Method::GET, "/_matrix/client/v0/sync".to_owned()),
        (&alice, Method::GET, "/_matrix/nothing".to_owned()),
        // Known path, wrong method.
        (&alice, Method::DELETE, format!("{V3}/account/whoami")),
        (&alice, Method::PATCH, format!("{V3}/createRoom")),
    ] {
        let (status, body) = client.request(method.clone(), &path, None).await;
        assert!(
            (status == 404 || status == 405) && errcode(&body) == "M_UNRECOGNIZED",
            "{method} {path}: expected 404/405 M_UNRECOGNIZED, got {status} {body}"
        );
    }
}

#[tokio::test]
async fn oversized_requests_are_413_and_the_server_carries_on() {
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let room = alice.create_room(&json!({})).await;

    // A 2 MB request body.
    let huge = json!({"msgtype": "m.text", "body": "x".repeat(2 * 1024 * 1024)});
    let send = format!("{V3}/rooms/{}/send/m.room.message/huge", enc(&room));
    assert_error(&alice.put(&send, &huge).await, 413, "M_TOO_LARGE");

    // A body under any transport limit but an event over the 64 KiB event limit.
    let big = json!({"msgtype": "m.text", "body": "y".repeat(70 * 1024)});
    let send = format!("{V3}/rooms/{}/send/m.room.message/big", enc(&room));
    assert_error(&alice.put(&send, &big).await, 413, "M_TOO_LARGE");

    // Nothing was stored and the server still answers.
    let history = alice.room_history(&room).await;
    assert!(
        tern_tests::message_bodies(&history).is_empty(),
        "rejected messages must not be stored"
    );
    alice.send_text(&room, "small", "still alive").await;
}

#[tokio::test]
async fn registration_errors() {
    let server = TestServer::start().await;
    Client::register(&server, "alice").await;
    let anon = Client::anonymous(&server);
    let register = format!("{V3}/register");
    let attempt = |username: &str| {
        json!({
            "username": username,
            "password": PASSWORD,
            "auth": {"type": "m.login.dummy"},
        })
    };

    assert_error(
        &anon.post(&register, &attempt("alice")).await,
        400,
        "M_USER_IN_USE",
    );
    for bad in ["Bad User!", "with space", "ümlaut", "a:b"] {
        let resp = anon.post(&register, &attempt(bad)).await;
        assert_error_for(
            &format!("username {bad:?}"),
            &resp,
            400,
            "M_INVALID_USERNAME",
        );
    }
    let guest = format!("{register}?kind=guest");
    assert_error(
        &anon.post(&guest, &json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    // The refused attempts created no account.
    let (status, body) = anon
        .post(
            &format!("{V3}/login"),
            &json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "with space"},
                "password": PASSWORD,
            }),
        )
        .await;
    assert!(status == 403 || status == 400, "{status} {body}");
}

/// A request the sweep sends, and whether it must fail or merely must not crash.
struct Probe {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    must_fail: bool,
}

fn probe(method: Method, path: impl Into<String>, body: Option<Value>, must_fail: bool) -> Probe {
    Probe {
        method,
        path: path.into(),
        body: body.map(|b| serde_json::to_vec(&b).unwrap()),
        content_type: Some("application/json"),
        must_fail,
    }
}

fn raw(
    method: Method,
    path: impl Into<String>,
    body: &[u8],
    content_type: Option<&'static str>,
) -> Probe {
    Probe {
        method,
        path: path.into(),
        body: Some(body.to_vec()),
        content_type,
        must_fail: true,
    }
}

/// `depth` nested arrays: `[[[...]]]`.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn malformed_input_sweep_never_gives_5xx_and_always_an_errcode() {
    use Method as M;
    let server = TestServer::start().await;
    let alice = Client::register(&server, "alice").await;
    let bob = Client::register(&server, "bob").await;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await;
    let event = alice.send_text(&room, "t1", "hello").await;
    let r = enc(&room);
    let me = enc(&alice.user_id);
    let other = enc(&bob.user_id);
    let long = "a".repeat(5000);
    let deep = format!(
        "{{\"msgtype\":\"m.text\",\"body\":\"x\",\"n\":{}}}",
        nested(100_000)
    );
    let deep_create = format!("{{\"creation_content\":{{\"n\":{}}}}}", nested(5_000));
    let json_ct = Some("application/json");

    let probes = vec![
        // Room ids, event ids, user ids and aliases that are not ids at all.
        probe(
            M::GET,
            format!("{V3}/rooms/notaroom/messages?dir=b"),
            None,
            true,
        ),
        probe(M::GET, format!("{V3}/rooms/!nocolon/state"), None, true),
        probe(
            M::GET,
            format!("{V3}/rooms/{}/state", enc("!unknown:localhost")),
            None,
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/%21{long}%3Alocalhost/state"),
            None,
            true,
        ),
        probe(M::GET, format!("{V3}/rooms/%FF%FE/state"), None, true),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/event/notanevent"),
            None,
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/event/{}", enc("$nope")),
            None,
            true,
        ),
        probe(M::GET, format!("{V3}/rooms/{r}/event/%C3%28"), None, true),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/context/notanevent?limit=5"),
            None,
            true,
        ),
        probe(
            M::PUT,
            format!("{V3}/rooms/notaroom/send/m.room.message/t2"),
            Some(json!({"body": "x"})),
            true,
        ),
        probe(
            M::PUT,
            format!("{V3}/rooms/{r}/send/m.room.message/%FF%FE"),
            Some(json!({"body": "x"})),
            false,
        ),
        probe(
            M::PUT,
            format!("{V3}/rooms/{r}/send/%00/t3"),
            Some(json!({"body": "x"})),
            false,
        ),
        // Redacting an event the server has not seen is legal (it may arrive later).
        probe(
            M::PUT,
            format!("{V3}/rooms/{r}/redact/notanevent/t4"),
            Some(json!({})),
            false,
        ),
        probe(
            M::POST,
            format!("{V3}/join/notaroom"),
            Some(json!({})),
            true,
        ),
        probe(M::POST, format!("{V3}/join/%23"), Some(json!({})), true),
        probe(
            M::POST,
            format!("{V3}/join/{}", enc("#nowhere:localhost")),
            Some(json!({})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/join/{}", enc("!ghost:localhost")),
            Some(json!({})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/rooms/{r}/invite"),
            Some(json!({"user_id": "notauser"})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/rooms/{r}/invite"),
            Some(json!({"user_id": 5})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/rooms/{r}/kick"),
            Some(json!({"user_id": ["@bob:localhost"]})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/rooms/{r}/ban"),
            Some(json!({})),
            true,
        ),
        probe(M::GET, format!("{V3}/profile/notauser"), None, true),
        probe(
            M::GET,
            format!("{V3}/profile/@%FF%FE:localhost"),
            None,
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/profile/{}", enc("@nobody:localhost")),
            None,
            true,
        ),
        probe(
            M::PUT,
            format!("{V3}/profile/{other}/displayname"),
            Some(json!({"displayname": "hacked"})),
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/directory/room/notanalias"),
            None,
            true,
        ),
        probe(
            M::PUT,
            format!("{V3}/directory/room/{}", enc("#x:localhost")),
            Some(json!({"room_id": "garbage"})),
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/user/{me}/filter/notafilter"),
            None,
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/user/{me}/filter"),
            Some(json!([1])),
            true,
        ),
        probe(
            M::PUT,
            format!("{V3}/user/{other}/account_data/x.y"),
            Some(json!({})),
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/state/m.room.name/%FF"),
            None,
            true,
        ),
        // Query parameters out of range or of the wrong kind.
        probe(M::GET, format!("{V3}/rooms/{r}/messages?dir=x"), None, true),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/messages?dir=b&limit=abc"),
            None,
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/messages?dir=b&limit=-5"),
            None,
            false,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/messages?dir=b&limit=99999999999999999999"),
            None,
            false,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/messages?dir=b&limit=1000000"),
            None,
            false,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/messages?dir=b&from=garbage"),
            None,
            false,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/messages?dir=b&filter=%7Bbad"),
            None,
            true,
        ),
        probe(
            M::GET,
            format!("{V3}/rooms/{r}/members?membership=bogus"),
            None,
            false,
        ),
        probe(M::GET, format!("{V3}/sync?timeout=abc"), None, true),
        probe(
            M::GET,
            format!("{V3}/sync?timeout=-1&since=garbage"),
            None,
            false,
        ),
        probe(M::GET, format!("{V3}/sync?filter=%7Bbad"), None, true),
        probe(M::GET, format!("{V3}/sync?filter=99999"), None, false),
        // Bodies that are well-formed JSON but nonsense.
        probe(
            M::POST,
            format!("{V3}/createRoom"),
            Some(json!({"room_version": "9999"})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/createRoom"),
            Some(json!({"invite": ["notauser"]})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/createRoom"),
            Some(json!({"initial_state": [{"type": 5}]})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/createRoom"),
            Some(json!({"preset": "no_such_preset"})),
            true,
        ),
        probe(M::POST, format!("{V3}/login"), Some(json!({})), true),
        probe(
            M::POST,
            format!("{V3}/login"),
            Some(json!({"type": "m.login.password"})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/login"),
            Some(json!({"type": "m.login.bogus"})),
            true,
        ),
        probe(
            M::POST,
            format!("{V3}/login"),
            Some(
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": 5}, "password": []}),
            ),
            true,
        ),
        probe(
            M::PUT,
            format!("{V3}/rooms/{r}/send/m.room.message/t5"),
            Some(json!({"body": "\u{0}nul\u{0}"})),
            false,
        ),
        // Bytes that are not JSON, not UTF-8, or nested beyond reason.
        raw(
            M::PUT,
            format!("{V3}/rooms/{r}/send/m.room.message/t6"),
            b"{\"body\":\"\xff\xfe\"}",
            json_ct,
        ),
        raw(
            M::PUT,
            format!("{V3}/rooms/{r}/send/m.room.message/t7"),
            b"{\"body\":\"\\ud800\"}",
            json_ct,
        ),
        raw(
            M::PUT,
            format!("{V3}/rooms/{r}/send/m.room.message/t8"),
            deep.as_bytes(),
            json_ct,
        ),
        raw(
            M::POST,
            format!("{V3}/createRoom"),
            deep_create.as_bytes(),
            json_ct,
        ),
        raw(
            M::POST,
            format!("{V3}/login"),
            nested(100_000).as_bytes(),
            json_ct,
        ),
        raw(
            M::POST,
            format!("{V3}/createRoom"),
            b"\x00\x01\x02",
            Some("application/octet-stream"),
        ),
        // A JSON body without a Content-Type header must not break the error format.
        Probe {
            content_type: None,
            must_fail: false,
            ..probe(
                M::PUT,
                format!("{V3}/rooms/{r}/send/m.room.message/t9"),
                Some(json!({"msgtype": "m.text", "body": "no ct"})),
                false,
            )
        },
    ];

    let mut failures = Vec::new();
    for p in &probes {
        let resp = alice
            .try_request(p.method.clone(), &p.path, p.body.clone(), p.content_type)
            .await;
        let shown_path: String = p.path.chars().take(120).collect();
        let (status, body) = match resp {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{} {shown_path}: no response ({e})", p.method));
                continue;
            }
        };
        let ok_error = !errcode(&body).is_empty() && body["error"].is_string();
        if status >= 500 {
            failures.push(format!("{} {shown_path}: {status} {body}", p.method));
        } else if p.must_fail && status < 400 {
            failures.push(format!(
                "{} {shown_path}: accepted with {status} {body}",
                p.method
            ));
        } else if status >= 400 && !ok_error {
            failures.push(format!(
                "{} {shown_path}: {status} without errcode/error: {body}",
                p.method
            ));
        }
    }
    // The server survived all of it.
    assert_ok(alice.get(&format!("{V3}/account/whoami")).await);
    assert!(
        failures.is_empty(),
        "{} of {} malformed requests were mishandled:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
    // The real event is untouched.
    let fetched = assert_ok(
        alice
            .get(&format!("{V3}/rooms/{r}/event/{}", enc(&event)))
            .await,
    );
    assert_eq!(fetched["content"]["body"], "hello");
}
