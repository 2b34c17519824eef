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
//! the jobs: an inotify watch of the lease file's directory (`local::dir_watch`), debounced, with
//! a re-read as the fallback (a write from another machine on a network file system): every
//! [`WATCHED_POLL_INTERVAL`], or every [`POLL_INTERVAL`] while the directory cannot be watched. The lease
//! file's renewals beside it do not wake the feed. Only a document that differs from the one in force is
//! published.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controls::feed::{self, Publisher};
use crate::controls::{Controls, Invalid, Read, Saved, Store, StoreFuture};
use crate::local::cas_file::{self, CasFile, Failure};
use crate::local::dir_watch::{self, renew_feed_watch, DirWatch};
use crate::local::jobs_file::debounce;

/// How long a write waits for a peer's lock.
pub const LOCK_TIMEOUT: Duration = cas_file::LOCK_TIMEOUT;
/// How often the feed re-reads the file while its directory cannot be watched.
pub const POLL_INTERVAL: Duration = dir_watch::UNWATCHED_POLL_INTERVAL;
/// How often the feed re-reads the file all the same while its directory is watched.
pub const WATCHED_POLL_INTERVAL: Duration = dir_watch::WATCHED_POLL_INTERVAL;
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

/// The controls file of a lease file. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct ControlsFile {
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

impl ControlsFile {
    /// The controls of the lease file `lease`: `LEASE.controls` beside it.
    pub fn beside(lease: &Path) -> ControlsFile {
        ControlsFile {
            file: CasFile::beside(lease, SUFFIX),
        }
    }

    /// The controls file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// For messages: `file PATH`.
    pub fn describe(&self) -> String {
        format!("file {}", self.path().display())
    }

    /// Reads the document: an empty one without a version if there is no file.
    pub async fn load(&self) -> Result<Read, Error> {
        let Some(bytes) = self.file.read_bytes()? else {
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
        let written = self
            .file
            .compare_and_swap(version, version_of, |generation| Writing {
                generation,
                controls,
            })
            .await?;
        Ok(match written {
            Some(_) => Saved::Written,
            None => Saved::Conflict,
        })
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

    /// Reads the file and offers what it holds to `publisher`; a failure to read is logged (a warning
    /// at the start of an outage, `down` set until the file can be read again) and publishes nothing.
    fn refresh(&self, publisher: &mut Publisher, down: &mut bool) {
        let bytes = match self.file.read_bytes() {
            Ok(bytes) => bytes,
            Err(failure) => {
                let error = Error::from(failure);
                if std::mem::replace(down, true) {
                    tracing::debug!(%error, "the controls file still cannot be read");
                } else {
                    tracing::warn!(
                        %error,
                        "cannot read the controls file; the controls in force stay until it can be read again"
                    );
                }
                return;
            }
        };
        if std::mem::take(down) {
            tracing::info!(file = %self.path().display(), "the controls file can be read again");
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
    cas_file::version_of(bytes)
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
/// directory (debounced) and every [`WATCHED_POLL_INTERVAL`] ([`POLL_INTERVAL`] while it cannot be
/// watched). Publishes only a document that differs from the one
/// in `out`; an invalid one is logged once and the one in force stays; no file is the empty document.
pub async fn watch(file: ControlsFile, out: watch::Sender<Arc<Controls>>, stop: CancellationToken) {
    let mut publisher = Publisher::new(out, file.describe());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watch = None;
    let mut down = false;
    loop {
        // Set up again if not current, then read; once more if the watch ended meanwhile (its directory
        // removed), since nothing watched the file after that.
        loop {
            watch = renew_feed_watch(watch, file.path(), &events_tx, "controls file");
            file.refresh(&mut publisher, &mut down);
            if watch.as_ref().is_none_or(DirWatch::is_alive) {
                break;
            }
        }
        let next_poll = Instant::now() + dir_watch::poll_interval(watch.as_ref());
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = publisher.closed() => return,
            Some(()) = events.recv() => {
                if !debounce(&mut events, &stop).await {
                    return;
                }
            }
            () = tokio::time::sleep_until(next_poll) => {}
        }
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
        assert_eq!(relative.file.dir(), Path::new("."));
    }

    #[test]
    fn versions_are_generations_and_an_unreadable_one_matches_nothing_written() {
        assert_eq!(version_of(b"{\"generation\": 7, \"controls\": {}}"), "7");
        assert_eq!(version_of(b" \n"), "0");
        assert_eq!(version_of(b"{"), "corrupt");
    }
}
