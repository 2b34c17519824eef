//! The operator controls ([`crate::controls`]) in a local file beside the lease file: `LEASE.controls`,
//! as pretty JSON that a person can read and, in a pinch, edit.
//!
//! The layout follows the run state file's ([`crate::local::run_state`]): a `generation` counter plays
//! the role of `resourceVersion`, every compare-and-swap write holds an exclusive `flock` on
//! `LEASE.controls.lock` (never blocking the thread: a held lock is retried on the tokio timer, up to
//! [`LOCK_TIMEOUT`]), and a write goes to `LEASE.controls.tmp`, is fsynced and renamed over, so a crash
//! leaves the old document or the new one. Readers need no lock.
//!
//! The file holds `{"generation": N, "controls": {...}}`. No file is an empty document without a
//! version (the first write creates it); an empty file (`touch`) is an empty document of generation 0. A
//! file that does not parse, or whose document [`Controls::parse`] refuses, is [`Error::Invalid`]: the
//! commands that write requests report it, and the replicas' feed ([`watch()`]) keeps the last valid
//! document.
//!
//! # The replicas' feed
//!
//! [`watch()`] keeps a `watch` channel at the document in the file, as [`crate::local::jobs_file`] keeps
//! the jobs: a `notify` (inotify) watch of the lease file's directory, debounced, with a re-read every
//! [`POLL_INTERVAL`] as the fallback (a write from another machine on a network file system, a watch that
//! could not be set up). Only a document that differs from the one in force is published.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controls::feed::{self, Publisher};
use crate::controls::{Controls, Invalid, Read, Saved, Store, StoreFuture};
use crate::local::jobs_file::{debounce, DirWatch};

/// How long a write waits for a peer's lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a held lock is retried.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(2);
/// How often the feed re-reads the file whatever the directory watch says.
pub const POLL_INTERVAL: Duration = crate::local::jobs_file::POLL_INTERVAL;
/// The suffix of the file's name: `LEASE.controls`.
pub const SUFFIX: &str = ".controls";

/// Why the controls file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error.
    #[error("controls file {}: {what}: {source}", path.display())]
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
    #[error("controls file {}: locked by another process for more than {LOCK_TIMEOUT:?}", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
    },
    /// The file is not a controls document this leasecron reads (the message names the file).
    #[error("{0} (fix the file, or delete it: no suspension, no request)")]
    Invalid(#[from] Invalid),
}

/// The file as read, before the document is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    generation: u64,
    controls: serde_json::Value,
}

/// The file as written.
#[derive(Debug, Serialize)]
struct Writing<'a> {
    generation: u64,
    controls: &'a Controls,
}

/// Only the generation, to compare versions under the lock without checking the document.
#[derive(Debug, Deserialize)]
struct GenerationOnly {
    generation: u64,
}

/// The controls file of a lease file. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct ControlsFile {
    path: PathBuf,
    lock_path: PathBuf,
    temp_path: PathBuf,
    dir: PathBuf,
}

impl ControlsFile {
    /// The controls of the lease file `lease`: `LEASE.controls` beside it.
    pub fn beside(lease: &Path) -> ControlsFile {
        let with = |suffix: &str| {
            let mut name = lease.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let dir = match lease.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ControlsFile {
            path: with(SUFFIX),
            lock_path: with(&format!("{SUFFIX}.lock")),
            temp_path: with(&format!("{SUFFIX}.tmp")),
            dir,
        }
    }

    /// The controls file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For messages: `file PATH`.
    pub fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    /// Reads the document: an empty one without a version if there is no file.
    pub async fn load(&self) -> Result<Read, Error> {
        let Some(bytes) = self.read_bytes()? else {
            return Ok(Read {
                controls: feed::empty(),
                version: None,
            });
        };
        let (controls, generation) = self.decode(&bytes)?;
        Ok(Read {
            controls,
            version: Some(generation.to_string()),
        })
    }

    /// Writes `controls` if the file's generation is still `version` (`None`: if there is no file).
    pub async fn save(&self, controls: &Controls, version: Option<&str>) -> Result<Saved, Error> {
        let _lock = self.lock().await?;
        let current = self.read_bytes()?.map(|bytes| version_of(&bytes));
        if current.as_deref() != version {
            return Ok(Saved::Conflict);
        }
        let generation = current.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        self.write(&Writing {
            generation,
            controls,
        })?;
        Ok(Saved::Written)
    }

    /// The document in `bytes` and its generation; an empty file is an empty document of generation 0.
    fn decode(&self, bytes: &[u8]) -> Result<(Controls, u64), Invalid> {
        let where_ = self.describe();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((feed::empty(), 0));
        }
        let on_disk: OnDisk =
            serde_json::from_slice(bytes).map_err(|error| Invalid::Malformed {
                where_: where_.clone(),
                why: error.to_string(),
            })?;
        // The document's own checks (its format, each request), on the document as written.
        let text = serde_json::to_string_pretty(&on_disk.controls).unwrap_or_default();
        let controls = Controls::parse(&text, &where_)?;
        Ok((controls, on_disk.generation))
    }

