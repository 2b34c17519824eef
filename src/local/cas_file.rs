//! The compare-and-swap file the run state and the controls keep beside the lease file, as the lease file
//! itself does ([`crate::local::lease`]): a `generation` counter in the JSON plays the role of
//! `resourceVersion`; every write holds an exclusive `flock` on `FILE.lock` (never blocking the thread: a
//! held lock is retried on the tokio timer, up to [`LOCK_TIMEOUT`]), checks the generation under it, and
//! goes to `FILE.tmp`, is fsynced and renamed over, so a crash leaves the old content or the new one.
//! Readers need no lock.
//!
//! A [`Failure`] is named by each store in its own error type.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How long a write waits for a peer's lock.
pub(super) const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a held lock is retried.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(2);

/// Why a [`CasFile`] could not be read or written.
#[derive(Debug)]
pub(super) enum Failure {
    /// An I/O error: on `path`, while doing `what`.
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    /// A peer held the lock file `path` for longer than [`LOCK_TIMEOUT`].
    LockTimeout { path: PathBuf },
}

/// Only the generation, to compare versions without reading the rest.
#[derive(Debug, Deserialize)]
struct GenerationOnly {
    generation: u64,
}

/// A file beside the lease file, written by compare-and-swap. See the [module documentation](self).
#[derive(Debug, Clone)]
pub(super) struct CasFile {
    path: PathBuf,
    lock_path: PathBuf,
    temp_path: PathBuf,
    dir: PathBuf,
}

impl CasFile {
    /// `LEASE<suffix>` beside the lease file `lease`, with its lock file and its temporary file.
    pub(super) fn beside(lease: &Path, suffix: &str) -> CasFile {
        let with = |suffix: &str| {
            let mut name = lease.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let dir = match lease.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        CasFile {
            path: with(suffix),
            lock_path: with(&format!("{suffix}.lock")),
            temp_path: with(&format!("{suffix}.tmp")),
            dir,
        }
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory that holds it.
    #[cfg(test)]
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file's content; `None` if there is no file.
    pub(super) fn read_bytes(&self) -> Result<Option<Vec<u8>>, Failure> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_failure(&self.path, "reading", e)),
        }
    }

    /// Under the lock, writes `content(generation)` with the next generation if the file's version (as
    /// `version_of` reads it from the content) is still `version` (`None`: if there is no file). The
    /// generation written, or `None` on a conflict.
    pub(super) async fn compare_and_swap<T: Serialize>(
        &self,
        version: Option<&str>,
        version_of: fn(&[u8]) -> String,
        content: impl FnOnce(u64) -> T,
    ) -> Result<Option<u64>, Failure> {
        let _lock = self.lock().await?;
        let current = self.read_bytes()?.map(|bytes| version_of(&bytes));
        if current.as_deref() != version {
            return Ok(None);
        }
        let generation = current.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        self.write(&content(generation))?;
        Ok(Some(generation))
    }

    /// Holds the exclusive lock until the guard is dropped.
    async fn lock(&self) -> Result<Flock<File>, Failure> {
        let started = Instant::now();
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.lock_path)
                .map_err(|e| io_failure(&self.lock_path, "opening the lock file", e))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => return Ok(guard),
                Err((_, Errno::EWOULDBLOCK)) => {}
                Err((_, errno)) => {
                    return Err(io_failure(&self.lock_path, "locking", errno.into()))
                }
            }
            if started.elapsed() >= LOCK_TIMEOUT {
                return Err(Failure::LockTimeout {
                    path: self.lock_path.clone(),
                });
            }
            tokio::time::sleep(LOCK_RETRY_INTERVAL).await;
        }
    }

    fn write(&self, content: &impl Serialize) -> Result<(), Failure> {
        let mut json = serde_json::to_vec_pretty(content)
            .map_err(|e| io_failure(&self.path, "encoding", io::Error::other(e)))?;
        json.push(b'\n');
        let temp = &self.temp_path;
        let mut file = File::create(temp).map_err(|e| io_failure(temp, "creating", e))?;
        file.write_all(&json)
            .map_err(|e| io_failure(temp, "writing", e))?;
        file.sync_all()
            .map_err(|e| io_failure(temp, "syncing", e))?;
        fs::rename(temp, &self.path).map_err(|e| io_failure(&self.path, "renaming over", e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_failure(&self.dir, "syncing the directory", e))
    }
}

/// The generation in a file's content as its version; one that matches nothing written (`corrupt`) if it
/// cannot be read.
pub(super) fn version_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<GenerationOnly>(bytes)
        .map(|g| g.generation.to_string())
        .unwrap_or_else(|_| "corrupt".to_owned())
}

fn io_failure(path: &Path, what: &'static str, source: io::Error) -> Failure {
    Failure::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}
