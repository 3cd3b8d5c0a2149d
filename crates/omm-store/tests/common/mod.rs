//! Test harness: runs one behaviour case against SQLite (always) and PostgreSQL (when
//! OMM_TEST_DATABASE_URL is set), each Postgres case in its own throw-away schema.

#![allow(dead_code)]

use omm_store::{PostgresOptions, Store};

/// A store plus what is needed to open it again and to clean up.
pub struct Harness {
    pub store: Store,
    pub target: Target,
}

pub enum Target {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Harness {
    /// Opens another handle on the same database (as a second process would).
    pub async fn reopen(&self) -> Store {
        match &self.target {
            Target::Sqlite(dir) => Store::open_sqlite(dir.path().join("omm.db")).await.unwrap(),
            Target::Postgres { url, schema } => {
                Store::open_postgres(pg_options(url, schema)).await.unwrap()
            }
        }
    }

    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match &self.target {
            Target::Sqlite(dir) => Some(dir.path().join("omm.db")),
            Target::Postgres { .. } => None,
        }
    }
}

fn pg_options(url: &str, schema: &str) -> PostgresOptions {
    let mut o = PostgresOptions::new(url);
    o.schema = Some(schema.to_string());
    o.max_connections = 8;
    o
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path().join("omm.db")).await.unwrap();
    Harness {
        store,
        target: Target::Sqlite(dir),
    }
}

pub async fn postgres() -> Option<Harness> {
    let Ok(url) = std::env::var("OMM_TEST_DATABASE_URL") else {
        println!("skipped: OMM_TEST_DATABASE_URL not set");
        return None;
    };
    let schema = format!("omm_test_{:016x}", rand::random::<u64>());
    let store = Store::open_postgres(pg_options(&url, &schema))
        .await
        .unwrap();
    Some(Harness {
        store,
        target: Target::Postgres { url, schema },
    })
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Target::Postgres { url, schema } = &self.target {
            let (url, schema) = (url.clone(), schema.clone());
            // Drop the schema from a separate runtime so that it also happens after a panic.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Declares `mod $name { sqlite(), postgres() }` tests calling `$name(&Harness)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let h = $crate::common::sqlite().await;
                super::$name(&h).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(h) = $crate::common::postgres().await else { return };
                super::$name(&h).await;
            }
        }
    )*};
}
