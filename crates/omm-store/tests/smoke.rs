use omm_store::*;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread")]
async fn smoke_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("x/omm.db").to_str().unwrap())
        .await
        .unwrap();
    let b = s
        .create_bank(&NewBank {
            name: "A".into(),
            enabled_ratio: 1.0,
        })
        .await
        .unwrap();
    let mut sig = BTreeMap::new();
    sig.insert("pdq".to_string(), "ab".repeat(32));
    let c = s
        .create_content("A", &NewContent::with_signals(sig))
        .await
        .unwrap();
    assert_eq!(c.bank.id, b.id);
    let ch = s.changes_since(0, 100).await.unwrap();
    println!("{ch:?}");
    assert_eq!(ch.len(), 2);
}
