//! A watch of one file through inotify on its directory, read on tokio's reactor: the jobs file, the
//! controls file and the lease file each have one.
//!
//! The directory is watched rather than the file, because the file is replaced (a rename: an editor's
//! save, kubelet's swap of a ConfigMap volume's `..data`, every write of the lease file) or removed, and a
//! watch of an inode would stay on the old one. The mask holds only what can change what reading the file
//! returns: a write closed ([`WatchMask::CLOSE_WRITE`]), a name created, removed or renamed in or out, a
//! mode changed, and the directory itself removed or moved. Opens, reads and each `write(2)` of a write in
//! progress raise nothing, so a process that reads the file, or writes another file in the directory in
//! place, does not wake the watch (the lease file's renewals and reads used to wake each watch of its
//! directory some ten times a second). A file written without being closed (a writer that keeps it open)
//! is seen by the owner's poll.
//!
//! A file that is a symlink into another directory (`jobs.yaml -> /etc/leasecron/jobs.yaml`) has that
//! directory watched too, for the target's name: an edit of the target is seen as an edit of the file.
//!
//! No thread of its own: the inotify descriptor is registered with tokio's reactor, and a task forwards
//! the events about the file (its name, or a name starting with `..`, kubelet's) to the owner's callback.
//! A queue overflow, a read error and the directory's removal are forwarded too: each may hide a change,
//! and the owner then reads the file and checks [`DirWatch::is_current`] (a removed directory ends the
//! watch; the owner sets up a new one on the directory now at the path).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// What the watch asks the kernel for: see the [module documentation](self).
const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// How often the feeds of the jobs file and of the controls file re-read their file while it is watched:
/// for what inotify cannot see (a write from another machine on a network file system, a writer that
/// keeps the file open).
pub const WATCHED_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// How often they re-read it while it cannot be watched (inotify limits, a file system without it).
pub const UNWATCHED_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Bytes read from the descriptor at once: room for some 60 events with names of 50 bytes.
const BUFFER: usize = 4096;

/// A running watch; dropping it ends it.
#[derive(Debug)]
pub(crate) struct DirWatch {
    dir: PathBuf,
    /// The directory's device and inode when the watch was set up.
    identity: Option<(u64, u64)>,
    /// What happened to the watch since it was set up.
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl DirWatch {
    /// Watches the directory of the file at `path` and calls `on_change` after each batch of events about
    /// the file (or events that may hide one). Must be called within a tokio runtime.
    ///
    /// # Errors
    /// The path has no file name, or inotify refused (its limits, a file system without it, no such
    /// directory).
    pub(crate) fn start(
        path: &Path,
        on_change: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<DirWatch> {
        let not_a_file = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            )
        };
        let name = path.file_name().ok_or_else(not_a_file)?.to_os_string();
        let dir = match path.parent() {
            Some(dir) if dir.as_os_str().is_empty() => PathBuf::from("."),
            Some(dir) => dir.to_path_buf(),
            None => return Err(not_a_file()),
        };
        let identity = dir_identity(&dir);
        let inotify = Inotify::init()?;
        let mut names = vec![(inotify.watches().add(&dir, MASK)?, name)];
        // A symlink's target elsewhere: its directory too (a target that cannot be watched is left to
        // the owner's poll, as before the link was followed).
        if let Ok(target) = std::fs::canonicalize(path) {
            let target_dir = target.parent().map(Path::to_path_buf);
            let canonical_dir = std::fs::canonicalize(&dir).ok();
            if let (Some(target_dir), Some(target_name)) = (target_dir, target.file_name()) {
                if canonical_dir.as_ref() != Some(&target_dir) {
                    if let Ok(wd) = inotify.watches().add(&target_dir, MASK) {
                        names.push((wd, target_name.to_os_string()));
                    }
                }
            }
        }
        let events = inotify.into_event_stream(vec![0_u8; BUFFER])?;
        let state = Arc::new(State::default());
        let task = tokio::spawn(forward(events, names, Arc::clone(&state), on_change));
        Ok(DirWatch {
            dir,
            identity,
            state,
            task,
        })
    }

    /// The watched directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if the watch still runs on the directory now at its path (not replaced, not removed), and on
    /// the directory of the symlink's target it found (not removed: kubelet removes the version directory
    /// that `..data` pointed to at each update). A watch that is not current is set up again.
    pub(crate) fn is_current(&self) -> bool {
        self.is_alive()
            && !self.state.stale.load(Ordering::Relaxed)
            && self.identity.is_some()
            && dir_identity(&self.dir) == self.identity
    }

    /// True until the watch ended by itself (its directory removed or moved, the descriptor failed): a
    /// change after that is seen by nothing but the poll.
    pub(crate) fn is_alive(&self) -> bool {
        !self.state.ended.load(Ordering::Relaxed)
    }
}

