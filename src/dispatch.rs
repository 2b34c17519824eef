//! The dispatcher: one timer task per job, and the rule that decides whether a fire starts a run.
//!
//! Every replica runs every job's timer (followers too, so `/status` and the metrics know the next fire),
//! but a fire starts a run only when this replica holds a **live** term: the term has not been ended and
//! the monotonic clock is before its deadline. The check happens here, at the fire, and again inside the
//! runner right before it spawns a process (DESIGN.md §2, rule 5), so a leader frozen past its deadline
//! starts nothing when it wakes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::config::{Job, JobSet};
use crate::runner::{Runner, Start};
use crate::schedule::{Tick, Timer};
use crate::term::Leadership;

/// Why a fire did not start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The job is suspended.
    Suspended,
    /// The slot was missed (stall, restart, clock jump) and is past its `startingDeadline`.
    MissedDeadline,
}

impl Skip {
    /// The metric label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Suspended => "suspended",
            Skip::MissedDeadline => "missed_deadline",
        }
    }
}

/// What the dispatcher tells the rest of the process (metrics, `/status`, Kubernetes Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchEvent {
    /// A fire started nothing, for a reason the dispatcher decides (the runner reports its own skips).
    Skipped {
        /// The job's name.
        job: String,
        /// The slot that was skipped.
        scheduled: DateTime<Utc>,
        /// Why.
        reason: Skip,
        /// True if this replica led when the fire was skipped (a follower's skips are not news).
        leader: bool,
    },
    /// The job's next fire time changed (its timer started, or it fired); `None` if it has no future fire.
    NextRun {
        /// The job's name.
        job: String,
        /// The next slot.
        at: Option<DateTime<Utc>>,
    },
}

/// Starts runs for fires, under a live term.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    runner: Arc<Runner>,
    leadership: watch::Receiver<Leadership>,
    clock: SharedClock,
    events: Option<UnboundedSender<DispatchEvent>>,
}

// === impl Dispatcher ===

impl Dispatcher {
    /// A dispatcher that starts runs on `runner` while `leadership` says this replica leads.
    pub fn new(
        runner: Arc<Runner>,
        leadership: watch::Receiver<Leadership>,
        clock: SharedClock,
    ) -> Self {
        Self {
            runner,
            leadership,
            clock,
            events: None,
        }
    }

    /// Reports skips and next fire times on `events`.
    pub fn with_events(mut self, events: UnboundedSender<DispatchEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// Runs one timer per job until `stop` is cancelled; returns once every timer has stopped.
    ///
    /// Stopping the timers does not touch runs in flight: they belong to their term, which the elector
    /// ends (and waits for) at shutdown.
    pub async fn run(&self, jobs: &JobSet, stop: CancellationToken) {
        let timers = TaskTracker::new();
        for job in &jobs.jobs {
            let this = self.clone();
            let job = Arc::clone(job);
            let stop = stop.clone();
            timers.spawn(async move { this.run_job(job, stop).await });
        }
        timers.close();
        timers.wait().await;
    }

    async fn run_job(&self, job: Arc<Job>, stop: CancellationToken) {
        let mut timer = Timer::new(
            job.schedule.clone(),
            job.starting_deadline,
            Arc::clone(&self.clock),
        );
        loop {
            self.send(DispatchEvent::NextRun {
                job: job.name.clone(),
                at: timer.next_fire(),
            });
            let tick = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                tick = timer.next_tick() => tick,
            };
            match tick {
                Some(Tick::Fire { scheduled, .. }) => self.fire(&job, scheduled),
                Some(Tick::Missed {
                    scheduled,
                    lateness,
                }) => self.skip(&job, scheduled, Skip::MissedDeadline, Some(lateness)),
                None => {
                    tracing::info!(job = %job.name, "schedule has no future fire; timer stops");
                    return;
                }
            }
        }
    }

    /// Handles one on-time (or within-deadline) fire.
    pub fn fire(&self, job: &Arc<Job>, scheduled: DateTime<Utc>) {
        if job.suspend {
            self.skip(job, scheduled, Skip::Suspended, None);
            return;
        }
        let leadership = self.leadership.borrow().clone();
        let Some(term) = leadership.live_term() else {
            tracing::debug!(job = %job.name, %scheduled, "not the leader: not starting");
            return;
        };
        // The runner logs and reports its own skips (overlap, term no longer live).
        let _: Start = self.runner.start(Arc::clone(job), scheduled, term);
    }

    fn skip(
        &self,
        job: &Job,
        scheduled: DateTime<Utc>,
        reason: Skip,
        lateness: Option<std::time::Duration>,
    ) {
        let leads = self.leadership.borrow().is_leader();
        let lateness = lateness.map(|l| humantime::format_duration(l).to_string());
        if leads {
            tracing::warn!(job = %job.name, %scheduled, reason = reason.label(), lateness, "fire skipped");
        } else {
            tracing::debug!(job = %job.name, %scheduled, reason = reason.label(), lateness, "fire skipped");
        }
        self.send(DispatchEvent::Skipped {
            job: job.name.clone(),
            scheduled,
            reason,
            leader: leads,
        });
    }

    fn send(&self, event: DispatchEvent) {
        if let Some(events) = &self.events {
            // A closed channel means nobody listens any more (shutdown); dispatching is unaffected.
            let _ = events.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::{self, LoadOptions};
    use tokio::sync::mpsc;

    fn job_set(extra: &str) -> JobSet {
        let yaml = format!(
            "jobs:\n  - name: j\n    schedule: \"0 0 1 1 *\"\n    shell: \"true\"\n{extra}"
        );
        let opts = LoadOptions {
            max_termination_grace: std::time::Duration::MAX,
        };
        config::parse_str(&yaml, "test.yaml", &opts).expect("valid jobs")
    }

    fn dispatcher() -> (Dispatcher, mpsc::UnboundedReceiver<DispatchEvent>) {
        let clock: SharedClock = Arc::new(SystemClock);
        let runner = Runner::new("me".to_owned(), Arc::clone(&clock), None);
        let (_tx, leadership) = watch::channel(Leadership::Follower { holder: None });
        let (events_tx, events) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher::new(runner, leadership, clock).with_events(events_tx);
        (dispatcher, events)
    }

    #[tokio::test]
    async fn a_suspended_jobs_fire_is_reported_as_a_skip() {
        let (dispatcher, mut events) = dispatcher();
        let jobs = job_set("    suspend: true\n");
        let scheduled = Utc::now();
        dispatcher.fire(&jobs.jobs[0], scheduled);
        let expected = DispatchEvent::Skipped {
            job: "j".to_owned(),
            scheduled,
            reason: Skip::Suspended,
            leader: false,
        };
        assert_eq!(events.recv().await, Some(expected));
    }

    #[tokio::test]
    async fn each_timer_reports_its_jobs_next_fire() {
        let (dispatcher, mut events) = dispatcher();
        let jobs = job_set("");
        let stop = CancellationToken::new();
        let running = {
            let stop = stop.clone();
            tokio::spawn(async move { dispatcher.run(&jobs, stop).await })
        };
        let Some(DispatchEvent::NextRun { job, at }) = events.recv().await else {
            panic!("the first event is the next fire");
        };
        assert_eq!(job, "j");
        let at = at.expect("a yearly schedule has a next fire");
        assert!(at > Utc::now());
        assert_eq!(at.format("%m-%d %H:%M").to_string(), "01-01 00:00");
        stop.cancel();
        running.await.expect("the dispatcher stops");
    }
}
