//! [`ChangeSource`] for `omm-store`'s [`Store`].

use omm_store::{ChangeEvent, ChangeSubscription, StateSnapshot, Store};

use crate::source::{ChangeSource, InitialState, SeqEvent, SignalRecord, SourceError, Wakeup};
use crate::state::Event;

fn err(e: omm_store::StoreError) -> SourceError {
    SourceError(e.to_string())
}

/// Converts a store change event.
pub fn event_from_store(e: ChangeEvent) -> Event {
    match e {
        ChangeEvent::SignalUpserted {
            content_id,
            bank_id,
            signal_type,
            value,
        } => Event::SignalUpserted {
            content_id,
            bank_id,
            signal_type,
            value,
        },
        ChangeEvent::SignalDeleted {
            content_id,
            bank_id,
            signal_type,
            value,
        } => Event::SignalDeleted {
            content_id,
            bank_id,
            signal_type,
            value,
        },
        ChangeEvent::ContentUpserted {
            content_id,
            bank_id,
            disable_until_ts,
        } => Event::ContentUpserted {
            content_id,
            bank_id,
            disable_until_ts,
        },
        ChangeEvent::ContentDeleted { content_id, .. } => Event::ContentDeleted { content_id },
        ChangeEvent::BankUpserted {
            bank_id,
            name,
            enabled_ratio,
            exchange_id,
        } => Event::BankUpserted {
            bank_id,
            name,
            enabled_ratio,
            exchange_id,
        },
        ChangeEvent::BankDeleted { bank_id } => Event::BankDeleted { bank_id },
        ChangeEvent::ExchangeUpserted {
            exchange_id,
            name,
            enabled,
        } => Event::ExchangeUpserted {
            exchange_id,
            name,
            enabled,
        },
        ChangeEvent::ExchangeDeleted { exchange_id } => Event::ExchangeDeleted { exchange_id },
        ChangeEvent::SignalTypeUpserted {
            signal_type,
            enabled_ratio,
        } => Event::SignalTypeUpserted {
            signal_type,
            enabled_ratio,
        },
        ChangeEvent::SignalTypeDeleted { signal_type } => Event::SignalTypeDeleted { signal_type },
    }
}

/// The store's start-up snapshot as an [`InitialState`].
pub struct StoreInitial(StateSnapshot);

impl InitialState for StoreInitial {
    fn seq(&self) -> i64 {
        self.0.seq
    }

    fn take_state_events(&mut self) -> Vec<Event> {
        let s = &mut self.0;
        let mut out = Vec::new();
        for x in std::mem::take(&mut s.exchanges) {
            out.push(Event::ExchangeUpserted {
                exchange_id: x.exchange_id,
                name: x.name,
                enabled: x.enabled,
            });
        }
        for b in std::mem::take(&mut s.banks) {
            out.push(Event::BankUpserted {
                bank_id: b.id,
                name: b.name,
                enabled_ratio: b.enabled_ratio,
                exchange_id: b.exchange_id,
            });
        }
        for o in std::mem::take(&mut s.signal_type_overrides) {
            out.push(Event::SignalTypeUpserted {
                signal_type: o.name,
                enabled_ratio: o.enabled_ratio,
            });
        }
        for c in std::mem::take(&mut s.content_states) {
            out.push(Event::ContentUpserted {
                content_id: c.content_id,
                bank_id: c.bank_id,
                disable_until_ts: c.disable_until_ts,
            });
        }
        out
    }

    async fn next_signals(&mut self) -> Result<Option<Vec<SignalRecord>>, SourceError> {
        let chunk = self.0.next_signals().await.map_err(err)?;
        Ok(chunk.map(|rows| {
            rows.into_iter()
                .map(|r| SignalRecord {
                    content_id: r.content_id,
                    bank_id: r.bank_id,
                    signal_type: r.signal_type,
                    value: r.value,
                })
                .collect()
        }))
    }
}

/// The store's change notifications as a [`Wakeup`].
pub struct StoreWakeup(ChangeSubscription);

impl Wakeup for StoreWakeup {
    async fn changed(&mut self) -> bool {
        self.0.changed().await
    }
}

impl ChangeSource for Store {
    type Initial = StoreInitial;
    type Wake = StoreWakeup;

    async fn current_seq(&self) -> Result<i64, SourceError> {
        Store::current_seq(self).await.map_err(err)
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<SeqEvent>, SourceError> {
        let changes = Store::changes_since(self, after, limit)
            .await
            .map_err(err)?;
        Ok(changes
            .into_iter()
            .map(|c| SeqEvent {
                seq: c.seq,
                event: event_from_store(c.event),
            })
            .collect())
    }

    async fn load_state(&self, chunk_size: usize) -> Result<StoreInitial, SourceError> {
        Store::load_state(self, chunk_size)
            .await
            .map(StoreInitial)
            .map_err(err)
    }

    async fn subscribe(&self) -> Result<Option<StoreWakeup>, SourceError> {
        Store::subscribe(self)
            .await
            .map(|s| Some(StoreWakeup(s)))
            .map_err(err)
    }
}