/// For the feeds: a watch of `path` that sends `()` on `events` for each change, or `None` (logged at
/// warn, naming the file `what`: "jobs file") if it cannot be set up: the feed then polls.
fn feed_watch(
    path: &Path,
    events: &tokio::sync::mpsc::UnboundedSender<()>,
    what: &'static str,
) -> Option<DirWatch> {
    let sender = events.clone();
    match DirWatch::start(path, move || {
        // The feed stopped: the watch ends with it.
        let _ = sender.send(());
    }) {
        Ok(watch) => {
            tracing::debug!(dir = %watch.dir().display(), "watching the {what}'s directory");
            Some(watch)
        }
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %error,
                poll_interval_seconds = UNWATCHED_POLL_INTERVAL.as_secs_f64(),
                "{what}: cannot watch its directory for changes; re-reading it periodically"
            );
            None
        }
    }
}

/// For the feeds: `watch` if it is still current, else a new one (`what` as for [`feed_watch`]).
pub(crate) fn renew_feed_watch(
    watch: Option<DirWatch>,
    path: &Path,
    events: &tokio::sync::mpsc::UnboundedSender<()>,
    what: &'static str,
) -> Option<DirWatch> {
    match watch {
        Some(watch) if watch.is_current() => Some(watch),
        _ => feed_watch(path, events, what),
    }
}

/// What happened to a watch, told by its task.
#[derive(Debug, Default)]
struct State {
    /// The watch ended: the directory was removed or moved, or the descriptor failed.
    ended: AtomicBool,
    /// The directory of the symlink's target was removed or moved; the watch of the file's own directory
    /// goes on.
    stale: AtomicBool,
}