    fn read_bytes(&self) -> Result<Option<Vec<u8>>, Error> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&self.path, "reading", e)),
        }
    }

    /// Holds the exclusive lock until the guard is dropped.
    async fn lock(&self) -> Result<Flock<File>, Error> {
        let started = Instant::now();
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.lock_path)
                .map_err(|e| self.io(&self.lock_path, "opening the lock file", e))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => return Ok(guard),
                Err((_, Errno::EWOULDBLOCK)) => {}
                Err((_, errno)) => return Err(self.io(&self.lock_path, "locking", errno.into())),
            }
            if started.elapsed() >= LOCK_TIMEOUT {
                return Err(Error::LockTimeout {
                    path: self.lock_path.clone(),
                });
            }
            tokio::time::sleep(LOCK_RETRY_INTERVAL).await;
        }
    }

    fn write(&self, writing: &Writing<'_>) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(writing)
            .map_err(|e| self.io(&self.path, "encoding", io::Error::other(e)))?;
        json.push(b'\n');
        let temp = &self.temp_path;
        let mut file = File::create(temp).map_err(|e| self.io(temp, "creating", e))?;
        file.write_all(&json)
            .map_err(|e| self.io(temp, "writing", e))?;
        file.sync_all().map_err(|e| self.io(temp, "syncing", e))?;
        fs::rename(temp, &self.path).map_err(|e| self.io(&self.path, "renaming over", e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io(&self.dir, "syncing the directory", e))
    }

    fn io(&self, path: &Path, what: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }

    /// Reads the file and offers what it holds to `publisher`; a failure to read is logged (a warning
    /// at the start of an outage, `down` set until the file can be read again) and publishes nothing.
    fn refresh(&self, publisher: &mut Publisher, down: &mut bool) {
        let bytes = match self.read_bytes() {
            Ok(bytes) => bytes,
            Err(error) => {
                if std::mem::replace(down, true) {
                    tracing::debug!(%error, "the controls file still cannot be read");
                } else {
                    tracing::warn!(
                        %error,
                        "cannot read the controls file; the controls in force stay, retrying every {}",
                        humantime::format_duration(POLL_INTERVAL)
                    );
                }
                return;
            }
        };
        if std::mem::take(down) {
            tracing::info!(file = %self.path.display(), "the controls file can be read again");
        }
        match bytes {
            None => {
                publisher.absent();
            }
            Some(bytes) => {
                let version = format!("{:016x}", content_hash(&bytes));
                publisher.offer(&version, self.decode(&bytes).map(|(controls, _)| controls));
            }
        }
    }
}

/// The generation of a file's content as the version: `0` for an empty file, one that matches nothing
/// we would write if the generation cannot be read.
fn version_of(bytes: &[u8]) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return "0".to_owned();
    }
    serde_json::from_slice::<GenerationOnly>(bytes)
        .map(|g| g.generation.to_string())
        .unwrap_or_else(|_| "corrupt".to_owned())
}

/// FNV-1a of the file's bytes: tells its versions apart in the log of invalid ones.
fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Store for ControlsFile {
    fn describe(&self) -> String {
        ControlsFile::describe(self)
    }

    fn load(&self) -> StoreFuture<'_, Read> {
        Box::pin(async move { Ok(ControlsFile::load(self).await?) })
    }

    fn save<'a>(
        &'a self,
        controls: &'a Controls,
        version: Option<&'a str>,
    ) -> StoreFuture<'a, Saved> {
        Box::pin(async move { Ok(ControlsFile::save(self, controls, version).await?) })
    }
}

/// Keeps `out` at the document in `file` until `stop` is cancelled or every receiver of `out` is gone:
/// reads it at once (a change since the caller's read is not lost), then on every change in its
/// directory (debounced) and every [`POLL_INTERVAL`]. Publishes only a document that differs from the one
/// in `out`; an invalid one is logged once and the one in force stays; no file is the empty document.
pub async fn watch(file: ControlsFile, out: watch::Sender<Arc<Controls>>, stop: CancellationToken) {
    let mut publisher = Publisher::new(out, file.describe());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut dir_watch = DirWatch::start(&file.path, &events_tx, "controls file");
    let mut down = false;
    file.refresh(&mut publisher, &mut down);
    let mut poll = tokio::time::interval_at(Instant::now() + POLL_INTERVAL, POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let check_watch = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = publisher.closed() => return,
            Some(()) = events.recv() => {
                if !debounce(&mut events, &stop).await {
                    return;
                }
                false
            }
            _ = poll.tick() => true,
        };
        if check_watch && !dir_watch.as_ref().is_some_and(DirWatch::is_current) {
            dir_watch = DirWatch::start(&file.path, &events_tx, "controls file");
        }
        file.refresh(&mut publisher, &mut down);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_beside_the_lease_file() {
        let file = ControlsFile::beside(Path::new("/run/leasecron/lease.json"));
        assert_eq!(file.path(), Path::new("/run/leasecron/lease.json.controls"));
        assert_eq!(file.describe(), "file /run/leasecron/lease.json.controls");
        let relative = ControlsFile::beside(Path::new("lease"));
        assert_eq!(relative.path(), Path::new("lease.controls"));
        assert_eq!(relative.dir, Path::new("."));
    }

    #[test]
    fn versions_are_generations_and_an_unreadable_one_matches_nothing_written() {
        assert_eq!(version_of(b"{\"generation\": 7, \"controls\": {}}"), "7");
        assert_eq!(version_of(b" \n"), "0");
        assert_eq!(version_of(b"{"), "corrupt");
    }
}
