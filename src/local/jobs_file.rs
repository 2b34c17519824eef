//! The jobs file as a reload source: an inotify watch on its directory (`local::dir_watch`),
//! debounced, with a periodic re-read as the fallback.
//!
//! Why the directory and not the file: kubelet updates a ConfigMap volume by writing a new timestamped
//! directory and atomically renaming a `..data_tmp` symlink over `..data`; `jobs.yaml` is itself a symlink
//! `jobs.yaml -> ..data/jobs.yaml` and is never written. A watch on the file (its inode) would see
//! nothing; a watch on the directory sees the rename. Editors save in place (close-write) or write
//! a temporary file and rename it over the original: both are events in the directory too. A jobs file that
//! is a symlink into another directory has that directory watched too.
//!
//! Events are filtered to the file's own name and kubelet's `..`-prefixed entries, then debounced: the
//! file is read once the directory has been quiet for [`DEBOUNCE_QUIET`], or at the latest
//! [`DEBOUNCE_MAX`] after the first event of a burst (so a never-ending storm still applies). A read
//! publishes a [`Snapshot`] only if the text differs from the last one, so spurious events cost a read of a
//! small file and nothing else.
//!
//! The periodic re-read catches what a watch cannot: a write from another machine on a network file
//! system, a writer that keeps the file open. It comes every [`WATCHED_POLL_INTERVAL`] while the directory
//! is watched, and every [`POLL_INTERVAL`] while it cannot be (inotify limits). Every read also sets the
//! watch up again if it is missing or the directory was replaced or removed (the watch reports that).
//!
//! A [`Reread`] request (SIGHUP) reads the file at once, as an event would, and re-establishes the watch
//! if needed, as the periodic re-read does; if the text is unchanged, that is logged, since nothing else
//! would answer the request.
//!
//! A save is not always one write: an editor or a script that truncates the file and then writes it in
//! pieces leaves it empty or half-written for a moment, and a read then may land in between. So a new
//! version that fails the caller's check ([`Options::is_valid`]) is read once more, [`SETTLE_DELAY`]
//! later, and that read is the version published: a slow save costs one delay, not a rejected version and
//! two errors in the log. A version that is still invalid then is published, and reported, as it is.
//!
//! Every read is bounded ([`Options::max_size`]): a file that grew past it reads as an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::local::dir_watch::{self, renew_feed_watch, DirWatch};
use crate::reload::{publish, Reread, Snapshot};

/// How long the directory must be quiet before the file is read.
pub const DEBOUNCE_QUIET: Duration = Duration::from_millis(20);
/// The longest a burst of events delays a read.
pub const DEBOUNCE_MAX: Duration = Duration::from_millis(250);
/// How often the file is re-read while its directory cannot be watched.
pub const POLL_INTERVAL: Duration = dir_watch::UNWATCHED_POLL_INTERVAL;
/// How often the file is re-read all the same while its directory is watched.
pub const WATCHED_POLL_INTERVAL: Duration = dir_watch::WATCHED_POLL_INTERVAL;
/// How long a new version that fails the check is given to settle before it is read once more.
pub const SETTLE_DELAY: Duration = Duration::from_millis(300);

/// Whether a text is a version worth applying; see [`Options::is_valid`].
pub type Check = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How [`watch_with`] reads the file.
#[derive(Clone)]
pub struct Options {
    /// The largest file read; a larger one reads as an error ([`config::Error::TooLarge`]).
    pub max_size: u64,
    /// Whether a text is valid: a new version that is not is read again after [`SETTLE_DELAY`] before
    /// it is published. `None`: every version is published as read.
    pub is_valid: Option<Check>,
}

