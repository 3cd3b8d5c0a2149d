//! URL fetching against a local origin: limits, redirects and refusal of private targets.

mod common;

use std::time::Duration;

use common::{image_bytes, Origin};
use omm_server::fetch::{FetchError, FetchPolicy, UrlFetcher};

fn fetcher(allow_private: bool, max_bytes: u64) -> UrlFetcher {
    UrlFetcher::new(FetchPolicy {
        allow_private_targets: allow_private,
        max_bytes,
        timeout: Duration::from_secs(2),
        max_redirects: 3,
        ..FetchPolicy::default()
    })
    .unwrap()
}

#[tokio::test]
async fn fetches_when_private_targets_are_allowed() {
    let origin = Origin::start().await;
    let got = fetcher(true, 1 << 20)
        .fetch(&origin.url("/image.jpg"))
        .await
        .unwrap();
    assert_eq!(&got.bytes[..], &image_bytes()[..]);
    assert_eq!(got.content_type.as_deref(), Some("image/jpeg"));
}

#[tokio::test]
async fn refuses_loopback_by_default_for_literals_and_names() {
    let origin = Origin::start().await;
    let f = fetcher(false, 1 << 20);
    let err = f.fetch(&origin.url("/image.jpg")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::ForbiddenAddress { .. }),
        "{err:?}"
    );
    // A name that resolves to loopback is refused by the resolver, before connecting.
    let by_name = format!("http://localhost:{}/image.jpg", origin.addr.port());
    let err = f.fetch(&by_name).await.unwrap_err();
    assert!(
        matches!(err, FetchError::ForbiddenAddress { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn every_redirect_is_checked_again() {
    let origin = Origin::start().await;
    let f = fetcher(true, 1 << 20);
    // Allowed redirects are followed, absolute and relative.
    let got = f.fetch(&origin.url("/redirect")).await.unwrap();
    assert_eq!(&got.bytes[..], &image_bytes()[..]);
    assert_eq!(got.final_url.path(), "/image.jpg");
    let got = f.fetch(&origin.url("/redirect-relative")).await.unwrap();
    assert_eq!(&got.bytes[..], &image_bytes()[..]);
    assert_eq!(
        f.fetch(&origin.url("/redirect-loop")).await.unwrap_err(),
        FetchError::TooManyRedirects(3)
    );

    // With an allow-list, a redirect to a host outside it is refused even though the first
    // URL was fine.
    let listed = UrlFetcher::new(FetchPolicy {
        allow_private_targets: true,
        allowed_hostnames: vec!["127.0.0.1".into()],
        timeout: Duration::from_secs(2),
        ..FetchPolicy::default()
    })
    .unwrap();
    let err = listed
        .fetch(&origin.url("/redirect-metadata"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::HostNotAllowed(_)), "{err:?}");
}

#[tokio::test]
async fn redirect_to_link_local_is_refused_without_private_targets() {
    // The origin itself is loopback, so use a policy that allows exactly one thing: we test
    // the redirect check through `check_url`, which every hop goes through.
    let f = fetcher(false, 1 << 20);
    let err = f
        .check_url("http://169.254.169.254/latest/meta-data")
        .unwrap_err();
    assert!(matches!(err, FetchError::ForbiddenAddress { .. }));
}

#[tokio::test]
async fn size_limit_on_declared_length_and_while_streaming() {
    let origin = Origin::start().await;
    let f = fetcher(true, 1000);
    assert_eq!(
        f.fetch(&origin.url("/big")).await.unwrap_err(),
        FetchError::TooLarge
    );
    assert_eq!(
        f.fetch(&origin.url("/big-chunked")).await.unwrap_err(),
        FetchError::TooLarge
    );
    // Exactly at the limit is fine.
    let exact = fetcher(true, 100_000);
    assert_eq!(
        exact.fetch(&origin.url("/big")).await.unwrap().bytes.len(),
        100_000
    );
    assert_eq!(
        exact
            .fetch(&origin.url("/big-chunked"))
            .await
            .unwrap()
            .bytes
            .len(),
        100_000
    );
}

#[tokio::test]
async fn http_errors_and_timeouts() {
    let origin = Origin::start().await;
    let f = fetcher(true, 1 << 20);
    match f.fetch(&origin.url("/missing")).await.unwrap_err() {
        FetchError::Status { status, .. } => assert_eq!(status, 404),
        other => panic!("{other:?}"),
    }
    let quick = UrlFetcher::new(FetchPolicy {
        allow_private_targets: true,
        timeout: Duration::from_millis(300),
        ..FetchPolicy::default()
    })
    .unwrap();
    assert_eq!(
        quick.fetch(&origin.url("/slow")).await.unwrap_err(),
        FetchError::Timeout
    );
    // Nothing listens on port 1.
    let err = f.fetch("http://127.0.0.1:1/x").await.unwrap_err();
    assert!(matches!(err, FetchError::Transport(_)), "{err:?}");
}
