//! Exchange APIs (hash-sharing programs) for omm: typed configs and credentials, the wire clients
//! of ThreatExchange, NCMEC, StopNCII, Tech Against Terrorism and signal files, and the batch and
//! checkpoint model the fetcher applies to the store.
//!
//! Entry points: [`all_apis`] / [`api_by_name`] give the [`ExchangeApi`] of each API name; its
//! [`ExchangeApi::open`] gives an [`Exchange`], whose [`Exchange::fetch`] streams [`Batch`]es.
//!
//! Review write-back ([`Exchange::report_review`]) is accepted by `fb_threatexchange`
//! (descriptor reactions), `ncmec` (entry feedback) and `stop_ncii` (SubmitFeedback). `sample`,
//! `local_file`, `url_file` and `tat` do not accept review results.

mod api;
mod error;
pub mod exchanges;
pub mod fetcher;
mod http;
mod model;
pub mod review_writer;
mod schema;
mod signal_types;

pub use api::{
    all_apis, api_by_name, BatchStream, CredentialStatus, Credentials, Exchange, ExchangeApi,
    ExchangeSetup, Secret,
};
pub use error::ExchangeError;
pub use http::{validate_base_url, HttpSettings};
pub use model::{
    Batch, Checkpoint, ListingProgress, Record, RecordChange, Review, Signal, Verdict,
    CHECKPOINT_VERSION,
};
pub use schema::{FieldSchema, FieldType, ObjectSchema};
