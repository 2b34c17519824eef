//! The run state in a local file beside the lease file: `LEASE.state`, as pretty JSON.
//!
//! The layout follows the lease file's ([`crate::local::lease`]), as the controls file's does: a
//! `generation` counter plays the role of `resourceVersion`, every compare-and-swap write holds an
//! exclusive `flock` on `LEASE.state.lock` (never blocking the thread: a held lock is retried on the tokio
//! timer, up to [`LOCK_TIMEOUT`]), and a write goes to `LEASE.state.tmp`, is fsynced and renamed over, so
//! a crash leaves the old record or the new one. Readers need no lock.
//!
//! The file holds `{"generation": N, "record": {...}}`. A file that does not parse, or whose record has
//! fields this version does not know, is returned as unusable (with its generation when it can be read), for
//! the ledger to log and rebuild.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::local::cas_file::{self, version_of, CasFile, Failure};
use crate::run_state::{Loaded, Saved, StateRecord};

/// How long a write waits for a peer's lock.
pub const LOCK_TIMEOUT: Duration = cas_file::LOCK_TIMEOUT;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error.
    #[error("run state {}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A peer held the lock for longer than [`LOCK_TIMEOUT`].
    #[error("run state {}: locked by another process for more than {LOCK_TIMEOUT:?}", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
    },
}

/// What is on disk.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    generation: u64,
    record: StateRecord,
}

/// The run state file of a lease file.
#[derive(Debug)]
pub struct StateFile {
    file: CasFile,
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        match failure {
            Failure::Io { path, what, source } => Error::Io { path, what, source },
            Failure::LockTimeout { path } => Error::LockTimeout { path },
        }
    }
}

impl StateFile {
    /// The state of the lease file `lease`: `LEASE.state` beside it.
    pub fn beside(lease: &Path) -> StateFile {
        StateFile {
            file: CasFile::beside(lease, ".state"),
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// For logs.
    pub fn describe(&self) -> String {
        format!("file {}", self.path().display())
    }

    /// Reads the record ([`Loaded::Absent`] if there is no file).
    pub async fn load(&self) -> Result<Loaded, Error> {
        self.read()
    }

    /// Writes `record` if the file's generation is still `version` (`None`: if there is no file).
    pub async fn save(&self, record: &StateRecord, version: Option<&str>) -> Result<Saved, Error> {
        // Only the version is read under the lock, without building the record: building the record of
        // 10 000 jobs took a third of a claim.
        let written = self
            .file
            .compare_and_swap(version, version_of, |generation| Stored {
                generation,
                record: record.clone(),
            })
            .await?;
        Ok(match written {
            Some(generation) => Saved::Written(generation.to_string()),
            None => Saved::Conflict,
        })
    }

    fn read(&self) -> Result<Loaded, Error> {
        let Some(bytes) = self.file.read_bytes()? else {
            return Ok(Loaded::Absent);
        };
        Ok(match serde_json::from_slice::<Stored>(&bytes) {
            Ok(stored) => Loaded::Found {
                version: stored.generation.to_string(),
                record: stored.record,
            },
            Err(e) => Loaded::Unusable {
                version: version_of(&bytes),
                why: format!("{}: {e}", self.path().display()),
            },
        })
    }
}

// The ledger's view: the methods above, with this store's errors as `run_state::Error::Store`.
crate::run_state::store_from_inherent_methods!(StateFile);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_state::{Claim, Completion, Ledger, TermStart};
    use crate::run_state::{Origin, RunResult};
    use crate::term::FencingToken;
    use chrono::{TimeZone, Utc};
    use std::fs;

    fn slot(s: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    fn ledger(lease: &Path, identity: &str) -> Ledger {
        Ledger::new(StateFile::beside(lease), identity.to_owned())
    }

    #[tokio::test]
    async fn a_slot_is_claimed_once_across_ledgers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = dir.path().join("lease");
        let a = ledger(&lease, "a");
        let b = ledger(&lease, "b");
        assert!(
            matches!(
                a.begin_term(FencingToken(1)).await.expect("io"),
                TermStart::Begun(_)
            ),
            "not stale"
        );
        assert_eq!(
            a.claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
                .await
                .expect("io"),
            Claim::Claimed
        );
        // A new term elsewhere sees the slot as started.
        let TermStart::Begun(record) = b.begin_term(FencingToken(2)).await.expect("io") else {
            panic!("not stale")
        };
        assert_eq!(
            record.jobs["j"].last_started.as_ref().map(|s| s.slot),
            Some(slot(10))
        );
        assert_eq!(
            b.claim("j", slot(10), FencingToken(2), slot(11), &Origin::SCHEDULE)
                .await
                .expect("io"),
            Claim::AlreadyStarted {
                slot: slot(10),
                fencing_token: 1
            }
        );
        assert_eq!(
            b.claim("j", slot(20), FencingToken(2), slot(20), &Origin::SCHEDULE)
                .await
                .expect("io"),
            Claim::Claimed
        );
    }

    #[tokio::test]
    async fn a_stale_term_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = dir.path().join("lease");
        let old = ledger(&lease, "old");
        let new = ledger(&lease, "new");
        assert!(
            matches!(
                old.begin_term(FencingToken(3)).await.expect("io"),
                TermStart::Begun(_)
            ),
            "not stale"
        );
        assert!(
            matches!(
                new.begin_term(FencingToken(4)).await.expect("io"),
                TermStart::Begun(_)
            ),
            "not stale"
        );
        // The old leader's cached view is outdated: its write conflicts, it re-reads, and is refused.
        assert_eq!(
            old.claim("j", slot(30), FencingToken(3), slot(30), &Origin::SCHEDULE)
                .await
                .expect("io"),
            Claim::Stale { record_token: 4 }
        );
        let completion = Completion {
            slot: slot(30),
            outcome: "succeeded".to_owned(),
            finished_at: slot(31),
        };
        assert_eq!(
            old.complete(
                "j",
                FencingToken(3),
                &Origin::SCHEDULE,
                completion,
                RunResult::default()
            )
            .await
            .expect("io"),
            Claim::Stale { record_token: 4 }
        );
        assert_eq!(
            old.begin_term(FencingToken(3)).await.expect("io"),
            TermStart::Superseded { record_token: 4 },
            "an older term cannot even begin"
        );
        let record = new.refresh().await.expect("io");
        assert!(
            !record.jobs.contains_key("j"),
            "nothing of the stale term landed"
        );
    }

