//! TLS to PostgreSQL against the test server (OMM_TEST_DATABASE_URL): `sslmode` decides whether
//! the pool's connections are encrypted, and the `verify-` modes check the certificate.
//! Skipped when the server does not offer TLS, and the certificate checks also when its
//! certificate file is not readable here (a remote server).

use omm_store::{NewBank, PostgresOptions, Store, StoreError};

fn bank() -> NewBank {
    NewBank {
        name: "TLS_BANK".into(),
        enabled_ratio: 1.0,
    }
}

struct Admin {
    client: tokio_postgres::Client,
    url: String,
}

async fn admin() -> Option<Admin> {
    let Ok(url) = std::env::var("OMM_TEST_DATABASE_URL") else {
        println!("skipped: OMM_TEST_DATABASE_URL not set");
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        println!("skipped: the test server does not offer TLS (ssl = {ssl})");
        return None;
    }
    Some(Admin { client, url })
}

impl Admin {
    fn with_params(&self, params: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{params}", self.url)
    }

    /// How many of the connections named `app` are encrypted, and how many there are.
    async fn encrypted(&self, app: &str) -> (i64, i64) {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// The server certificate's file, if this machine can read it.
    async fn server_cert(&self) -> Option<String> {
        let path: String = self
            .client
            .query_one("SHOW ssl_cert_file", &[])
            .await
            .ok()?
            .get(0);
        std::fs::metadata(&path).ok().map(|_| path)
    }

    async fn drop_schema(&self, schema: &str) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

async fn open(url: String) -> (Result<Store, StoreError>, String) {
    let schema = format!("omm_test_{:016x}", rand::random::<u64>());
    let mut options = PostgresOptions::new(url);
    options.schema = Some(schema.clone());
    options.max_connections = 2;
    (Store::open_postgres(options).await, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_decides_whether_connections_are_encrypted() {
    let Some(admin) = admin().await else { return };
    for (mode, want_tls) in [("require", true), ("prefer", true), ("disable", false)] {
        let app = format!("omm_tls_{mode}_{:08x}", rand::random::<u32>());
        let (store, schema) =
            open(admin.with_params(&format!("sslmode={mode}&application_name={app}"))).await;
        let store = store.unwrap();
        store.create_bank(&bank()).await.unwrap();
        assert_eq!(store.list_banks().await.unwrap().len(), 1);
        let (tls, all) = admin.encrypted(&app).await;
        assert!(all > 0, "{mode}: no pooled connection seen");
        assert_eq!(tls == all, want_tls, "{mode}: {tls} of {all} encrypted");
        drop(store);
        admin.drop_schema(&schema).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_check_the_certificate() {
    let Some(admin) = admin().await else { return };
    let Some(cert) = admin.server_cert().await else {
        println!("skipped: the server's certificate file is not readable here");
        return;
    };
    let cert = cert.replace('/', "%2F");

    // A root set that does not hold the server's certificate: refused, whatever the mode.
    for mode in ["verify-ca", "verify-full"] {
        let (store, schema) =
            open(admin.with_params(&format!("sslmode={mode}&sslrootcert=system"))).await;
        assert!(
            store.is_err(),
            "{mode} with the Mozilla roots accepted the server"
        );
        admin.drop_schema(&schema).await;
    }

    // Trusting the server's own certificate: the chain is good.
    let (store, schema) =
        open(admin.with_params(&format!("sslmode=verify-ca&sslrootcert={cert}"))).await;
    let store = store.unwrap();
    store.create_bank(&bank()).await.unwrap();
    drop(store);
    admin.drop_schema(&schema).await;

    // verify-full also checks the name: right only if the URL names a host in the certificate.
    let name_ok = {
        let (store, schema) =
            open(admin.with_params(&format!("sslmode=verify-full&sslrootcert={cert}"))).await;
        admin.drop_schema(&schema).await;
        store.is_ok()
    };
    let by_ip = admin.url.contains("://postgres@127.0.0.1") || admin.url.contains("@127.0.0.1:");
    if by_ip {
        // Debian's default certificate is issued to "localhost", never to 127.0.0.1.
        assert!(
            !name_ok,
            "verify-full accepted a certificate not issued to 127.0.0.1"
        );
    } else {
        println!("name check not asserted: the test URL does not use 127.0.0.1 ({name_ok})");
    }
}
