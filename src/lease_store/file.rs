//! A lease record in a local JSON file, so that leasecron can run without a cluster and several local
//! processes can elect one leader.
//!
//! # Layout on disk
//!
//! - `PATH`: the record as pretty JSON — the `Lease` spec fields in the API's camelCase plus a `version`
//!   counter that plays the role of `resourceVersion`.
//! - `PATH.lock`: an empty file that every writer holds an exclusive `flock` on for its read-modify-write.
//!   The lock cannot be on `PATH` itself because writes replace `PATH` with a new inode.
//! - `PATH.tmp`: the next version while it is written. It is fsynced, renamed over `PATH`, and the
//!   directory is fsynced, so a crash leaves either the old record or the new one, never half of one.
//!   Readers need no lock for the same reason.
//!
//! Deleting `PATH` while electors run restarts the version counter and the fencing tokens: don't.
//!
//! # Blocking
//!
//! The file is read and written with synchronous `std::fs`, not `tokio::fs`: a critical section is a few
//! syscalls on a small local file (microseconds), and `tokio::fs` would hand each one to the blocking pool.
//! Under paused tokio time (the elector's tests) a task awaiting the blocking pool lets the clock
//! auto-advance in older tokio versions (current ones inhibit auto-advance only on the current-thread
//! runtime), which made timing tests nondeterministic; synchronous calls complete within one poll and
//! keep them exact. Taking the lock never blocks the thread: a `LOCK_NB` attempt is retried on the tokio
//! timer, so a peer stopped while holding the lock makes our request time out instead of wedging the
//! runtime.
//!
//! # Change detection
//!
//! [`LeaseStore::changed`] polls: every `poll_interval` (`run` passes the retry period, at most
//! [`crate::app::LEASE_FILE_POLL_INTERVAL`]) it reads the record and resolves if the version differs from
//! the caller's. A local file offers no cheaper signal that works across processes without inotify, and the
//! poll keeps a follower's reaction to a release within one interval.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Change, Error, LeaseRecord, LeaseStore, Verb, Versioned};

/// How long a request waits for a peer's lock before it gives up ([`Error::Timeout`]). Peers hold it for
/// microseconds; this only matters when a peer was stopped inside its critical section.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a request retries a held lock.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(5);

/// A lease record in a local file. See the [module documentation](self).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    lock_path: PathBuf,
    temp_path: PathBuf,
    dir: PathBuf,
    poll_interval: Duration,
    /// When [`LeaseStore::changed`] polls next; shared by successive calls so that dropping one does not
    /// postpone the poll.
    next_poll: Mutex<Option<Instant>>,
}

/// The file's JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StoredLease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder_identity: Option<String>,
    lease_duration_seconds: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquire_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_time: Option<DateTime<Utc>>,
    lease_transitions: i32,
    version: u64,
}

// === impl FileStore ===

