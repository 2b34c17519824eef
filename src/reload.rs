//! Live reload of the jobs: a source publishes the jobs text whenever it changes; the [`Reloader`] checks
//! it and hands a valid version to the dispatcher, which applies it by diff.
//!
//! Two sources, each a task that writes [`Snapshot`]s into a `watch` channel (latest wins, so a storm of
//! changes costs one parse per version the reloader gets to see, and the last version always applies):
//!
//! - [`jobs_file`](crate::local::jobs_file): the mounted jobs file, watched through inotify on its directory (kubelet swaps the `..data`
//!   symlink of a ConfigMap volume; editors write in place or rename over the file), debounced, with a
//!   periodic re-read as the fallback for everything a watch can miss;
//! - [`jobs_configmap`](crate::kubernetes::jobs_configmap): the ConfigMap itself, through a watch on the Kubernetes API (no kubelet sync delay).
//!
//! Each source also re-reads at once when asked through its [`Reread`] handle: `run` asks on SIGHUP, the
//! daemon convention for "re-read your configuration" (the file is read again; the ConfigMap is read
//! again with a GET, and watched again from there).
//!
//! The [`Reloader`] never lets a bad version in: an unreadable or invalid text is logged (every
//! diagnostic, `FILE:LINE:COL`), counted and reported as an Event through the observers, and the last good
//! jobs stay in force until the next valid version. Every replica reloads, leader or not, so a new leader
//! starts with the latest jobs.

use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{self, JobSet, LoadOptions};
use crate::event::ConfigReload;
use crate::observe::Observers;

/// One version of the jobs text, as a source last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Names the source in diagnostics: the file's path, or `configmap/NAMESPACE/NAME/KEY`.
    pub origin: String,
    /// The text, or why there is none (the file is missing, the ConfigMap or its key was deleted).
    pub text: Result<String, String>,
}

/// Asks a source to re-read the jobs now, whatever its watch says (on SIGHUP). Clones share one request.
///
/// A request made while the source is busy, or before it started, is kept, and requests made meanwhile
/// count as one: the source re-reads once, at its next chance.
#[derive(Debug, Clone, Default)]
pub struct Reread(Arc<Notify>);

impl Reread {
    /// A handle no one has asked through yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the source to re-read now.
    pub fn request(&self) {
        self.0.notify_one();
    }

    /// Completes when a re-read was asked for (at once if one is pending), taking the request.
    /// Cancel-safe: a request taken by a dropped future is kept for the next call.
    pub async fn requested(&self) {
        self.0.notified().await;
    }
}

/// Checks each new [`Snapshot`] and publishes the valid ones as the jobs in force.
pub struct Reloader {
    opts: LoadOptions,
    jobs: watch::Sender<Arc<JobSet>>,
    observers: Observers,
    check: Option<JobSetCheck>,
}

/// A check of a valid job set against what the rest of the replica can hold (the run state's capacity):
/// `Err(why)` refuses it.
pub type JobSetCheck = Box<dyn Fn(&JobSet) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("opts", &self.opts)
            .field("check", &self.check.is_some())
            .finish_non_exhaustive()
    }
}

// === impl Reloader ===

impl Reloader {
    /// A reloader that validates with `opts` (the lease timings' grace bound) and publishes on `jobs`.
    pub fn new(opts: LoadOptions, jobs: watch::Sender<Arc<JobSet>>, observers: Observers) -> Self {
        Self {
            opts,
            jobs,
            observers,
            check: None,
        }
    }