impl Default for Options {
    /// The commands' default size bound, and no check.
    fn default() -> Self {
        Options {
            max_size: config::DEFAULT_MAX_FILE_SIZE,
            is_valid: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("max_size", &self.max_size)
            .field("is_valid", &self.is_valid.is_some())
            .finish()
    }
}

/// Reads the jobs file as a [`Snapshot`] (for the load at start, and for every check), bounded by
/// [`config::DEFAULT_MAX_FILE_SIZE`].
pub async fn read(path: &Path) -> Snapshot {
    read_at_most(path, config::DEFAULT_MAX_FILE_SIZE).await
}

/// Reads the jobs file as a [`Snapshot`], at most `max_size` bytes of it.
pub(crate) async fn read_at_most(path: &Path, max_size: u64) -> Snapshot {
    let owned = path.to_path_buf();
    let text = match tokio::task::spawn_blocking(move || config::read_text(&owned, max_size)).await
    {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(config::Error::Read { source, .. })) => {
            Err(format!("cannot read the jobs file: {source}"))
        }
        Ok(Err(config::Error::TooLarge { limit, .. })) => Err(format!(
            "the file is larger than {}, the most leasecron reads as a jobs file (--max-file-size)",
            config::format_size(limit)
        )),
        // Not UTF-8: the diagnostic names the line and column.
        Ok(Err(error @ config::Error::Invalid(_))) => Err(error.to_string()),
        Err(join) => Err(format!("cannot read the jobs file: {join}")),
    };
    Snapshot {
        origin: path.display().to_string(),
        text,
    }
}

/// Watches the jobs file at `path` and publishes every new version on `out` until `stop` is cancelled;
/// reads it at once whenever `reread` asks. [`watch_with`] with the default [`Options`].
///
/// `out` holds the version in force; only a differing text is published.
pub async fn watch(
    path: PathBuf,
    out: watch::Sender<Snapshot>,
    reread: Reread,
    stop: CancellationToken,
) {
    watch_with(path, out, reread, stop, Options::default()).await;
}

/// [`watch()`], reading the file as `options` say: bounded, and a new version that fails the check read
/// once more after [`SETTLE_DELAY`] before it is published.
pub async fn watch_with(
    path: PathBuf,
    out: watch::Sender<Snapshot>,
    reread: Reread,
    stop: CancellationToken,
    options: Options,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watch = None;
    // Read at once: a change between the load at start and the watch being set up would otherwise wait
    // for the poll. Then again on each wake-up, saying whether it was asked for.
    let mut requested = false;
    loop {
        let Some(snapshot) = watched_read(
            &mut watch,
            &path,
            &events_tx,
            &out,
            &mut events,
            &options,
            &stop,
        )
        .await
        else {
            return;
        };
        let changed = publish(&out, snapshot);
        if requested && !changed {
            tracing::info!(source = %path.display(), "re-read the jobs file on request: unchanged");
        }
        let next_poll = Instant::now() + dir_watch::poll_interval(watch.as_ref());
        requested = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            () = reread.requested() => true,
            Some(()) = events.recv() => {
                if !debounce(&mut events, &stop).await {
                    return;
                }
                false
            }
            () = tokio::time::sleep_until(next_poll) => false,
        };
    }
}

/// Sets the watch up again if it is not current, then reads the file ([`settled_read`]); reads it once
/// more if the watch ended meanwhile (its directory removed), since nothing watched the file after that.
/// `None` if stopped meanwhile.
async fn watched_read(
    watch: &mut Option<DirWatch>,
    path: &Path,
    events_tx: &mpsc::UnboundedSender<()>,
    out: &watch::Sender<Snapshot>,
    events: &mut mpsc::UnboundedReceiver<()>,
    options: &Options,
    stop: &CancellationToken,
) -> Option<Snapshot> {
    loop {
        *watch = renew_feed_watch(watch.take(), path, events_tx, "jobs file");
        let snapshot = settled_read(path, out, events, options, stop).await?;
        if watch.as_ref().is_none_or(DirWatch::is_alive) {
            return Some(snapshot);
        }
    }
}

/// Reads the file. A new version (not the one in `out`) that fails the check of `options` is read once
/// more after [`SETTLE_DELAY`], and that read is returned: the events that came meanwhile are taken, as
/// it covers them. `None` if stopped meanwhile.
async fn settled_read(
    path: &Path,
    out: &watch::Sender<Snapshot>,
    events: &mut mpsc::UnboundedReceiver<()>,
    options: &Options,
    stop: &CancellationToken,
) -> Option<Snapshot> {
    let snapshot = read_at_most(path, options.max_size).await;
    let Some(is_valid) = &options.is_valid else {
        return Some(snapshot);
    };
    if *out.borrow() == snapshot {
        return Some(snapshot);
    }
    let valid = match &snapshot.text {
        // The check parses the whole file: off the runtime's threads.
        Ok(text) => {
            let (is_valid, text) = (Arc::clone(is_valid), text.clone());
            tokio::task::spawn_blocking(move || is_valid(&text))
                .await
                .unwrap_or(false)
        }
        Err(_) => false,
    };
    if valid {
        return Some(snapshot);
    }
    tracing::debug!(
        source = %path.display(),
        settle = ?SETTLE_DELAY,
        "the new version of the jobs file is invalid or unreadable; reading it once more in case it was \
         still being written"
    );
    tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        () = tokio::time::sleep(SETTLE_DELAY) => {}
    }
    while events.try_recv().is_ok() {}
    Some(read_at_most(path, options.max_size).await)
}

