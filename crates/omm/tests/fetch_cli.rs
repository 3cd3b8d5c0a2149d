//! `omm fetch` end to end: a SQLite database with two exchanges, one pass, summary lines.

use std::process::Command;

use omm_store::{ExchangeUpdate, NewExchange, Store};
use serde_json::json;

#[tokio::test]
async fn fetch_pass_reports_each_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("omm.db");
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!("pdq {}\nvideo_md5 {}\n", "ab".repeat(32), "cd".repeat(16)),
    )
    .unwrap();
    {
        let store = Store::open_sqlite(&db).await.unwrap();
        for (name, api, config) in [
            ("SAMPLE", "sample", json!({})),
            (
                "FILE",
                "local_file",
                json!({"filename": list.to_str().unwrap()}),
            ),
            ("OFF", "sample", json!({})),
            (
                "BROKEN",
                "local_file",
                json!({"filename": dir.path().join("missing.txt").to_str().unwrap()}),
            ),
        ] {
            store
                .create_exchange(&NewExchange {
                    name: name.into(),
                    api: api.into(),
                    enabled: true,
                    config,
                })
                .await
                .unwrap();
        }
        store
            .update_exchange(
                "OFF",
                &ExchangeUpdate {
                    enabled: Some(false),
                    config: None,
                },
            )
            .await
            .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_omm"))
        .args(["fetch", "--database", db.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a failed exchange makes the command fail: {stdout}"
    );
    assert!(stdout.contains("SAMPLE: up to date"), "{stdout}");
    assert!(
        stdout.contains("FILE: up to date (1 batches, +2 ~0 -0 records, 2 stored"),
        "{stdout}"
    );
    assert!(stdout.contains("OFF: disabled, skipped"), "{stdout}");
    assert!(stdout.contains("BROKEN: FAILED: cannot read"), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_omm"))
        .args([
            "fetch",
            "--database",
            db.to_str().unwrap(),
            "--exchange",
            "FILE",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FILE: up to date (0 batches"),
        "unchanged file: {stdout}"
    );
    let store = Store::open_sqlite(&db).await.unwrap();
    assert_eq!(store.fetch_status("FILE").await.unwrap().item_count, 2);
    assert!(store
        .fetch_status("BROKEN")
        .await
        .unwrap()
        .last_error
        .is_some());

    let out = Command::new(env!("CARGO_BIN_EXE_omm"))
        .args([
            "fetch",
            "--database",
            db.to_str().unwrap(),
            "--exchange",
            "NOPE",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
