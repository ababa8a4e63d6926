//! The media repository, black-box: uploads (direct and reserved), downloads
//! with their safety headers, thumbnails, limits and errors. Every test runs
//! on the filesystem engine and again on the S3 server that
//! `TERN_TEST_S3_ENDPOINT` names (scripts/test.sh starts moto for that);
//! without it they fail.

mod support;

use std::io::Cursor;
use std::time::Duration;

use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tern_tests::{assert_error, enc, eventually, next_batch, room_of_two, Client, V3};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_round_trip() {
    for backend in backends() {
        let server = start(&backend, "").await;
        let alice = Client::register(&server, "alice").await;

        let uri = upload(
            &server,
            &alice,
            b"hello media",
            "text/plain",
            Some("notes.txt"),
        )
        .await;
        let (server_name, media_id) = parse_mxc(&uri);
        assert_eq!(server_name, "localhost", "{}", backend.name);
        assert!(media_id.len() >= 24, "{media_id}");
        assert!(media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));

        let resp = download(&server, Some(&alice), &uri).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", backend.name);
        assert_eq!(header(&resp, "content-type"), "text/plain");
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename=notes.txt"
        );
        assert_eq!(resp.bytes().await.unwrap(), &b"hello media"[..]);

        // A name in the path overrides the stored one, escaped per RFC 6266.
        let path = format!(
            "{MEDIA_V1}/download/localhost/{media_id}/{}",
            enc("my notes.txt")
        );
        let resp = send(&server, Some(&alice), Method::GET, &path, None).await;
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename*=utf-8''my%20notes.txt"
        );

        // Images are shown inline.
        let image = png(8, 8);
        let uri = upload(&server, &alice, &image, "image/png", Some("cat.png")).await;
        let resp = download(&server, Some(&alice), &uri).await;
        assert_eq!(
            header(&resp, "content-disposition"),
            "inline; filename=cat.png"
        );
        assert_eq!(resp.bytes().await.unwrap(), image);

        // Several MiB (several multipart parts on S3) arrive intact.
        let big: Vec<u8> = (0..9 * 1024 * 1024 + 7).map(|i| (i % 253) as u8).collect();
        let uri = upload(&server, &alice, &big, "application/octet-stream", None).await;
        let resp = download(&server, Some(&alice), &uri).await;
        assert_eq!(header(&resp, "content-length"), big.len().to_string());
        assert_eq!(header(&resp, "content-disposition"), "attachment");
        assert!(
            resp.bytes().await.unwrap() == big,
            "{}: big upload",
            backend.name
        );

        // The legacy endpoint serves the same bytes without a token.
        let (_, media_id) = parse_mxc(&uri);
        let path = format!("/_matrix/media/v3/download/localhost/{media_id}");
        let resp = send(&server, None, Method::GET, &path, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap().len(), big.len());

        // And media survives a restart.
        let mut server = server;
        server.restart().await;
        let resp = download(&server, Some(&alice), &uri).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_upload() {
    for backend in backends() {
        let server = start(&backend, "").await;
        let alice = Client::register(&server, "alice").await;
        let bob = Client::register(&server, "bob").await;

        let resp = send(
            &server,
            Some(&alice),
            Method::POST,
            "/_matrix/media/v1/create",
            None,
        )
        .await;
        let (status, body) = json_of(resp).await;
        assert_eq!(status, 200, "create: {body}");
        let uri = body["content_uri"].as_str().unwrap().to_owned();
        assert!(body["unused_expires_at"].as_i64().unwrap() > 0, "{body}");
        let (_, media_id) = parse_mxc(&uri);

        // Not there yet: a download that does not wait gets 504.
        let path = format!("{MEDIA_V1}/download/localhost/{media_id}?timeout_ms=0");
        let resp = send(&server, Some(&alice), Method::GET, &path, None).await;
        assert_error(&json_of(resp).await, 504, "M_NOT_YET_UPLOADED");

        // A waiting download gets the content once it arrives.
        let waiting = {
            let path = format!("{MEDIA_V1}/download/localhost/{media_id}?timeout_ms=15000");
            let url = format!("{}{path}", server.base_url());
            let token = bob.access_token.clone().unwrap();
            tokio::spawn(async move { http().get(url).bearer_auth(token).send().await.unwrap() })
        };
        // No sleep to let it get there first: Bob's refused upload below
        // is a round trip of head start, and a download that arrived after
        // the content would get it all the same.
        let put_path = format!("/_matrix/media/v3/upload/localhost/{media_id}?filename=late.txt");
        let body = Some((b"late bytes".to_vec(), "text/plain"));
        let resp = send(&server, Some(&bob), Method::PUT, &put_path, body.clone()).await;
        assert_error(&json_of(resp).await, 403, "M_FORBIDDEN");
        let resp = send(&server, Some(&alice), Method::PUT, &put_path, body.clone()).await;
        let (status, resp_body) = json_of(resp).await;
        assert_eq!(status, 200, "{}: put: {resp_body}", backend.name);
        let resp = send(&server, Some(&alice), Method::PUT, &put_path, body).await;
        assert_error(&json_of(resp).await, 409, "M_CANNOT_OVERWRITE_MEDIA");

        let resp = waiting.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename=late.txt"
        );
        assert_eq!(resp.bytes().await.unwrap(), &b"late bytes"[..]);

        // An id nobody reserved cannot be uploaded to.
        let path = "/_matrix/media/v3/upload/localhost/NotReservedAtAll";
        let resp = send(
            &server,
            Some(&alice),
            Method::PUT,
            path,
            Some((b"x".to_vec(), "text/plain")),
        )
        .await;
        assert_error(&json_of(resp).await, 404, "M_NOT_FOUND");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_message_is_fetched_by_another_member() {
    for backend in backends() {
        let server = start(&backend, "").await;
        let (alice, bob, room) = room_of_two(&server).await;
        let since = next_batch(&bob.sync(None, 0, None).await);

        let image = png(40, 30);
        let uri = upload(&server, &alice, &image, "image/png", Some("photo.png")).await;
        let content = json!({
            "msgtype": "m.image",
            "body": "photo.png",
            "url": uri,
            "info": {"mimetype": "image/png", "size": image.len(), "w": 40, "h": 30},
        });
        let path = format!("{V3}/rooms/{}/send/m.room.message/img1", enc(&room));
        let (status, body) = alice.put(&path, &content).await;
        assert_eq!(status, 200, "send: {body}");

        let resp = bob
            .sync_until(&since, Duration::from_secs(10), None, |r| {
                r["rooms"]["join"][&room]["timeline"]["events"]
                    .as_array()
                    .is_some_and(|events| {
                        events.iter().any(|e| e["content"]["msgtype"] == "m.image")
                    })
            })
            .await;
        let event = resp["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["content"]["msgtype"] == "m.image")
            .unwrap()
            .clone();
        let url = event["content"]["url"].as_str().unwrap();
        assert_eq!(url, uri);
        let resp = download(&server, Some(&bob), url).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", backend.name);
        assert_eq!(resp.bytes().await.unwrap(), image);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_scale_and_crop() {
    for backend in backends() {
        let server = start(&backend, "").await;
        let alice = Client::register(&server, "alice").await;
        let uri = upload(&server, &alice, &png(64, 48), "image/png", None).await;

        let (content_type, scaled) =
            thumbnail_image(&server, &alice, &uri, "width=32&height=32&method=scale").await;
        assert_eq!(content_type, "image/png");
        assert_eq!(
            (scaled.width(), scaled.height()),
            (32, 24),
            "{}",
            backend.name
        );
        let (_, cropped) =
            thumbnail_image(&server, &alice, &uri, "width=32&height=32&method=crop").await;
        assert_eq!((cropped.width(), cropped.height()), (32, 32));
        // Served again from the cache, identical.
        let (_, again) =
            thumbnail_image(&server, &alice, &uri, "width=32&height=32&method=crop").await;
        assert_eq!(again.to_rgba8(), cropped.to_rgba8());
        // Never upscaled.
        let (_, big) = thumbnail_image(&server, &alice, &uri, "width=640&height=480").await;
        assert_eq!((big.width(), big.height()), (64, 48));

        let photo = upload(&server, &alice, &jpeg(100, 50), "image/jpeg", None).await;
        let (content_type, scaled) =
            thumbnail_image(&server, &alice, &photo, "width=32&height=32").await;
        assert_eq!(content_type, "image/jpeg");
        assert_eq!((scaled.width(), scaled.height()), (32, 16));

        // Animated only when asked for.
        let gif = upload(&server, &alice, &animated_gif(64, 48), "image/gif", None).await;
        let resp = thumbnail(&server, &alice, &gif, "width=32&height=32&animated=true").await;
        assert_eq!(header(&resp, "content-type"), "image/gif");
        let bytes = resp.bytes().await.unwrap();
        let frames = {
            use image::AnimationDecoder;
            let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes.to_vec())).unwrap();
            decoder.into_frames().collect_frames().unwrap()
        };
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].buffer().dimensions(), (32, 24));
        let (content_type, still) =
            thumbnail_image(&server, &alice, &gif, "width=32&height=32").await;
        assert_eq!(content_type, "image/png");
        assert_eq!((still.width(), still.height()), (32, 24));

        // What cannot be thumbnailed, and bad parameters.
        let text = upload(&server, &alice, b"just text", "text/plain", None).await;
        let resp = thumbnail(&server, &alice, &text, "width=32&height=32").await;
        assert_error(&json_of(resp).await, 404, "M_NOT_FOUND");
        let resp = thumbnail(&server, &alice, &uri, "width=32&height=32&method=stretch").await;
        assert_error(&json_of(resp).await, 400, "M_INVALID_PARAM");
        let resp = thumbnail(&server, &alice, &uri, "height=32").await;
        assert_error(&json_of(resp).await, 400, "M_INVALID_PARAM");
        let resp = thumbnail(&server, &alice, &uri, "width=0&height=32").await;
        assert_error(&json_of(resp).await, 400, "M_INVALID_PARAM");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_carry_safety_headers() {
    for backend in backends() {
        let server = start(&backend, "").await;
        let alice = Client::register(&server, "alice").await;
        let page = b"<html><script>alert(document.cookie)</script></html>";
        let uri = upload(&server, &alice, page, "text/html", Some("evil\".html")).await;
        let resp = download(&server, Some(&alice), &uri).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", backend.name);
        assert_eq!(header(&resp, "content-type"), "text/html");
        assert_eq!(
            header(&resp, CONTENT_DISPOSITION.as_str()),
            "attachment; filename*=utf-8''evil%22.html"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        assert_eq!(header(&resp, "content-security-policy"), CSP);
        // The legacy, unauthenticated endpoint too.
        let (_, media_id) = parse_mxc(&uri);
        let resp = send(
            &server,
            None,
            Method::GET,
            &format!("/_matrix/media/v3/download/localhost/{media_id}"),
            None,
        )
        .await;
        assert_eq!(
            header(&resp, "content-disposition"),
            "attachment; filename*=utf-8''evil%22.html"
        );
        assert_eq!(header(&resp, "content-security-policy"), CSP);
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");

        // Thumbnails carry them too.
        let image = upload(&server, &alice, &png(64, 48), "image/png", None).await;
        let resp = thumbnail(&server, &alice, &image, "width=32&height=32").await;
        assert_eq!(header(&resp, "content-security-policy"), CSP);
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_limit_are_refused() {
    for backend in backends() {
        let server = start(&backend, "max_upload_bytes = 65536").await;
        let alice = Client::register(&server, "alice").await;

        let resp = send(
            &server,
            Some(&alice),
            Method::GET,
            &format!("{MEDIA_V1}/config"),
            None,
        )
        .await;
        let (status, body) = json_of(resp).await;
        assert_eq!((status, body["m.upload.size"].as_u64()), (200, Some(65536)));

        // Refused on Content-Length, before the body is read. The server
        // answers and closes without reading the rest, so a client still
        // writing may see the connection drop before the answer: keep the
        // bodies small enough for the socket buffers to take whole.
        let resp = send(
            &server,
            Some(&alice),
            Method::POST,
            "/_matrix/media/v3/upload",
            Some((vec![7u8; 70_000], "application/octet-stream")),
        )
        .await;
        assert_error(&json_of(resp).await, 413, "M_TOO_LARGE");

        // Refused while streaming when no length is declared (chunked); the
        // limit trips on the last chunk. (The router test covers this case
        // deterministically, without a socket.)
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..9).map(|_| Ok(vec![1u8; 8192])).collect();
        let sent = http()
            .post(format!("{}/_matrix/media/v3/upload", server.base_url()))
            .bearer_auth(alice.access_token.as_deref().unwrap())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await;
        match sent {
            Ok(resp) => assert_error(&json_of(resp).await, 413, "M_TOO_LARGE"),
            // The close raced the end of the body: refused all the same.
            Err(e) => assert!(e.is_request(), "{}: {e}", backend.name),
        }

        // Exactly the limit is fine; far past the API's own 1 MiB body limit
        // is only a matter of `max_upload_bytes`.
        upload(
            &server,
            &alice,
            &vec![3u8; 65536],
            "application/octet-stream",
            None,
        )
        .await;
        drop(server);
        let roomy = start(&backend, "max_upload_bytes = 3000000").await;
        let bob = Client::register(&roomy, "bob").await;
        upload(
            &roomy,
            &bob,
            &vec![5u8; 2_000_000],
            "application/octet-stream",
            None,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_media() {
    for backend in backends() {
        let server = start(&backend, "").await;
        let alice = Client::register(&server, "alice").await;
        let cases = [
            ("localhost/NoSuchMediaIdHere", 404, "M_NOT_FOUND"),
            ("other.example/NoSuchMediaIdHere", 404, "M_NOT_FOUND"),
            ("localhost/bad.id", 400, "M_INVALID_PARAM"),
            ("localhost/..%2F..%2Ftern.db", 400, "M_INVALID_PARAM"),
        ];
        for (target, status, code) in cases {
            for prefix in [
                format!("{MEDIA_V1}/download"),
                "/_matrix/media/v3/download".to_owned(),
            ] {
                let path = format!("{prefix}/{target}");
                let resp = send(&server, Some(&alice), Method::GET, &path, None).await;
                let got = json_of(resp).await;
                assert_error(&got, status, code);
            }
            let path = format!("{MEDIA_V1}/thumbnail/{target}?width=32&height=32");
            let resp = send(&server, Some(&alice), Method::GET, &path, None).await;
            assert_error(&json_of(resp).await, status, code);
        }
        // A bad Content-Type is refused, not stored.
        let resp = send(
            &server,
            Some(&alice),
            Method::POST,
            "/_matrix/media/v3/upload",
            Some((b"x".to_vec(), "not a type")),
        )
        .await;
        assert_error(&json_of(resp).await, 400, "M_INVALID_PARAM");
        let _ = backend.name;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_endpoints_need_a_token() {
    let backend = &backends()[0];
    let server = start(backend, "").await;
    let alice = Client::register(&server, "alice").await;
    let uri = upload(&server, &alice, &png(8, 8), "image/png", None).await;
    let (_, media_id) = parse_mxc(&uri);
    let stranger = alice.with_token(Some("not-a-real-token"));
    let gets = [
        format!("{MEDIA_V1}/download/localhost/{media_id}"),
        format!("{MEDIA_V1}/download/localhost/{media_id}/x.png"),
        format!("{MEDIA_V1}/thumbnail/localhost/{media_id}?width=32&height=32"),
        format!("{MEDIA_V1}/config"),
        "/_matrix/media/v3/config".to_owned(),
    ];
    for path in &gets {
        let resp = send(&server, None, Method::GET, path, None).await;
        assert_error(&json_of(resp).await, 401, "M_MISSING_TOKEN");
        let resp = send(&server, Some(&stranger), Method::GET, path, None).await;
        assert_error(&json_of(resp).await, 401, "M_UNKNOWN_TOKEN");
    }
    for (method, path) in [
        (Method::POST, "/_matrix/media/v3/upload".to_owned()),
        (Method::POST, "/_matrix/media/v1/create".to_owned()),
        (
            Method::PUT,
            format!("/_matrix/media/v3/upload/localhost/{media_id}"),
        ),
    ] {
        let resp = send(
            &server,
            None,
            method,
            &path,
            Some((b"x".to_vec(), "text/plain")),
        )
        .await;
        assert_error(&json_of(resp).await, 401, "M_MISSING_TOKEN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoints_can_be_switched_off() {
    let backend = &backends()[0];
    let server = start(backend, "legacy_endpoints = false").await;
    let alice = Client::register(&server, "alice").await;
    let uri = upload(&server, &alice, &png(8, 8), "image/png", None).await;
    let (_, media_id) = parse_mxc(&uri);
    for path in [
        format!("/_matrix/media/v3/download/localhost/{media_id}"),
        format!("/_matrix/media/v3/download/localhost/{media_id}/a.png"),
        format!("/_matrix/media/v3/thumbnail/localhost/{media_id}?width=32&height=32"),
    ] {
        let resp = send(&server, Some(&alice), Method::GET, &path, None).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let resp = download(&server, Some(&alice), &uri).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// With `presign_downloads`, an S3-backed server may redirect a download to
/// the bucket, with the same headers set by the signed URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_downloads_can_redirect_to_presigned_urls() {
    let backend = backends()
        .into_iter()
        .find(|b| b.name == "s3")
        .expect("an S3 backend");
    let s3_toml = backend.s3_toml.as_deref().unwrap().to_owned() + "presign_downloads = true\n";
    let backend = Backend {
        name: "s3",
        s3_toml: Some(s3_toml),
    };
    let server = start(&backend, "").await;
    let alice = Client::register(&server, "alice").await;
    let uri = upload(
        &server,
        &alice,
        b"<b>hi</b>",
        "text/html",
        Some("page.html"),
    )
    .await;
    let (_, media_id) = parse_mxc(&uri);

    // Without allow_redirect the bytes come through the server.
    let resp = download(&server, Some(&alice), &uri).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let path = format!("{MEDIA_V1}/download/localhost/{media_id}?allow_redirect=true");
    let resp = send(&server, Some(&alice), Method::GET, &path, None).await;
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = header(&resp, "location").to_owned();
    let fetched = http().get(&location).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK, "{location}");
    assert_eq!(
        header(&fetched, "content-disposition"),
        "attachment; filename=page.html"
    );
    assert_eq!(fetched.bytes().await.unwrap(), &b"<b>hi</b>"[..]);
}

/// A server killed mid-upload leaves no part of it behind: the bytes were in
/// a temporary file that start-up clears, and no content object appeared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_upload_leaves_nothing_visible() {
    let mut server = start(&backends()[0], "").await;
    let alice = Client::register(&server, "alice").await;
    let media = server.data_dir().join("media");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let url = format!("{}/_matrix/media/v3/upload", server.base_url());
    let token = alice.access_token.clone().unwrap();
    let pending = tokio::spawn(async move {
        http()
            .post(url)
            .bearer_auth(token)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
    });
    tx.send(Ok(vec![1u8; 256 * 1024])).await.unwrap();
    let temp_dir = media.join("tmp");
    eventually("a temporary file for the upload", async || {
        std::fs::read_dir(&temp_dir).unwrap().count() > 0
    })
    .await;
    server.kill_hard();
    assert!(
        pending.await.unwrap().is_err(),
        "the upload cannot have succeeded"
    );
    drop(tx);

    server.restart().await;
    assert_eq!(std::fs::read_dir(&temp_dir).unwrap().count(), 0);
    let content = media.join("objects/content");
    let objects = std::fs::read_dir(&content).map(|d| d.count()).unwrap_or(0);
    assert_eq!(objects, 0, "a partial upload became visible");
    // The server still takes uploads.
    let alice = Client::login(&server, "alice", tern_tests::PASSWORD).await;
    upload(&server, &alice, b"after the crash", "text/plain", None).await;
}
