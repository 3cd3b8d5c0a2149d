//! No request with bad input gets a 5xx or kills the server.

mod common;

use common::{checkerboard, TestServer};
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn bad_inputs_never_give_5xx() {
    let t = TestServer::start(|c| c.max_content_length = 256 * 1024).await;
    // Something to point at.
    t.client
        .post(t.url("/c/banks"))
        .json(&json!({"name": "B"}))
        .send()
        .await
        .unwrap();
    let paths = [
        "/h/hash",
        "/m/raw_lookup",
        "/m/lookup",
        "/m/index/status",
        "/m/compare",
        "/c/banks",
        "/c/bank/B",
        "/c/bank/nope",
        "/c/bank/B/content",
        "/c/bank/B/signal",
        "/c/bank/B/content/1",
        "/c/bank/B/content/-1",
        "/c/bank/B/content/99999999999999999999",
        "/c/signal_type",
        "/c/signal_type/pdq",
        "/c/signal_type/index",
        "/c/content_type",
        "/c/exchanges",
        "/c/exchanges/apis",
        "/c/exchanges/api/sample",
        "/c/exchanges/api/fb_threatexchange",
        "/c/exchanges/api/x/schema",
        "/c/exchange/B",
        "/c/exchange/B/status",
        "/dev/setup_sample_example",
        "/status",
        "/site-map",
        "/%ff%fe",
    ];
    let queries = [
        "",
        "?signal=zz&signal_type=pdq",
        "?signal=&signal_type=",
        "?signal_type=pdq&signal=ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff&include_distance=2",
        "?url=http://[::1]:1/&content_type=photo",
        "?url=gopher://x&types=,,,",
        "?url=http://example.invalid/&content_type=%00",
        "?signal_type=video_md5&signal=%FF%FE&banks=,,,&seed=%00&bypass_coinflip=maybe",
        "?include_signals=true&include_metadata=1",
    ];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"".to_vec()),
        ("application/json", b"{".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", b"null".to_vec()),
        ("application/json", b"123".to_vec()),
        ("application/json", br#"{"name": 5, "enabled_ratio": "x", "enabled": "y"}"#.to_vec()),
        ("application/json", br#"{"pdq": ["a", "b"], "video_md5": [1, 2], "note": {}}"#.to_vec()),
        ("application/json", br#"{"disable_until_ts": 1e300, "note": []}"#.to_vec()),
        ("application/json", br#"{"disable_until_ts": "NaN"}"#.to_vec()),
        ("application/json", br#"{"bank": "X", "api": "fb_threatexchange", "api_json": {"privacy_group": "abc"}}"#.to_vec()),
        ("application/json", br#"{"credential_json": {"api_token": 5}}"#.to_vec()),
        ("application/json", br#"{"enabled_ratio": 1e400}"#.to_vec()),
        ("application/json", vec![0xff, 0xfe, 0x00]),
        ("text/plain", b"hello".to_vec()),
        ("multipart/form-data", b"garbage".to_vec()),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"photo\"\r\n\r\n\xff\xd8\xff\r\n--x--\r\n".to_vec()),
        ("application/json", vec![b' '; 300 * 1024]),
    ];
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
    let mut checked = 0;
    for path in paths {
        for query in queries {
            for method in &methods {
                let body_choices: &[(&str, Vec<u8>)] =
                    if *method == Method::GET || *method == Method::DELETE {
                        &bodies[..1]
                    } else {
                        &bodies
                    };
                for (ct, body) in body_choices {
                    // Never delete the bank the other requests rely on.
                    if *method == Method::DELETE && path == "/c/bank/B" {
                        continue;
                    }
                    let resp = t
                        .client
                        .request(method.clone(), t.url(&format!("{path}{query}")))
                        .header("content-type", *ct)
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{method} {path}{query}: {e}"));
                    let status = resp.status();
                    let text = resp.text().await.unwrap();
                    assert!(
                        !status.is_server_error(),
                        "{method} {path}{query} ({ct}): {status} {text}"
                    );
                    checked += 1;
                }
            }
        }
    }
    // Corrupt and truncated images.
    let mut image = checkerboard(8);
    image.truncate(image.len() / 2);
    for bytes in [
        image,
        b"\xff\xd8\xff\xe0".to_vec(),
        b"BM".to_vec(),
        vec![0u8; 10],
    ] {
        for path in ["/h/hash", "/m/lookup", "/c/bank/B/content"] {
            let form = Form::new().part("photo", Part::bytes(bytes.clone()).file_name("x.jpg"));
            let resp = t
                .client
                .post(t.url(path))
                .multipart(form)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
    // Still alive.
    assert_eq!(t.get("/status/live").await.0, 200);
}
