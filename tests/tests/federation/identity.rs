//! The key server and notary, X-Matrix both ways, and the outbound guard.

use super::*;

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

    let one = get_json(&format!(
        "{}/_matrix/key/v2/query/{}",
        a.federation_url(),
        enc(&b.name)
    ))
    .await;
    assert_eq!(one["server_keys"][0]["server_name"], b.name.as_str());

    // A server that cannot be reached is left out, not an error.
    let unreachable = get_json(&format!(
        "{}/_matrix/key/v2/query/{}",
        a.federation_url(),
        enc(&format!("localhost:{}", free_port()))
    ))
    .await;
    assert_eq!(unreachable, json!({"server_keys": []}));
}