    #[tokio::test]
    async fn a_corrupt_or_newer_file_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = dir.path().join("lease");
        let state = StateFile::beside(&lease);
        for content in [
            "not json".to_owned(),
            r#"{"generation": 7, "record": {"format": 1, "fencingToken": 2, "jobs": {}, "newField": 1}}"#
                .to_owned(),
            r#"{"generation": 8, "record": {"format": 2, "fencingToken": 2, "jobs": {}}}"#.to_owned(),
        ] {
            fs::write(state.path(), &content).expect("write");
            let ledger = ledger(&lease, "a");
            let TermStart::Begun(record) = ledger.begin_term(FencingToken(5)).await.expect("io") else { panic!("rebuilt, not stale") };
            assert!(record.jobs.is_empty(), "{content}");
            assert_eq!(record.fencing_token, 5);
            let Loaded::Found { record: on_disk, .. } = state.load().await.expect("io") else {
                panic!("usable now");
            };
            assert_eq!(on_disk.fencing_token, 5);
        }
    }

    #[tokio::test]
    async fn retaining_jobs_forgets_removed_ones_and_writes_only_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = dir.path().join("lease");
        let state = StateFile::beside(&lease);
        let ledger = ledger(&lease, "a");
        assert!(
            matches!(
                ledger.begin_term(FencingToken(1)).await.expect("io"),
                TermStart::Begun(_)
            ),
            "not stale"
        );
        for job in ["keep", "drop"] {
            ledger
                .claim(job, slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
                .await
                .expect("io");
        }
        let generation = |loaded: Loaded| match loaded {
            Loaded::Found { version, .. } => version,
            other => panic!("a usable file, not {other:?}"),
        };
        let before = generation(state.load().await.expect("io"));
        ledger
            .retain_jobs(FencingToken(1), &["keep", "drop"])
            .await
            .expect("io");
        assert_eq!(
            generation(state.load().await.expect("io")),
            before,
            "nothing to forget"
        );
        ledger
            .retain_jobs(FencingToken(1), &["keep"])
            .await
            .expect("io");
        let Loaded::Found { version, record } = state.load().await.expect("io") else {
            panic!("a usable file");
        };
        assert_ne!(version, before);
        assert_eq!(record.jobs.keys().collect::<Vec<_>>(), ["keep"]);
    }

    #[tokio::test]
    async fn a_rerun_may_claim_the_interrupted_slot_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = dir.path().join("lease");
        let old = ledger(&lease, "old");
        assert!(
            matches!(
                old.begin_term(FencingToken(1)).await.expect("io"),
                TermStart::Begun(_)
            ),
            "not stale"
        );
        old.claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
            .await
            .expect("io");
        let new = ledger(&lease, "new");
        assert!(
            matches!(
                new.begin_term(FencingToken(2)).await.expect("io"),
                TermStart::Begun(_)
            ),
            "not stale"
        );
        assert_eq!(
            new.claim("j", slot(10), FencingToken(2), slot(12), &Origin::RETRY)
                .await
                .expect("io"),
            Claim::Claimed
        );
        assert!(matches!(
            new.claim("j", slot(10), FencingToken(2), slot(13), &Origin::RETRY)
                .await
                .expect("io"),
            Claim::AlreadyStarted {
                fencing_token: 2,
                ..
            }
        ));
    }
}
