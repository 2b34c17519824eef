//! The run state in memory: a [`Store`] for tests and benches, which need a ledger but neither a file nor a
//! cluster. It keeps the compare-and-swap of the file and ConfigMap stores: a generation counter plays the
//! role of the version, and a write whose version is not the stored one (or that creates a record that
//! exists) is a [`Saved::Conflict`]. Clones share the record, so two ledgers over clones of one store act as
//! two replicas of one lease.
//!
//! Nothing survives the process: a fresh store holds no record, so a new term owes nothing.

use std::sync::{Arc, Mutex, PoisonError};

use super::{Loaded, Saved, StateRecord, Store, StoreFuture};

/// A run state record held in memory. See the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    /// The generation and the record; `None` before the first write.
    stored: Arc<Mutex<Option<(u64, StateRecord)>>>,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store with no record yet.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Reads the record.
    fn read(&self) -> Loaded {
        match &*self.lock() {
            None => Loaded::Absent,
            Some((generation, record)) => Loaded::Found {
                version: generation.to_string(),
                record: record.clone(),
            },
        }
    }

    /// Writes `record` if the generation is still `version` (`None`: if there is no record).
    fn write(&self, record: &StateRecord, version: Option<&str>) -> Saved {
        let mut stored = self.lock();
        let current = stored
            .as_ref()
            .map(|(generation, _)| generation.to_string());
        if current.as_deref() != version {
            return Saved::Conflict;
        }
        let generation = stored.as_ref().map_or(0, |(generation, _)| *generation) + 1;
        *stored = Some((generation, record.clone()));
        Saved::Written(generation.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, StateRecord)>> {
        // Every write replaces the whole value: consistent even after a panic elsewhere.
        self.stored.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn load(&self) -> StoreFuture<'_, Loaded> {
        Box::pin(std::future::ready(Ok(self.read())))
    }

    fn save<'a>(
        &'a self,
        record: &'a StateRecord,
        version: Option<&'a str>,
    ) -> StoreFuture<'a, Saved> {
        Box::pin(std::future::ready(Ok(self.write(record, version))))
    }

    /// A write costs nothing: slots are claimed when due.
    fn claims_ahead(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_state::Origin;
    use crate::run_state::{Claim, Ledger, FORMAT};
    use crate::term::FencingToken;
    use chrono::{TimeZone, Utc};

    fn record(token: u64) -> StateRecord {
        StateRecord {
            format: FORMAT,
            fencing_token: token,
            ..StateRecord::default()
        }
    }

    async fn version_of(store: &MemoryStore) -> String {
        match store.load().await.expect("infallible") {
            Loaded::Found { version, .. } => version,
            other => panic!("a record, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_write_needs_the_version_it_replaces() {
        let store = MemoryStore::new();
        assert!(matches!(
            store.load().await.expect("infallible"),
            Loaded::Absent
        ));
        assert_eq!(
            store.save(&record(1), Some("1")).await.expect("infallible"),
            Saved::Conflict,
            "no record to replace"
        );
        let Saved::Written(first) = store.save(&record(1), None).await.expect("infallible") else {
            panic!("the first create is written");
        };
        assert_eq!(
            store.save(&record(2), None).await.expect("infallible"),
            Saved::Conflict,
            "a peer created it first"
        );
        let Saved::Written(second) = store
            .save(&record(2), Some(&first))
            .await
            .expect("infallible")
        else {
            panic!("a replace of the current version is written");
        };
        assert_ne!(first, second);
        assert_eq!(
            store
                .save(&record(3), Some(&first))
                .await
                .expect("infallible"),
            Saved::Conflict,
            "the version moved on"
        );
        assert_eq!(version_of(&store).await, second);
        let Loaded::Found { record: stored, .. } = store.load().await.expect("infallible") else {
            panic!("a record");
        };
        assert_eq!(stored.fencing_token, 2);
    }

    #[tokio::test]
    async fn clones_share_the_record_like_replicas_of_one_lease() {
        let store = MemoryStore::new();
        let old = Ledger::new(store.clone(), "old".to_owned());
        let new = Ledger::new(store.clone(), "new".to_owned());
        let slot = Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid");
        assert_eq!(
            old.claim("j", slot, FencingToken(1), slot, &Origin::SCHEDULE)
                .await
                .expect("infallible"),
            Claim::Claimed
        );
        assert!(matches!(
            new.claim("j", slot, FencingToken(2), slot, &Origin::SCHEDULE)
                .await
                .expect("infallible"),
            Claim::AlreadyStarted {
                fencing_token: 1,
                ..
            }
        ));
        let later = slot + chrono::Duration::seconds(10);
        assert_eq!(
            new.claim("j", later, FencingToken(2), later, &Origin::SCHEDULE)
                .await
                .expect("infallible"),
            Claim::Claimed
        );
        // The old term's cached version is gone: its write conflicts, it re-reads, and is refused.
        assert_eq!(
            old.claim("k", later, FencingToken(1), later, &Origin::SCHEDULE)
                .await
                .expect("infallible"),
            Claim::Stale { record_token: 2 }
        );
    }
}
