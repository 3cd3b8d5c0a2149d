//! Writes stored reviews back to the exchanges their content came from.
//!
//! The store keeps one delivery row per (review, exchange record) with its state: `pending`,
//! `delivered`, `failed` (with the message) or `unsupported`. [`ReviewWriter`] claims due
//! deliveries (a claim moves the next attempt into the future, so several processes on one
//! database do not deliver the same review twice, and a claim abandoned by a crash is retried
//! after the lease), calls [`Exchange::report_review`] and records the outcome. A failure that
//! may heal (network, 5xx, 429, rejected or missing credentials) is retried with exponential
//! backoff and jitter, for ever; one that cannot (the exchange rejects the review as such, a
//! 4xx, a record without the ids the exchange needs) is kept as `failed` without retry. An
//! exchange that does not accept reviews gives `unsupported`. Nothing is lost when an exchange
//! is down: the review and its delivery stay in the store until delivered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use omm_store::{DeliveryJob, DeliveryOutcome, ReviewOpinion, Store, StoreError};

use crate::api::api_by_name;
use crate::error::ExchangeError;
use crate::fetcher::{open_exchange, ApiLookup, RunError};
use crate::http::HttpSettings;
use crate::model::{now_unix, Review, Signal, Verdict};

/// Settings of the review writer.
#[derive(Debug, Clone)]
pub struct ReviewWriterSettings {
    /// HTTP behaviour of the exchange clients.
    pub http: HttpSettings,
    /// Pause between passes when nothing more is due.
    pub interval: Duration,
    /// Deliveries claimed per pass.
    pub batch_size: u32,
    /// How long a claim holds a delivery (longer than one attempt can take).
    pub claim_lease: Duration,
    /// Delay before the first retry; doubled after every failed attempt.
    pub initial_backoff: Duration,
    /// Longest delay between two attempts.
    pub max_backoff: Duration,
}

impl Default for ReviewWriterSettings {
    fn default() -> Self {
        ReviewWriterSettings {
            http: HttpSettings::default(),
            interval: Duration::from_secs(10),
            batch_size: 50,
            claim_lease: Duration::from_secs(600),
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePassReport {
    /// Deliveries attempted.
    pub attempted: u32,
    /// Accepted by their exchange.
    pub delivered: u32,
    /// Failed (retried later or not, see the delivery).
    pub failed: u32,
    /// The exchange does not take reviews.
    pub unsupported: u32,
}

/// Delivers pending and failed review write-backs.
#[derive(Clone)]
pub struct ReviewWriter {
    store: Store,
    settings: Arc<ReviewWriterSettings>,
    apis: ApiLookup,
}

impl ReviewWriter {
    /// A writer reading deliveries from `store`, with the built-in exchange APIs.
    pub fn new(store: Store, settings: ReviewWriterSettings) -> Self {
        ReviewWriter {
            store,
            settings: Arc::new(settings),
            apis: Arc::new(api_by_name),
        }
    }

    /// Replaces the exchange API lookup (extensions, tests).
    pub fn with_api_lookup(mut self, apis: ApiLookup) -> Self {
        self.apis = apis;
        self
    }

    /// Runs passes until `shutdown` completes: at once again after a full batch, else after
    /// `interval`.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let pause = tokio::select! {
                _ = &mut shutdown => return,
                result = self.run_pass() => match result {
                    Ok(report) if report.attempted >= self.settings.batch_size => Duration::ZERO,
                    Ok(_) => self.settings.interval,
                    Err(err) => {
                        tracing::error!(%err, "review write-back pass failed");
                        self.settings.interval
                    }
                },
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass: claims up to `batch_size` due deliveries and attempts each once.
    pub async fn run_pass(&self) -> Result<WritePassReport, StoreError> {
        let jobs = self
            .store
            .claim_review_deliveries(self.settings.batch_size, self.settings.claim_lease)
            .await?;
        let mut report = WritePassReport::default();
        for job in jobs {
            let outcome = self.deliver(&job).await;
            report.attempted += 1;
            match &outcome {
                DeliveryOutcome::Delivered => report.delivered += 1,
                DeliveryOutcome::Failed { message, retry_at } => {
                    report.failed += 1;
                    tracing::warn!(
                        delivery = job.delivery.id,
                        exchange = %job.delivery.exchange_name,
                        retry_at,
                        message,
                        "review write-back failed"
                    );
                }
                DeliveryOutcome::Unsupported { .. } => report.unsupported += 1,
            }
            match self
                .store
                .finish_review_delivery(job.delivery.id, &outcome)
                .await
            {
                Ok(()) => {}
                // The exchange (and with it the delivery) was deleted meanwhile.
                Err(StoreError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(report)
    }

    async fn deliver(&self, job: &DeliveryJob) -> DeliveryOutcome {
        let d = &job.delivery;
        let exchange = match open_exchange(
            &self.store,
            &self.apis,
            &self.settings.http,
            &d.exchange_api,
            &d.exchange_name,
            &job.exchange_config,
        )
        .await
        {
            Ok(exchange) => exchange,
            Err(RunError::Exchange(err)) => return self.classify(err, d.attempts),
            Err(RunError::Store(err)) => {
                return self.retry(format!("cannot open exchange: {err}"), d.attempts)
            }
            Err(RunError::Other(message)) => {
                return DeliveryOutcome::Failed {
                    message,
                    retry_at: None,
                }
            }
        };
        let review = Review {
            record_id: d.record_key.clone(),
            signal: Signal::new(&d.signal_type, &d.signal_value),
            metadata: d.record_metadata.clone(),
            verdict: match job.opinion {
                ReviewOpinion::TruePositive => Verdict::TruePositive,
                ReviewOpinion::FalsePositive => Verdict::FalsePositive,
            },
        };
        match exchange.report_review(review).await {
            Ok(()) => DeliveryOutcome::Delivered,
            Err(err) => self.classify(err, d.attempts),
        }
    }

    /// Maps an exchange error to a stored outcome: permanent or retried.
    fn classify(&self, err: ExchangeError, attempts: i64) -> DeliveryOutcome {
        let message = err.to_string();
        match err {
            ExchangeError::Unsupported { .. } => DeliveryOutcome::Unsupported { message },
            ExchangeError::InvalidReview(_)
            | ExchangeError::InvalidConfig(_)
            | ExchangeError::UnknownApi(_) => DeliveryOutcome::Failed {
                message,
                retry_at: None,
            },
            // The exchange refused this request as such: sending it again will not help.
            ExchangeError::Http { status, .. }
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                DeliveryOutcome::Failed {
                    message,
                    retry_at: None,
                }
            }
            _ => self.retry(message, attempts),
        }
    }

    fn retry(&self, message: String, attempts: i64) -> DeliveryOutcome {
        DeliveryOutcome::Failed {
            message,
            retry_at: Some(now_unix() + self.backoff_secs(attempts)),
        }
    }

    /// Delay after the `attempts + 1`-th failure, in whole seconds, with up to 20 % jitter.
    fn backoff_secs(&self, attempts: i64) -> i64 {
        let base = self.settings.initial_backoff.as_secs_f64();
        let doubled = base * 2f64.powi(attempts.clamp(0, 30) as i32);
        let capped = doubled.min(self.settings.max_backoff.as_secs_f64());
        let jitter = 1.0 + rand::random::<f64>() * 0.2;
        (capped * jitter).ceil() as i64
    }
}