impl FileStore {
    /// A store on `path`, polled every `poll_interval` by [`LeaseStore::changed`]. Creates the lock file
    /// beside it, so a missing directory or a permission problem shows up here rather than mid-election.
    pub fn open(path: impl Into<PathBuf>, poll_interval: Duration) -> Result<Self, Error> {
        let path = path.into();
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let store = FileStore {
            lock_path: with_suffix(&path, ".lock"),
            temp_path: with_suffix(&path, ".tmp"),
            path,
            dir,
            poll_interval,
            next_poll: Mutex::new(None),
        };
        store.open_lock_file()?;
        Ok(store)
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` while holding the exclusive lock, retrying a held lock on the tokio timer.
    async fn locked<T>(
        &self,
        verb: Verb,
        op: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        loop {
            match Flock::lock(self.open_lock_file()?, FlockArg::LockExclusiveNonblock) {
                Ok(_guard) => return op(),
                Err((_, Errno::EWOULDBLOCK)) => {}
                Err((_, errno)) => {
                    return Err(io_error(&self.lock_path, "locking", errno.into()));
                }
            }
            if started.elapsed() >= LOCK_TIMEOUT {
                return Err(Error::Timeout {
                    store: self.describe(),
                    verb,
                    after: LOCK_TIMEOUT,
                });
            }
            tokio::time::sleep(LOCK_RETRY_INTERVAL).await;
        }
    }

    fn open_lock_file(&self) -> Result<File, Error> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| io_error(&self.lock_path, "opening the lock file", e))
    }

    /// Reads the record; `None` if the file does not exist.
    fn read(&self) -> Result<Option<StoredLease>, Error> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&self.path, "reading", e)),
        };
        let stored: StoredLease = serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e))?;
        stored.check().map_err(|detail| self.corrupt(detail))?;
        Ok(Some(stored))
    }

    /// Replaces the record atomically: temp file, fsync, rename over, fsync the directory.
    fn write(&self, stored: &StoredLease) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(stored).map_err(|e| self.corrupt(e))?;
        json.push(b'\n');
        let temp = &self.temp_path;
        let mut file =
            File::create(temp).map_err(|e| io_error(temp, "creating the temporary file", e))?;
        file.write_all(&json)
            .map_err(|e| io_error(temp, "writing the temporary file", e))?;
        file.sync_all()
            .map_err(|e| io_error(temp, "syncing the temporary file", e))?;
        fs::rename(temp, &self.path)
            .map_err(|e| io_error(&self.path, "renaming the temporary file over it", e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(&self.dir, "syncing the directory", e))
    }

    /// The next poll instant of [`LeaseStore::changed`].
    fn next_poll(&self) -> Instant {
        let mut next = self
            .next_poll
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *next.get_or_insert_with(|| Instant::now() + self.poll_interval)
    }

    fn polled(&self) {
        let mut next = self
            .next_poll
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *next = Some(Instant::now() + self.poll_interval);
    }

    fn corrupt(&self, detail: impl ToString) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }
}

impl LeaseStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn get(&self) -> Result<Option<Versioned>, Error> {
        Ok(self.read()?.map(StoredLease::into_versioned))
    }

    async fn create(&self, record: &LeaseRecord) -> Result<Versioned, Error> {
        self.locked(Verb::Create, || {
            if self.read()?.is_some() {
                return Err(Error::AlreadyExists {
                    store: self.describe(),
                });
            }
            let stored = StoredLease::new(record, 1);
            self.write(&stored)?;
            Ok(stored.into_versioned())
        })
        .await
    }

    async fn update(&self, record: &LeaseRecord, version: &str) -> Result<Versioned, Error> {
        self.locked(Verb::Update, || {
            let current = self.read()?.ok_or_else(|| Error::NotFound {
                store: self.describe(),
            })?;
            if current.version.to_string() != version {
                return Err(Error::Conflict {
                    store: self.describe(),
                    expected: version.to_owned(),
                });
            }
            let next = current
                .version
                .checked_add(1)
                .ok_or_else(|| self.corrupt("the version counter is exhausted"))?;
            let stored = StoredLease::new(record, next);
            self.write(&stored)?;
            Ok(stored.into_versioned())
        })
        .await
    }

    async fn changed(&self, known: Option<String>) -> Change {
        loop {
            tokio::time::sleep_until(self.next_poll()).await;
            self.polled();
            match self.read() {
                Ok(current) => {
                    let current = current.map(StoredLease::into_versioned);
                    if current.as_ref().map(|v| &v.version) != known.as_ref() {
                        return Change::Record(current);
                    }
                }
                // The caller's `get` reports the error with its detail.
                Err(_) => return Change::Unknown,
            }
        }
    }
}

// === impl StoredLease ===

impl StoredLease {
    fn new(record: &LeaseRecord, version: u64) -> Self {
        StoredLease {
            holder_identity: record.holder_identity.clone(),
            lease_duration_seconds: record.lease_duration_seconds,
            acquire_time: record.acquire_time,
            renew_time: record.renew_time,
            lease_transitions: record.lease_transitions,
            version,
        }
    }

    /// Rejects values no writer of ours produces.
    fn check(&self) -> Result<(), String> {
        if self.version == 0 {
            return Err("version must be at least 1".into());
        }
        if self.lease_transitions < 0 {
            return Err(format!(
                "leaseTransitions must not be negative, found {}",
                self.lease_transitions
            ));
        }
        if self.lease_duration_seconds < 0 {
            return Err(format!(
                "leaseDurationSeconds must not be negative, found {}",
                self.lease_duration_seconds
            ));
        }
        Ok(())
    }

    fn into_versioned(self) -> Versioned {
        Versioned {
            version: self.version.to_string(),
            record: LeaseRecord {
                holder_identity: self.holder_identity,
                lease_duration_seconds: self.lease_duration_seconds,
                acquire_time: self.acquire_time,
                renew_time: self.renew_time,
                lease_transitions: self.lease_transitions,
            },
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io_error(path: &Path, op: &'static str, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_uses_the_lease_api_field_names() {
        let record = LeaseRecord {
            holder_identity: Some("pod-a".into()),
            lease_duration_seconds: 15,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 4,
        };
        let json = serde_json::to_value(StoredLease::new(&record, 9)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "holderIdentity": "pod-a",
                "leaseDurationSeconds": 15,
                "leaseTransitions": 4,
                "version": 9,
            })
        );
    }

    #[test]
    fn a_stored_record_round_trips_with_its_version() {
        let record = LeaseRecord {
            holder_identity: None,
            lease_duration_seconds: 1,
            acquire_time: Some(DateTime::UNIX_EPOCH),
            renew_time: Some(DateTime::UNIX_EPOCH),
            lease_transitions: 2,
        };
        let json = serde_json::to_vec(&StoredLease::new(&record, 3)).expect("serializes");
        let back: StoredLease = serde_json::from_slice(&json).expect("parses");
        let versioned = back.into_versioned();
        assert_eq!(versioned.record, record);
        assert_eq!(versioned.version, "3");
    }

    #[test]
    fn negative_counters_are_rejected() {
        let mut stored = StoredLease::new(
            &LeaseRecord {
                holder_identity: None,
                lease_duration_seconds: 1,
                acquire_time: None,
                renew_time: None,
                lease_transitions: -1,
            },
            1,
        );
        assert!(stored.check().unwrap_err().contains("leaseTransitions"));
        stored.lease_transitions = 0;
        stored.version = 0;
        assert!(stored.check().unwrap_err().contains("version"));
    }

    #[test]
    fn side_files_sit_beside_the_record() {
        assert_eq!(
            with_suffix(Path::new("/run/x.lease"), ".lock"),
            PathBuf::from("/run/x.lease.lock")
        );
    }
}