/// For the feeds: how long until the next re-read, as `watch` is set up or not.
pub(crate) fn poll_interval(watch: Option<&DirWatch>) -> Duration {
    if watch.is_some() {
        WATCHED_POLL_INTERVAL
    } else {
        UNWATCHED_POLL_INTERVAL
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Calls `on_change` once for each read of the descriptor that brought events about the file named for
/// their watch in `names` (the file's own directory first), or events that may hide one, until the file's
/// directory goes away or the descriptor fails.
async fn forward(
    mut events: inotify::EventStream<Vec<u8>>,
    names: Vec<(WatchDescriptor, OsString)>,
    state: Arc<State>,
    on_change: impl Fn(),
) {
    let gone_mask = EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF;
    loop {
        let Some(first) = events.next().await else {
            break;
        };
        // The stream hands out one event at a time from its buffer: take what is already read, then
        // call back once for the batch.
        let mut relevant = false;
        let mut gone = false;
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                Ok(event) => {
                    let watch = names.iter().position(|(wd, _)| *wd == event.wd);
                    // An event of no watch of ours (one removed) may still hide a change: look.
                    relevant |= watch.is_none_or(|watch| {
                        concerns(event.mask, event.name.as_deref(), &names[watch].1)
                    });
                    if event.mask.intersects(gone_mask) {
                        match watch {
                            Some(0) => gone = true,
                            _ => state.stale.store(true, Ordering::Relaxed),
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "reading the directory watch failed");
                    relevant = true;
                    gone = true;
                }
            }
            next = futures_util::FutureExt::now_or_never(events.next()).flatten();
        }
        if gone {
            state.ended.store(true, Ordering::Relaxed);
        }
        if relevant {
            on_change();
        }
        if gone {
            break;
        }
    }
    state.ended.store(true, Ordering::Relaxed);
}

/// True if an event with `mask` about `event_name` (none: the directory itself) may change what reading
/// the file `name` returns.
fn concerns(mask: EventMask, event_name: Option<&std::ffi::OsStr>, name: &OsString) -> bool {
    if mask.intersects(EventMask::Q_OVERFLOW) {
        return true;
    }
    match event_name {
        // The directory itself: removed, moved, or its watch ended.
        None => true,
        Some(event_name) => event_name == name || event_name.as_encoded_bytes().starts_with(b".."),
    }
}

/// The device and inode of a directory, to notice that it was replaced.
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A watch of `dir/name` that counts its callbacks.
    fn counting(path: &Path) -> (DirWatch, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        let watch = DirWatch::start(path, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .expect("inotify");
        (watch, count)
    }

    /// Waits (real time: inotify is the kernel's) until `count` is above `above`; false after 5 s.
    async fn grows(count: &AtomicUsize, above: usize) -> bool {
        for _ in 0..500 {
            if count.load(Ordering::SeqCst) > above {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn changes_to_the_file_are_seen_and_reads_or_other_files_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "a").expect("write");
        let (watch, count) = counting(&path);
        assert_eq!(watch.dir(), dir.path());

        // Reads, and another file written in place and read, wake nothing.
        let other = dir.path().join("lease");
        std::fs::write(&other, "x").expect("write");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&other)
            .expect("open");
        std::io::Write::write_all(&mut file, b"y").expect("append");
        std::fs::read(&path).expect("read");
        std::fs::read(&other).expect("read");
        // A change to the file after them is the only callback (one batch or more).
        std::fs::write(&path, "b").expect("write");
        assert!(grows(&count, 0).await, "the write was seen");
        let seen = count.load(Ordering::SeqCst);
        drop(file);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Closing the other file after a write is a CLOSE_WRITE about another name: nothing.
        assert_eq!(count.load(Ordering::SeqCst), seen);

        // A rename over the file (an editor's save, kubelet's `..data` swap) and a removal are seen.
        let temp = dir.path().join("jobs.yaml.tmp");
        std::fs::write(&temp, "c").expect("write");
        std::fs::rename(&temp, &path).expect("rename");
        assert!(grows(&count, seen).await, "the rename was seen");
        let seen = count.load(Ordering::SeqCst);
        std::fs::remove_file(&path).expect("remove");
        assert!(grows(&count, seen).await, "the removal was seen");
        let seen = count.load(Ordering::SeqCst);
        std::fs::create_dir(dir.path().join("..2026_12_06")).expect("mkdir");
        assert!(grows(&count, seen).await, "kubelet's names are seen");
        assert!(watch.is_current());
    }

    #[tokio::test]
    async fn an_edit_of_a_symlinks_target_elsewhere_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let target = elsewhere.path().join("real.yaml");
        std::fs::write(&target, "a").expect("write");
        let link = dir.path().join("jobs.yaml");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let (_watch, count) = counting(&link);
        std::fs::write(elsewhere.path().join("other"), "x").expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "another file there is not the target"
        );
        std::fs::write(&target, "b").expect("write");
        assert!(grows(&count, 0).await, "the target's edit was seen");
    }

    #[tokio::test]
    async fn a_removed_target_directory_makes_the_watch_stale_but_it_goes_on() {
        // kubelet's layout: jobs.yaml -> ..data/jobs.yaml, ..data -> ..VERSION; an update swaps ..data
        // and removes the old version's directory.
        let dir = tempfile::tempdir().expect("tempdir");
        let version = |n: u32| dir.path().join(format!("..v{n}"));
        std::fs::create_dir(version(1)).expect("mkdir");
        std::fs::write(version(1).join("jobs.yaml"), "a").expect("write");
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).expect("symlink");
        let path = dir.path().join("jobs.yaml");
        std::os::unix::fs::symlink("..data/jobs.yaml", &path).expect("symlink");
        let (watch, count) = counting(&path);
        assert!(watch.is_current());

        std::fs::create_dir(version(2)).expect("mkdir");
        std::fs::write(version(2).join("jobs.yaml"), "b").expect("write");
        std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).expect("symlink");
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
        std::fs::remove_dir_all(version(1)).expect("rm");
        assert!(grows(&count, 0).await, "the swap was seen");
        for _ in 0..100 {
            if !watch.is_current() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!watch.is_current(), "set up again to follow the new target");
        assert!(watch.is_alive(), "still watching the file's own directory");
        let seen = count.load(Ordering::SeqCst);
        std::fs::rename(dir.path().join("..data"), dir.path().join("..data_old")).expect("mv");
        assert!(grows(&count, seen).await, "the next update is still seen");
    }

    #[tokio::test]
    async fn a_removed_directory_ends_the_watch() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("conf");
        std::fs::create_dir(&dir).expect("mkdir");
        let (watch, count) = counting(&dir.join("jobs.yaml"));
        assert!(watch.is_current());
        std::fs::remove_dir(&dir).expect("rmdir");
        assert!(grows(&count, 0).await, "the removal was passed on");
        assert!(!watch.is_current());
        assert!(!watch.is_alive());
        // Even with a directory of the same name back.
        std::fs::create_dir(&dir).expect("mkdir");
        assert!(!watch.is_current());
    }

    #[tokio::test]
    async fn a_path_without_a_file_name_is_refused() {
        let error = DirWatch::start(Path::new("/"), || {}).expect_err("no file name");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let missing = DirWatch::start(Path::new("/nonexistent-leasecron/jobs.yaml"), || {})
            .expect_err("no directory");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn only_the_file_kubelets_names_and_the_directory_concern_the_watch() {
        let name = OsString::from("jobs.yaml");
        let close = EventMask::CLOSE_WRITE;
        assert!(concerns(close, Some("jobs.yaml".as_ref()), &name));
        assert!(concerns(
            EventMask::MOVED_TO,
            Some("..data".as_ref()),
            &name
        ));
        assert!(!concerns(close, Some("lease.tmp".as_ref()), &name));
        assert!(!concerns(close, Some("jobs.yaml.tmp".as_ref()), &name));
        assert!(concerns(EventMask::DELETE_SELF, None, &name));
        assert!(concerns(EventMask::Q_OVERFLOW, None, &name));
    }
}
