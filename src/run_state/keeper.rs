//! The [`Keeper`]: the one owner of what happens to the run state over this replica's terms. A term begins
//! (stamp the record, catch up the gap without a leader, forget removed jobs), a reload removes jobs
//! (forget them now), a follower shows the leader's progress (read the record again). The dispatcher calls
//! it at those moments; the runner claims and completes each run's slot through the same [`Ledger`].

use std::sync::Arc;

use super::{catch_up, CatchUp, Ledger, TermStart};
use crate::clock::SharedClock;
use crate::config::{Job, JobSet};
use crate::logging::rfc3339;
use crate::term::FencingToken;

/// Keeps the run state in step with this replica's terms and jobs. Cheap to clone; clones share the
/// ledger.
#[derive(Debug, Clone)]
pub struct Keeper {
    ledger: Arc<Ledger>,
    /// Wall time, for what a term owes.
    clock: SharedClock,
}

// === impl Keeper ===

impl Keeper {
    /// Keeps the run state in `ledger`, reading wall time from `clock`.
    pub fn new(ledger: Arc<Ledger>, clock: SharedClock) -> Keeper {
        Keeper { ledger, clock }
    }

    /// A term began: stamps the run state with `token`, so a stale leader's later writes are refused; hands
    /// `owe` what the gap without a leader owes each of `jobs` ([`catch_up`]), in order, once the slots it
    /// missed are logged; then forgets the jobs that are not in `jobs`.
    ///
    /// If a newer term already wrote the record, or it cannot be read, this logs why and owes nothing: the
    /// timers run, and each run still claims its slot.
    pub async fn begin_term(
        &self,
        token: FencingToken,
        jobs: &JobSet,
        mut owe: impl FnMut(&Arc<Job>, &CatchUp),
    ) {
        let record = match self.ledger.begin_term(token).await {
            Ok(TermStart::Begun(record)) => record,
            Ok(TermStart::Superseded { record_token }) => {
                tracing::warn!(
                    fencing_token = token.0,
                    record_token,
                    "a newer term wrote the run state: not catching up"
                );
                return;
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the run state at the start of the term: no catch-up (the timers run; each run still claims its slot)");
                return;
            }
        };
        let now = self.clock.now();
        for job in &jobs.jobs {
            let owed = catch_up(job, record.jobs.get(&job.name), now);
            if owed.missed > 0 {
                let latest = owed.latest_missed.as_ref().map(rfc3339);
                tracing::warn!(job = %job.name, missed = owed.missed, truncated = owed.missed_truncated, latest, "slots fell due without a leader and are skipped (past startingDeadline, or older than the latest)");
            }
            owe(job, &owed);
        }
        self.retain_jobs(token, jobs).await;
    }

    /// Forgets the run state of every job not in `jobs`, under the term `token` (a write only if there is
    /// one): when a term begins, and when a reload removes jobs while this replica leads, so a reload that
    /// replaces jobs does not carry both sets into the record until the next term (the capacity a job set
    /// is checked against counts only its own jobs).
    ///
    /// Forgetting is on the safe side: a job without an entry owes nothing, so nothing runs because of it.
    pub async fn retain_jobs(&self, token: FencingToken, jobs: &JobSet) {
        let names: Vec<&str> = jobs.jobs.iter().map(|job| job.name.as_str()).collect();
        if let Err(error) = self.ledger.retain_jobs(token, &names).await {
            tracing::debug!(%error, "could not prune removed jobs from the run state");
        }
    }

    /// Reads the run state afresh: a follower's view of the leader's progress, for `/status`.
    pub async fn refresh(&self) {
        if let Err(error) = self.ledger.refresh().await {
            tracing::debug!(%error, "cannot read the run state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::{self, LoadOptions};
    use crate::run_state::memory::MemoryStore;
    use crate::run_state::Claim;
    use crate::run_state::Origin;
    use chrono::{DateTime, Utc};
    use std::time::Duration;

    /// Jobs every ten seconds, allowed to start up to a minute late.
    fn jobs(names: &[&str]) -> JobSet {
        let mut yaml = String::from("jobs:\n");
        for name in names {
            yaml.push_str(&format!(
                "  - name: {name}\n    schedule: \"*/10 * * * * *\"\n    startingDeadline: 1m\n    shell: \"true\"\n"
            ));
        }
        let opts = LoadOptions {
            max_termination_grace: Duration::MAX,
        };
        config::parse_str(&yaml, "test.yaml", &opts).expect("valid")
    }

    fn keeper(store: &MemoryStore) -> Keeper {
        let ledger = Arc::new(Ledger::new(store.clone(), "me".to_owned()));
        Keeper::new(ledger, Arc::new(SystemClock))
    }

    /// The names of `store`'s jobs, and its token.
    async fn stored(store: &MemoryStore) -> (Vec<String>, u64) {
        let record = Ledger::new(store.clone(), "reader".to_owned())
            .refresh()
            .await
            .expect("infallible");
        (record.jobs.into_keys().collect(), record.fencing_token)
    }

    /// Claims, under `token`, the slot of each job a minute ago.
    async fn claim_a_minute_ago(store: &MemoryStore, names: &[&str], token: u64) -> DateTime<Utc> {
        let ledger = Ledger::new(store.clone(), "before".to_owned());
        let now = Utc::now();
        let slot = DateTime::from_timestamp(now.timestamp() / 10 * 10 - 60, 0).expect("valid");
        for name in names {
            let claim = ledger.claim(name, slot, FencingToken(token), now, &Origin::SCHEDULE);
            assert_eq!(claim.await.expect("infallible"), Claim::Claimed);
        }
        slot
    }

    #[tokio::test]
    async fn a_fresh_store_owes_nothing() {
        let store = MemoryStore::new();
        let mut owed = Vec::new();
        keeper(&store)
            .begin_term(FencingToken(3), &jobs(&["a", "b"]), |job, catch_up| {
                owed.push((job.name.clone(), catch_up.clone()));
            })
            .await;
        assert_eq!(owed.len(), 2, "every job is asked");
        assert!(owed.iter().all(|(_, owed)| *owed == CatchUp::default()));
        assert_eq!(stored(&store).await, (Vec::new(), 3), "stamped");
    }

    #[tokio::test]
    async fn a_term_catches_up_its_jobs_then_forgets_the_removed_ones() {
        let store = MemoryStore::new();
        let slot = claim_a_minute_ago(&store, &["kept", "gone"], 1).await;
        let mut owed = Vec::new();
        keeper(&store)
            .begin_term(FencingToken(2), &jobs(&["kept"]), |job, catch_up| {
                owed.push((job.name.clone(), catch_up.run));
            })
            .await;
        assert_eq!(owed.len(), 1);
        let (job, run) = &owed[0];
        assert_eq!(job, "kept");
        assert!(
            run.is_some_and(|run| run > slot),
            "the latest due slot runs"
        );
        assert_eq!(stored(&store).await, (vec!["kept".to_owned()], 2));
    }

    #[tokio::test]
    async fn a_superseded_term_owes_nothing_and_writes_nothing() {
        let store = MemoryStore::new();
        claim_a_minute_ago(&store, &["kept", "gone"], 5).await;
        let mut asked = 0;
        keeper(&store)
            .begin_term(FencingToken(4), &jobs(&["kept"]), |_, _| asked += 1)
            .await;
        assert_eq!(asked, 0);
        assert_eq!(
            stored(&store).await,
            (vec!["gone".to_owned(), "kept".to_owned()], 5)
        );
    }
}
