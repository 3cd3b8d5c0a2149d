//! Exchange APIs (hash-sharing programs) and the fetcher that applies them to the store.