/// Waits until no event came for [`DEBOUNCE_QUIET`], or [`DEBOUNCE_MAX`] has passed; false if stopped.
/// (The controls file's feed, [`crate::local::controls`], debounces its events with it too.)
pub(crate) async fn debounce(
    events: &mut mpsc::UnboundedReceiver<()>,
    stop: &CancellationToken,
) -> bool {
    let limit = Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet_until = (Instant::now() + DEBOUNCE_QUIET).min(limit);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep_until(quiet_until) => return true,
            event = events.recv() => if event.is_none() || Instant::now() >= limit {
                return true;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_read_once_it_is_quiet() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send(()).expect("open");
            }
            // Keep the channel open past the debounce.
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(tx);
        });
        assert!(debounce(&mut rx, &stop).await);
        // The last event came at 25 ms; quiet for 20 ms after it.
        assert_eq!(start.elapsed(), Duration::from_millis(45));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_storm_is_read_after_the_longest_delay() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        assert!(debounce(&mut rx, &stop).await);
        assert_eq!(start.elapsed(), DEBOUNCE_MAX);
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_debounce() {
        let (_tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(!debounce(&mut rx, &stop).await);
    }

    #[tokio::test]
    async fn a_change_made_before_the_watch_started_is_published_without_waiting_for_the_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "new").expect("write");
        let loaded = Snapshot {
            origin: path.display().to_string(),
            text: Ok("loaded at start".to_owned()),
        };
        let (tx, mut rx) = watch::channel(loaded);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(path, tx, Reread::new(), stop.clone()));
        tokio::time::timeout(POLL_INTERVAL / 2, rx.changed())
            .await
            .expect("published before the first poll")
            .expect("open");
        assert_eq!(rx.borrow().text.as_deref(), Ok("new"));
        stop.cancel();
        task.await.expect("the watch stops");
    }

    #[tokio::test]
    async fn a_write_is_noticed_by_the_watch_not_the_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "one").expect("write");
        let (tx, mut rx) = watch::channel(read(&path).await);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(path.clone(), tx, Reread::new(), stop.clone()));
        // Let the watch be set up, then write.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&path, "two").expect("write");
        tokio::time::timeout(POLL_INTERVAL / 2, rx.changed())
            .await
            .expect("published before the first poll")
            .expect("open");
        assert_eq!(rx.borrow().text.as_deref(), Ok("two"));
        stop.cancel();
        task.await.expect("the watch stops");
    }

    /// A jobs file `jobs.yaml` holding "one" that is a symlink to a file in another directory, so that
    /// writes to it are not events of the watched directory: the directories (keep them), the target, the
    /// link.
    /// Writes `text` over the file at `path` and keeps it open: no event the watch asks for (a write
    /// is seen when it is closed). The write is seen once the returned file is dropped.
    fn written_still_open(path: &Path, text: &str) -> std::fs::File {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write");
        file
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_catches_what_the_watch_cannot_see() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "one").expect("write");
        let (tx, mut rx) = watch::channel(read(&path).await);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(path.clone(), tx, Reread::new(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let _writer = written_still_open(&path, "two");
        tokio::time::timeout(WATCHED_POLL_INTERVAL * 2, rx.changed())
            .await
            .expect("the poll reads it")
            .expect("open");
        assert_eq!(rx.borrow().text.as_deref(), Ok("two"));
        assert!(
            started.elapsed() >= WATCHED_POLL_INTERVAL - Duration::from_secs(1),
            "read by the poll, not by an event: {:?}",
            started.elapsed()
        );
        stop.cancel();
        task.await.expect("the watch stops");
    }

    #[tokio::test]
    async fn a_reread_request_reads_what_the_watch_cannot_see_without_waiting_for_the_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "one").expect("write");
        let (tx, mut rx) = watch::channel(read(&path).await);
        let reread = Reread::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(path.clone(), tx, reread.clone(), stop.clone()));
        // Let the watch read the file at its start, then write.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _writer = written_still_open(&path, "two");
        reread.request();
        tokio::time::timeout(POLL_INTERVAL / 2, rx.changed())
            .await
            .expect("published before the first poll")
            .expect("open");
        assert_eq!(rx.borrow().text.as_deref(), Ok("two"));
        stop.cancel();
        task.await.expect("the watch stops");
    }

    #[tokio::test]
    async fn an_edit_of_a_symlinks_target_in_another_directory_is_seen_at_once() {
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let target = elsewhere.path().join("real.yaml");
        std::fs::write(&target, "one").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let (tx, mut rx) = watch::channel(read(&path).await);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(path, tx, Reread::new(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&target, "two").expect("write");
        tokio::time::timeout(POLL_INTERVAL / 2, rx.changed())
            .await
            .expect("published before any poll")
            .expect("open");
        assert_eq!(rx.borrow().text.as_deref(), Ok("two"));
        stop.cancel();
        task.await.expect("the watch stops");
    }

    /// Valid when complete: the last line says so.
    fn complete_when_ended() -> Options {
        Options {
            max_size: 1024,
            is_valid: Some(Arc::new(|text: &str| text.ends_with("END\n"))),
        }
    }

    /// Every version `rx` gets within `wait`.
    async fn published(
        rx: &mut watch::Receiver<Snapshot>,
        wait: Duration,
    ) -> Vec<Result<String, String>> {
        let mut seen = Vec::new();
        let until = Instant::now() + wait;
        while let Ok(Ok(())) = tokio::time::timeout_at(until, rx.changed()).await {
            seen.push(rx.borrow_and_update().text.clone());
        }
        seen
    }

    #[tokio::test]
    async fn a_slow_save_is_published_once_complete_not_half_written() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "v1 END\n").expect("write");
        let (tx, mut rx) = watch::channel(read(&path).await);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_with(
            path.clone(),
            tx,
            Reread::new(),
            stop.clone(),
            complete_when_ended(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // An in-place save: truncate, then two writes 100 ms apart.
        let mut file = std::fs::File::create(&path).expect("truncate");
        file.write_all(b"v2 first half\n").expect("write");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(100)).await;
        file.write_all(b"v2 END\n").expect("write");
        drop(file);
        let seen = published(&mut rx, SETTLE_DELAY * 3).await;
        assert_eq!(seen, [Ok("v2 first half\nv2 END\n".to_owned())]);
        stop.cancel();
        task.await.expect("the watch stops");
    }

    #[tokio::test]
    async fn a_version_still_invalid_after_the_settle_delay_is_published_as_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "v1 END\n").expect("write");
        let (tx, mut rx) = watch::channel(read(&path).await);
        let reread = Reread::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_with(
            path.clone(),
            tx,
            reread.clone(),
            stop.clone(),
            complete_when_ended(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let written = Instant::now();
        std::fs::write(&path, "broken\n").expect("write");
        let seen = published(&mut rx, SETTLE_DELAY * 3).await;
        assert_eq!(seen, [Ok("broken\n".to_owned())]);
        assert!(written.elapsed() >= SETTLE_DELAY);
        // A request (SIGHUP) still reads at once; an unchanged text is not published again.
        std::fs::write(&path, "v3 END\n").expect("write");
        reread.request();
        let seen = published(&mut rx, SETTLE_DELAY).await;
        assert_eq!(seen, [Ok("v3 END\n".to_owned())]);
        stop.cancel();
        task.await.expect("the watch stops");
    }

    #[tokio::test]
    async fn a_file_over_the_size_limit_reads_as_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "x".repeat(2000)).expect("write");
        let snapshot = read_at_most(&path, 1024).await;
        assert_eq!(
            snapshot.text,
            Err(
                "the file is larger than 1 KiB, the most leasecron reads as a jobs file \
                 (--max-file-size)"
                    .to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_missing_file_reads_as_an_error_naming_the_path() {
        let snapshot = read(Path::new("/nonexistent/jobs.yaml")).await;
        assert_eq!(snapshot.origin, "/nonexistent/jobs.yaml");
        let why = snapshot.text.expect_err("missing");
        assert!(why.starts_with("cannot read the jobs file: "), "{why}");
    }
}