    /// Also refuses a valid job set that `check` refuses, keeping the jobs in force.
    #[must_use]
    pub fn with_check(mut self, check: JobSetCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Applies every new snapshot until `stop` is cancelled or the source is gone.
    ///
    /// The snapshot in the channel when this starts counts as seen: it is the one the jobs in force were
    /// loaded from.
    pub async fn run(self, mut snapshots: watch::Receiver<Snapshot>, stop: CancellationToken) {
        snapshots.mark_unchanged();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                changed = snapshots.changed() => if changed.is_err() {
                    return;
                },
            }
            let snapshot = snapshots.borrow_and_update().clone();
            self.apply(&snapshot);
        }
    }

    /// Checks one snapshot; publishes its jobs if valid, else reports why and keeps the jobs in force.
    pub fn apply(&self, snapshot: &Snapshot) {
        let origin = &snapshot.origin;
        let text = match &snapshot.text {
            Ok(text) => text,
            Err(why) => {
                tracing::error!(source = %origin, error = %why, "cannot reload the jobs; keeping the jobs in force");
                self.fail(origin, format!("{origin}: {why}"));
                return;
            }
        };
        let parsed = config::parse_str(text, origin, &self.opts);
        if let (Ok(jobs), Some(check)) = (&parsed, &self.check) {
            if let Err(why) = check(jobs) {
                tracing::error!(source = %origin, jobs = jobs.jobs.len(), error = %why, "the new jobs are refused; keeping the jobs in force");
                self.fail(origin, format!("{origin}: {why}"));
                return;
            }
        }
        match parsed {
            Ok(jobs) => {
                let hash = content_hash(text);
                let count = jobs.jobs.len();
                tracing::info!(source = %origin, jobs = count, hash = %format!("{hash:016x}"), "new jobs version is valid; applying it");
                self.jobs.send_replace(Arc::new(jobs));
                self.observers.config_reload(&ConfigReload::Applied {
                    origin: origin.clone(),
                    hash,
                    jobs: count,
                    initial: false,
                });
            }
            Err(config::Error::Invalid(diagnostics)) => {
                for diagnostic in diagnostics.iter() {
                    tracing::error!("{diagnostic}");
                }
                tracing::error!(
                    source = %origin,
                    problems = diagnostics.len(),
                    "the new jobs are invalid; keeping the jobs in force"
                );
                self.fail(origin, diagnostics.to_string());
            }
            Err(e @ (config::Error::Read { .. } | config::Error::TooLarge { .. })) => {
                tracing::error!(error = %e, "cannot reload the jobs; keeping the jobs in force");
                self.fail(origin, e.to_string());
            }
        }
    }

    fn fail(&self, origin: &str, message: String) {
        self.observers.config_reload(&ConfigReload::Failed {
            origin: origin.to_owned(),
            message,
        });
    }
}

/// Publishes `snapshot` on `out` if it differs from the one there (a source's unchanged re-read costs
/// the reloader nothing); true if it did.
pub(crate) fn publish(out: &watch::Sender<Snapshot>, snapshot: Snapshot) -> bool {
    out.send_if_modified(|current| {
        if *current == snapshot {
            return false;
        }
        *current = snapshot;
        true
    })
}

