//! `sample`: a fixed set of example signals (the same examples pytx ships for each signal type),
//! for trying omm out without any sharing program.
//!
//! Record id: `"<signal_type> <value>"`. Metadata: `{"source": "sample"}`. The checkpoint records
//! the version of the example set, so a second fetch yields nothing until the set changes; each
//! fetch of a new set is a full listing (examples dropped from the set are deleted).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{parse_typed_config, BatchStream, Exchange, ExchangeApi, ExchangeSetup};
use crate::error::ExchangeError;
use crate::model::{new_listing_id, BatchBuilder, Checkpoint, ListingProgress, Record, Signal};
use crate::schema::ObjectSchema;
use crate::signal_types::names;

/// API name.
pub const NAME: &str = "sample";

/// Version of the example set below; bump when it changes.
const SAMPLE_SET_VERSION: &str = "pytx-1.2.16";

/// PDQ examples: 12 from `pdq/data/bridge-mods`, 2 from `misc-images`, 2 GitHub logos.
const PDQ_EXAMPLES: [&str; 16] = [
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "f8f8f0cee0f4a84f06370a2a038f63f0b36e26d596621e1d33e6b39c4e9c9b22",
    "f8f8f0cee0f4a84f0637022a038f67f0b36e26d596621e1d33e6b39c4e9c9b22",
    "f8f8f0cee0f4a84f06370a2a068f67f0b36e26d596621e1d33e6339c4e9c9b22",
    "f8f8f0cee0f4a84f06370a22038f67f0b36e2ed596221e1d33e6b39c4e9c9b22",
    "f8f8f0cee0f4a84f0e370a22038f67f0b36e2ed596221e1d33e6b39c4a9c9b22",
    "d8f8f0cec0f4a84f8e370a22038f67f0b36a2ed597231e1d72e6b39c4a9c9b22",
    "f8f8f0cee0f4a84f06370a22038f67f0b36e2ed596621e1d33e6339c4e9c9b22",
    "d0f8f1ccc0f4a84d0a370a3a228f67f0b36e2ed5b6623e1d33e6339c4e9c9b22",
    "d8f8f1eec0f4a84f0e37022a078f63f0b36e2ed596621e1d33e6239c4e9c9b22",
    "d8f8f0cec4f4a84f0637022a078f67f0b36e2ee5b6621e1d33e6239c4e9c9b22",
    "d8f8f0cec0f4a84f0637022a278f67f0b36e2ed596621e1d33e6339c4e9c9b22",
    "e64cc9d91c623882f8d1f1d9a398e78c9f199b3bd83924f2b7e11e0bf861b064",
    "6227401f601ff4ccafcc9fad4b0d95d371a2eb7265a3285234d228ca94deeb2d",
    "c186f9619659658c4b6916daf934496985f4259c72c39676ab9edb631c3c349c",
    "62c9789627838f69f23cf98c29e37836d61c87c31c59587c4b49a783f496725c",
];

/// Video MD5 examples (the second is the MD5 of the empty file).
const VIDEO_MD5_EXAMPLES: [&str; 2] = [
    "cab08b36195edb1a1231d2d09fa450e0",
    "d41d8cd98f00b204e9800998ecf8427e",
];

/// Video SHA-256 examples (the empty file, and a synthetic one).
const VIDEO_SHA256_EXAMPLES: [&str; 2] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "ba7816bf8f01cfe414134e77ca982da31a7b0e4a9e5a7a3a2a2a2a2a2a2a2a2a",
];

const URL_EXAMPLES: [&str; 1] =
    ["https://developers.facebook.com/docs/threat-exchange/reference/apis/"];

const URL_MD5_EXAMPLES: [&str; 1] = ["95c3a3934d38b06959d4f6d5bfe48a79"];

const RAW_TEXT_EXAMPLES: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog",
    "We the People of the United States, in Order to form a more perfect Union, establish \
     Justice, insure domestic Tranquility, provide for the common defence, promote the general \
     Welfare, and secure the Blessings of Liberty to ourselves and our Posterity, do ordain and \
     establish this Constitution for the United States of America.",
    "bball now?",
];

/// Every example signal of the sample exchange, in a stable order.
pub fn sample_signals() -> Vec<Signal> {
    let sets: [(&str, &[&str]); 6] = [
        (names::PDQ, &PDQ_EXAMPLES),
        (names::VIDEO_MD5, &VIDEO_MD5_EXAMPLES),
        (names::VIDEO_SHA256, &VIDEO_SHA256_EXAMPLES),
        (names::URL, &URL_EXAMPLES),
        (names::URL_MD5, &URL_MD5_EXAMPLES),
        (names::RAW_TEXT, &RAW_TEXT_EXAMPLES),
    ];
    sets.iter()
        .flat_map(|(t, values)| values.iter().map(move |v| Signal::new(*t, *v)))
        .collect()
}

/// Config of `sample`: no fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {}

#[derive(Debug, Serialize, Deserialize)]
struct SampleState {
    set_version: String,
}

/// The `sample` exchange API.
#[derive(Debug, Clone, Copy)]
pub struct SampleApi;

impl ExchangeApi for SampleApi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema::default()
    }

    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        let _: SampleConfig = parse_typed_config(config)?;
        Ok(json!({}))
    }

    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let _: SampleConfig = parse_typed_config(&setup.config)?;
        Ok(Arc::new(SampleExchange))
    }
}

/// An opened `sample` exchange.
#[derive(Debug, Clone, Copy)]
pub struct SampleExchange;

impl Exchange for SampleExchange {
    fn api(&self) -> &'static str {
        NAME
    }

    fn fetch(&self, checkpoint: Option<Checkpoint>) -> BatchStream {
        let up_to_date = checkpoint
            .and_then(|cp| cp.state_for::<SampleState>(NAME))
            .is_some_and(|s| s.set_version == SAMPLE_SET_VERSION);
        Box::pin(async_stream::stream! {
            if up_to_date {
                return;
            }
            let mut batch = BatchBuilder::default();
            for signal in sample_signals() {
                let id = format!("{} {}", signal.signal_type, signal.value);
                batch.upsert(id, Record { signals: vec![signal], metadata: json!({"source": "sample"}) });
            }
            let state = SampleState { set_version: SAMPLE_SET_VERSION.to_string() };
            let checkpoint = Checkpoint::new(NAME, None, None, &state);
            let listing = ListingProgress { listing_id: new_listing_id(), complete: true };
            yield Ok(batch.finish(checkpoint, Some(listing)));
        })
    }
}