/// A stable 64-bit hash of the jobs text (FNV-1a), to compare replicas' versions in `/status`, in
/// `leasecron_config_info` and in `leasecron_config_hash`: equal texts give equal hashes on every replica and
/// every build.
pub fn content_hash(text: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observer;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<ConfigReload>>);

    impl Observer for Recorder {
        fn on_run(&self, _: &crate::event::RunEvent) {}
        fn on_election(&self, _: &crate::event::ElectionEvent) {}
        fn on_config_reload(&self, reload: &ConfigReload) {
            self.0.lock().expect("not poisoned").push(reload.clone());
        }
    }

    fn reloader() -> (Reloader, watch::Receiver<Arc<JobSet>>, Arc<Recorder>) {
        let (tx, rx) = watch::channel(Arc::new(JobSet::default()));
        let recorder = Arc::new(Recorder::default());
        let mut observers = Observers::new();
        observers.push(Arc::clone(&recorder) as Arc<dyn Observer>);
        let opts = LoadOptions {
            max_termination_grace: std::time::Duration::from_secs(3),
        };
        (Reloader::new(opts, tx, observers), rx, recorder)
    }

    fn snapshot(text: &str) -> Snapshot {
        Snapshot {
            origin: "jobs.yaml".to_owned(),
            text: Ok(text.to_owned()),
        }
    }

    const ONE_JOB: &str = "jobs:\n  - name: a\n    schedule: \"@hourly\"\n    shell: \"true\"\n";

    #[test]
    fn a_valid_version_is_published_and_reported() {
        let (reloader, jobs, recorder) = reloader();
        reloader.apply(&snapshot(ONE_JOB));
        assert_eq!(jobs.borrow().jobs.len(), 1);
        let reports = recorder.0.lock().expect("not poisoned");
        assert!(matches!(
            reports.as_slice(),
            [ConfigReload::Applied { jobs: 1, initial: false, hash, .. }] if *hash == content_hash(ONE_JOB)
        ));
    }

    #[test]
    fn a_version_the_check_refuses_keeps_the_jobs_in_force_and_says_why() {
        let (reloader, jobs, recorder) = reloader();
        let reloader = reloader.with_check(Box::new(|jobs: &JobSet| {
            if jobs.jobs.len() > 1 {
                Err(format!("{} jobs are too many", jobs.jobs.len()))
            } else {
                Ok(())
            }
        }));
        reloader.apply(&snapshot(ONE_JOB));
        let two = format!("{ONE_JOB}  - name: b\n    schedule: \"@hourly\"\n    shell: \"true\"\n");
        reloader.apply(&snapshot(&two));
        assert_eq!(jobs.borrow().jobs.len(), 1, "the jobs in force stay");
        let reports = recorder.0.lock().expect("not poisoned");
        let [ConfigReload::Applied { jobs: 1, .. }, ConfigReload::Failed { message, .. }] =
            reports.as_slice()
        else {
            panic!("expected an applied then a refused reload, got {reports:?}");
        };
        assert_eq!(message, "jobs.yaml: 2 jobs are too many");
    }

    #[test]
    fn an_invalid_version_keeps_the_jobs_in_force_and_names_the_place() {
        let (reloader, jobs, recorder) = reloader();
        reloader.apply(&snapshot(ONE_JOB));
        reloader.apply(&snapshot(
            "jobs:\n  - name: a\n    schedule: \"@hourly\"\n    comand: [\"true\"]\n",
        ));
        assert_eq!(jobs.borrow().jobs[0].name, "a");
        let reports = recorder.0.lock().expect("not poisoned");
        let [_, ConfigReload::Failed { message, .. }] = reports.as_slice() else {
            panic!("expected an applied then a failed reload, got {reports:?}");
        };
        assert!(message.contains("jobs.yaml:4:5"), "{message}");
    }

    #[test]
    fn a_missing_text_is_a_failure_that_keeps_the_jobs() {
        let (reloader, jobs, recorder) = reloader();
        reloader.apply(&snapshot(ONE_JOB));
        reloader.apply(&Snapshot {
            origin: "jobs.yaml".to_owned(),
            text: Err("cannot read: No such file or directory".to_owned()),
        });
        assert_eq!(jobs.borrow().jobs.len(), 1);
        let reports = recorder.0.lock().expect("not poisoned");
        assert!(
            matches!(&reports[1], ConfigReload::Failed { message, .. } if message.starts_with("jobs.yaml: cannot read"))
        );
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(content_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(content_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            content_hash(ONE_JOB),
            content_hash(&ONE_JOB.replace('a', "b"))
        );
    }

    #[test]
    fn publishing_the_same_text_is_not_a_change() {
        let first = Snapshot {
            origin: "f".to_owned(),
            text: Ok("a".to_owned()),
        };
        let (tx, mut rx) = watch::channel(first.clone());
        rx.mark_unchanged();
        assert!(!publish(&tx, first.clone()));
        assert!(!rx.has_changed().expect("open"));
        assert!(publish(
            &tx,
            Snapshot {
                text: Ok("b".to_owned()),
                ..first
            },
        ));
        assert!(rx.has_changed().expect("open"));
    }

    #[tokio::test]
    async fn a_reread_asked_before_anyone_waits_is_kept_and_several_count_as_one() {
        let reread = Reread::new();
        reread.request();
        reread.clone().request();
        tokio::time::timeout(std::time::Duration::from_secs(30), reread.requested())
            .await
            .expect("the pending request completes at once");
        // Taken: the next wait waits for the next request.
        let next = tokio::spawn({
            let reread = reread.clone();
            async move { reread.requested().await }
        });
        tokio::task::yield_now().await;
        assert!(!next.is_finished());
        reread.request();
        tokio::time::timeout(std::time::Duration::from_secs(30), next)
            .await
            .expect("the request wakes the waiter")
            .expect("no panic");
    }
}
