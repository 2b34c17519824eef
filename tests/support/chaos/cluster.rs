//! The replicas of a chaos run as processes, and the faults injected into them.
//!
//! A replica is a real `leasecron run` on the fake API server (or on the real one, behind the fake in proxy
//! mode), with its own bearer token (its identity), so API faults can target it. What happens to it models
//! what happens to a pod:
//!
//! - **SIGKILL** of leasecron alone (`kill -9`, the OOM killer): its run supervisor must end every process
//!   under it, descendants that left their group included; the test waits until none of them is left (a
//!   container's death, which takes every process at once, is the easier case).
//! - **SIGTERM** is a graceful shutdown (`kubectl delete pod`, a rollout); the replica must exit 0.
//! - **SIGSTOP** of the whole replica (leasecron and every process under it: a frozen VM or cgroup) or of
//!   the runner alone (its supervisor and jobs keep running), short or long, then SIGCONT.
//! - **API faults** on its client only: hangs, 5xx bursts, connection resets, latency; on every verb, or
//!   on writes only, or on reads only.
//! - A killed or terminated replica is **restarted** after a while, with the same identity (a container
//!   restart in the same pod: the old process is dead, so reusing its name is what Kubernetes does) or a
//!   new one (a replacement pod).

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::{Jobs, Monitor, Rng};
use crate::support::fake_apiserver::{FakeApiServer, Fault, Verb};
use crate::support::replica::{now_ns, Replica, FAST_TIMINGS};

/// How long a SIGTERMed replica may take to exit: G + 2 × RP + 5 s is what docs/operations.md sizes
/// `terminationGracePeriodSeconds` at; doubled for a loaded machine.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(13);
/// How long the processes of a SIGKILLed replica may take to disappear.
const DEATH_LIMIT: Duration = Duration::from_secs(5);
/// How often the cluster checks its processes while it waits.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(50);
/// What `run` logs once its start-up checks have passed and its signal handlers are installed.
const STARTED: &str = "leasecron starting";
/// What `run` says when it refuses to start because its identity was renewed while it watched the Lease.
const IDENTITY_IN_USE: &str = "is already held by another live process";
/// A replica that exited on its own is restarted after this long (kubelet's first back-off is 10 s; the
/// chaos run is too short for that).
const CRASH_RESTART: Duration = Duration::from_secs(1);

// === /proc ===

/// A process as `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug)]
pub struct Proc {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// The process `pid`, if it exists.
pub fn proc_stat(pid: i32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the fields follow the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Proc {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process on the machine.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Every live descendant of `pid`: its run supervisor, the runs' processes, and what they started.
fn tree_of(pid: i32) -> Vec<Proc> {
    let all = processes();
    let mut found = vec![pid];
    let mut tree = Vec::new();
    // Parents may be listed after their children: repeat until a pass adds nothing.
    loop {
        let before = found.len();
        for p in &all {
            if p.state != 'Z' && !found.contains(&p.pid) && found.contains(&p.ppid) {
                found.push(p.pid);
                tree.push(*p);
            }
        }
        if found.len() == before {
            return tree;
        }
    }
}

/// A replica's job processes: the leaders of the runs' process groups among its descendants (the run
/// supervisor, in leasecron's own group, is not one).
fn jobs_in(tree: &[Proc]) -> Vec<Proc> {
    tree.iter().filter(|p| p.pgrp == p.pid).copied().collect()
}

/// Signals every process of `tree`, one by one (a frozen or dead machine takes every process, whichever
/// group or session it is in).
fn signal_tree(tree: &[Proc], signal: Signal) {
    for p in tree {
        let _ = kill(Pid::from_raw(p.pid), signal);
    }
}

/// Waits until none of `pids` is alive (a zombie is not); returns false if some are after `limit`.
fn wait_gone(pids: &[i32], limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let left = processes()
            .into_iter()
            .any(|p| p.state != 'Z' && pids.contains(&p.pid));
        if !left {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True if process `pid`'s environment holds `CHAOS_RUN_DIR=marker` (a job process of this chaos run).
fn has_marker(pid: i32, marker: &str) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let needle = format!("CHAOS_RUN_DIR={marker}");
    environ
        .split(|&b| b == 0)
        .any(|entry| entry == needle.as_bytes())
}

// === The fault model ===

/// Which replica a fault aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The replica the Lease names (if it is one of ours and running).
    Leader,
    /// One of the others.
    Follower,
}

/// What a fault does.
#[derive(Clone, Debug)]
pub enum Action {
    Kill,
    Terminate,
    /// SIGSTOP for the hold, then SIGCONT: the whole replica (leasecron and its jobs) or the runner alone.
    Freeze {
        whole: bool,
    },
    /// The fake API server's fault for this client's requests (`verbs`: all if `None`) for the hold.
    Api {
        fault: Fault,
        verbs: Option<Vec<Verb>>,
    },
}

/// One step of the schedule, drawn from the seed: always the same number of draws, so a seed replays
/// the same sequence of steps whatever the replicas did.
#[derive(Clone, Debug)]
pub struct Plan {
    pub action: Action,
    pub role: Role,
    /// Picks a follower among the current ones.
    pub pick: u64,
    /// How long a freeze or API fault lasts.
    pub hold: Duration,
    /// The pause after the fault, before the next.
    pub gap: Duration,
    /// A killed or terminated replica comes back after this long ...
    pub restart_after: Duration,
    /// ... with its own identity (a container restart) or a new one (a new pod).
    pub restart_same: bool,
}

impl Plan {
    pub fn draw(rng: &mut Rng) -> Plan {
        let kind = rng.unit();
        let role = if rng.chance(0.6) {
            Role::Leader
        } else {
            Role::Follower
        };
        let pick = rng.next_u64();
        let long = rng.chance(0.5);
        let short_freeze = rng.between(Duration::from_millis(50), super::COVERED_FREEZE);
        let long_freeze = rng.between(Duration::from_secs(2), Duration::from_secs(6));
        let short_api = rng.between(Duration::from_millis(200), Duration::from_secs(1));
        let long_api = rng.between(Duration::from_millis(1500), Duration::from_secs(5));
        let verbs = match rng.unit() {
            x if x < 0.5 => None,
            x if x < 0.75 => Some(vec![Verb::Update, Verb::Create, Verb::Patch]),
            _ => Some(vec![Verb::Get, Verb::List, Verb::Watch]),
        };
        let code = [500, 502, 503, 504][(rng.next_u64() % 4) as usize];
        let latency = rng.between(Duration::from_millis(300), Duration::from_millis(1500));
        let calm = rng.chance(0.15);
        let busy_gap = rng.between(Duration::from_millis(200), Duration::from_millis(3500));
        let calm_gap = rng.between(Duration::from_secs(5), Duration::from_secs(9));
        let restart_after = rng.between(Duration::from_millis(300), Duration::from_secs(3));
        let restart_same = rng.chance(0.5);
        let (action, hold) = match kind {
            x if x < 0.14 => (Action::Kill, Duration::ZERO),
            x if x < 0.24 => (Action::Terminate, Duration::ZERO),
            x if x < 0.56 => (
                Action::Freeze { whole: x < 0.40 },
                if long { long_freeze } else { short_freeze },
            ),
            x => {
                let fault = match x {
                    x if x < 0.68 => Fault::Hang,
                    x if x < 0.80 => Fault::Status(code),
                    x if x < 0.90 => Fault::Reset,
                    _ => Fault::Latency(latency),
                };
                let verbs = if fault == Fault::Reset { None } else { verbs };
                (
                    Action::Api { fault, verbs },
                    if long { long_api } else { short_api },
                )
            }
        };
        Plan {
            action,
            role,
            pick,
            hold,
            gap: if calm { calm_gap } else { busy_gap },
            restart_after,
            restart_same,
        }
    }
}

/// A fault as injected (or a restart), for the invariants and the report.
#[derive(Clone, Debug)]
pub struct Injected {
    pub seq: usize,
    /// `SIGKILL`, `SIGTERM`, `SIGSTOP whole`, `SIGSTOP runner`, `API hang`, `API 5xx`, `API reset`,
    /// `API latency`, `restart`.
    pub kind: &'static str,
    pub detail: String,
    pub target: String,
    /// The target's process.
    pub pid: i32,
    /// What the target was when the fault began (`None` for restarts).
    pub role: Option<Role>,
    pub start_ns: u128,
    /// When the fault ended (its SIGCONT, its API fault cleared; the start for instant faults).
    pub end_ns: u128,
    /// Requests held back by a latency fault are served up to this long after it is cleared.
    pub extra: Duration,
    /// For freezes: the whole replica (else the runner alone), and whether longer than
    /// [`super::COVERED_FREEZE`].
    pub freeze: Option<(bool, bool)>,
    /// For freezes: the replica's job processes when it began (the only runs it can have made stale).
    pub jobs: Vec<i32>,
}

impl Injected {
    /// A freeze longer than the design covers: runs it froze may overlap a later term's (fencing only).
    pub fn is_long_freeze(&self) -> bool {
        self.freeze.is_some_and(|(_, long)| long)
    }
}

/// One process of one identity, from spawn to exit.
#[derive(Clone, Debug)]
pub struct Incarnation {
    pub identity: String,
    pub pid: i32,
    pub started_ns: u128,
    pub ended_ns: Option<u128>,
    /// When every process of it (leasecron and its jobs) was seen gone, if the test killed it.
    pub gone_ns: Option<u128>,
    pub ending: String,
}

/// A running replica.
struct Member {
    replica: Replica,
    incarnation: usize,
    /// Since when it has been told to stop (SIGTERM), if it has, and its restart once it has exited.
    stopping: Option<(Instant, Restart)>,
}

/// A restart to do: `after` this long (since a kill, or since a terminated replica exited; a container
/// restarts only once the old one is gone), as `identity`.
struct Restart {
    after: Duration,
    identity: String,
}

// === Cluster ===

/// The replicas of a chaos run, the faults injected into them, and what became of them.
pub struct Cluster {
    dir: PathBuf,
    server: Arc<FakeApiServer>,
    jobs: Jobs,
    members: Vec<Member>,
    restarts: Vec<(Instant, String)>,
    next_identity: usize,
    pub events: Vec<Injected>,
    pub incarnations: Vec<Incarnation>,
    /// Things the replicas did that they must not (exit on their own, fail to shut down).
    pub problems: Vec<String>,
    /// Things the replicas did that the design allows, worth a line in the report.
    pub notes: Vec<String>,
    /// Every log file, old incarnations' included.
    pub logs: Vec<PathBuf>,
    /// In front of the real server: the identities [`prewarm`]ed before the run.
    prewarmed: usize,
    torn_down: bool,
}

impl Cluster {
    /// Starts `replicas` replicas `chaos-0` … on `server`. In front of the real server, the identities of
    /// those and of `spare` replacements are [`prewarm`]ed first.
    pub fn start(
        dir: PathBuf,
        server: Arc<FakeApiServer>,
        jobs: Jobs,
        replicas: usize,
        spare: usize,
    ) -> Cluster {
        let prewarmed = if server.is_real() {
            let identities: Vec<String> = (0..replicas + spare)
                .map(|i| format!("chaos-{i}"))
                .collect();
            for identity in &identities {
                prewarm(&server, identity);
            }
            identities.len()
        } else {
            0
        };
        let mut cluster = Cluster {
            dir,
            server,
            jobs,
            members: Vec::new(),
            restarts: Vec::new(),
            next_identity: replicas,
            events: Vec::new(),
            incarnations: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
            logs: Vec::new(),
            prewarmed,
            torn_down: false,
        };
        for i in 0..replicas {
            cluster.spawn(&format!("chaos-{i}"));
        }
        cluster
    }

    /// The identities running now.
    pub fn identities(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.replica.identity.clone())
            .collect()
    }

    fn spawn(&mut self, identity: &str) {
        let log = self.dir.join(format!("{identity}.log"));
        if log.exists() {
            // A container restart: keep the previous incarnation's log beside.
            let old = self
                .dir
                .join(format!("{identity}.{}.log", self.incarnations.len()));
            fs::rename(&log, &old).expect("keep the previous log");
            if let Some(entry) = self.logs.iter_mut().find(|l| **l == log) {
                *entry = old;
            }
        }
        if self.server.is_real() && identity_number(identity) >= self.prewarmed {
            self.notes.push(format!(
                "{identity} was not prewarmed: the proxy held every client's requests while it made \
                 that user"
            ));
        }
        let kubeconfig = self.server.kubeconfig(&self.dir, identity);
        let replica = Replica::start_on_kube(
            &self.dir,
            identity,
            &self.jobs.file,
            &kubeconfig,
            &FAST_TIMINGS,
        );
        self.logs.push(replica.log.clone());
        self.incarnations.push(Incarnation {
            identity: identity.to_owned(),
            pid: replica.pid().as_raw(),
            started_ns: now_ns(),
            ended_ns: None,
            gone_ns: None,
            ending: String::new(),
        });
        self.members.push(Member {
            replica,
            incarnation: self.incarnations.len() - 1,
            stopping: None,
        });
    }

    /// Waits `duration`, restarting replicas and noticing exits meanwhile.
    pub fn idle(&mut self, duration: Duration, monitor: &Monitor) {
        let until = Instant::now() + duration;
        loop {
            self.housekeeping(monitor);
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep(HOUSEKEEPING_INTERVAL.min(until - now));
        }
    }

    /// Notices replicas that exited (told to or not) and does the restarts that are due.
    fn housekeeping(&mut self, monitor: &Monitor) {
        let mut i = 0;
        while i < self.members.len() {
            let exited = self.members[i]
                .replica
                .child
                .try_wait()
                .expect("try_wait a replica");
            let since = self.members[i].stopping.as_ref().map(|(since, _)| *since);
            match (exited, since) {
                (Some(status), Some(_)) => {
                    let member = self.members.remove(i);
                    self.restart_later(member.stopping.as_ref().map(|(_, r)| r));
                    let identity = member.replica.identity.clone();
                    if !status.success() {
                        self.problems.push(format!(
                            "{identity} exited with {status} after SIGTERM (a clean shutdown exits 0)"
                        ));
                    }
                    self.end_incarnation(member.incarnation, format!("SIGTERM, {status}"), None);
                }
                (Some(status), None) => {
                    let member = self.members.remove(i);
                    let identity = member.replica.identity.clone();
                    let what = format!(
                        "{identity} (pid {}) exited on its own with {status}",
                        member.replica.pid()
                    );
                    let log = member.replica.log_text();
                    if log.contains(IDENTITY_IN_USE) {
                        // A container restart that found its own name renewed while it watched the
                        // Lease: a request of its dead predecessor that a latency fault held back. `run`
                        // cannot tell that from a live twin and refuses, as documented; the kubelet
                        // restarts it.
                        self.notes
                            .push(format!("{what}: refused, its identity looked in use"));
                    } else {
                        // Start-up retries transient API errors (--startup-timeout, 5 min): an API
                        // fault while a replica starts is ridden out, never an exit.
                        self.problems.push(what);
                    }
                    // Its jobs got SIGKILL from the kernel (PR_SET_PDEATHSIG); in a container their
                    // children would die with it: do that here.
                    let strays = monitor.snapshot().unfinished_pids(&identity);
                    for pid in strays {
                        if super::job_shell_alive(pid) {
                            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                    self.end_incarnation(member.incarnation, format!("exited, {status}"), None);
                    self.restarts
                        .push((Instant::now() + CRASH_RESTART, identity));
                }
                (None, Some(since)) if since.elapsed() > SHUTDOWN_LIMIT => {
                    let mut member = self.members.remove(i);
                    self.problems.push(format!(
                        "{} did not exit within {SHUTDOWN_LIMIT:?} of SIGTERM",
                        member.replica.identity
                    ));
                    self.restart_later(member.stopping.as_ref().map(|(_, r)| r));
                    let gone = self.kill(&mut member.replica);
                    self.end_incarnation(
                        member.incarnation,
                        "SIGKILL after a stuck shutdown".to_owned(),
                        Some(gone),
                    );
                }
                _ => i += 1,
            }
        }
        let now = Instant::now();
        let due: Vec<(Instant, String)> = {
            let (due, later) = std::mem::take(&mut self.restarts)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.restarts = later;
            due
        };
        for (_, identity) in due {
            let at = now_ns();
            self.spawn(&identity);
            let pid = self.members.last().map_or(0, |m| m.replica.pid().as_raw());
            self.events.push(Injected {
                seq: self.events.len(),
                kind: "restart",
                detail: String::new(),
                target: identity,
                pid,
                role: None,
                start_ns: at,
                end_ns: at,
                extra: Duration::ZERO,
                freeze: None,
                jobs: Vec::new(),
            });
        }
    }

    fn end_incarnation(&mut self, index: usize, ending: String, gone_ns: Option<u128>) {
        let incarnation = &mut self.incarnations[index];
        incarnation.ended_ns = Some(now_ns());
        incarnation.gone_ns = gone_ns;
        incarnation.ending = ending;
    }

    /// Which member a fault for `role` hits, and what it is: the Lease's holder, or the `pick`th of the
    /// others (by identity); the other kind if there is none of the kind asked for.
    fn target(&self, role: Role, pick: u64, monitor: &Monitor) -> Option<(usize, Role)> {
        let holder = monitor.holder();
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].stopping.is_none())
            .collect();
        let leader = running
            .iter()
            .copied()
            .find(|&i| Some(&self.members[i].replica.identity) == holder.as_ref());
        let mut followers: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&i| Some(i) != leader)
            .collect();
        followers.sort_by_key(|&i| self.members[i].replica.identity.clone());
        let follower =
            (!followers.is_empty()).then(|| followers[(pick % followers.len() as u64) as usize]);
        match (role, leader, follower) {
            (Role::Leader, Some(i), _) | (Role::Follower, Some(i), None) => Some((i, Role::Leader)),
            (_, _, Some(i)) => Some((i, Role::Follower)),
            (_, None, None) => None,
        }
    }

    /// Injects one step of the schedule, holds it, clears it, then waits the gap.
    pub fn inject(&mut self, plan: &Plan, monitor: &Monitor) {
        if let Some((index, role)) = self.target(plan.role, plan.pick, monitor) {
            self.apply(plan, index, role, monitor);
        }
        self.idle(plan.gap, monitor);
    }

    fn apply(&mut self, plan: &Plan, index: usize, role: Role, monitor: &Monitor) {
        let identity = self.members[index].replica.identity.clone();
        let pid = self.members[index].replica.pid().as_raw();
        let start_ns = now_ns();
        let mut event = Injected {
            seq: self.events.len(),
            kind: "",
            detail: String::new(),
            target: identity.clone(),
            pid,
            role: Some(role),
            start_ns,
            end_ns: start_ns,
            extra: Duration::ZERO,
            freeze: None,
            jobs: Vec::new(),
        };
        let running = self.members.iter().filter(|m| m.stopping.is_none()).count();
        match &plan.action {
            // Keep a second replica, or the run measures nothing but restarts.
            Action::Kill | Action::Terminate if running < 2 => return,
            Action::Kill => {
                event.kind = "SIGKILL";
                let mut member = self.members.remove(index);
                let gone = self.kill(&mut member.replica);
                event.detail = format!("all its processes gone after {} ms", ms(gone - start_ns));
                self.end_incarnation(member.incarnation, "SIGKILL".to_owned(), Some(gone));
                let restart = self.restart(plan, &identity);
                self.restart_later(Some(&restart));
            }
            Action::Terminate => {
                let member = &mut self.members[index];
                if !member.replica.log_text().contains(STARTED) {
                    // Still starting: its signal handlers are not installed yet (a pod deleted this
                    // early dies of the signal). Not what this step is about.
                    return;
                }
                event.kind = "SIGTERM";
                member.replica.signal(Signal::SIGTERM);
                let restart = self.restart(plan, &identity);
                self.members[index].stopping = Some((Instant::now(), restart));
            }
            Action::Freeze { whole } => {
                event.kind = if *whole {
                    "SIGSTOP whole"
                } else {
                    "SIGSTOP runner"
                };
                let (jobs, stopped) = freeze(pid, *whole);
                event.detail =
                    format!("{} ms, {} job processes", plan.hold.as_millis(), jobs.len());
                event.jobs = jobs.iter().map(|j| j.pid).collect();
                self.idle(plan.hold, monitor);
                thaw(pid, &stopped);
                event.end_ns = now_ns();
                event.freeze = Some((*whole, plan.hold > super::COVERED_FREEZE));
            }
            Action::Api { fault, verbs } => {
                event.kind = match fault {
                    Fault::Hang => "API hang",
                    Fault::Status(_) => "API 5xx",
                    Fault::Reset => "API reset",
                    _ => "API latency",
                };
                if let Fault::Latency(delay) = fault {
                    event.extra = *delay;
                }
                event.detail = format!(
                    "{fault:?} on {} for {} ms",
                    verbs
                        .as_ref()
                        .map_or("every verb".to_owned(), |v| format!("{v:?}")),
                    plan.hold.as_millis()
                );
                let handle = self.server.faults(&identity);
                match verbs {
                    Some(verbs) => handle.set_for(verbs, fault.clone()),
                    None => handle.set(fault.clone()),
                }
                self.idle(plan.hold, monitor);
                handle.clear();
                event.end_ns = now_ns();
            }
        }
        // Restarts may have been logged while the fault was held: number it now.
        event.seq = self.events.len();
        self.events.push(event);
    }

    /// [`kill_replica`], noting job processes that outlived it.
    fn kill(&mut self, replica: &mut Replica) -> u128 {
        let (gone, all_gone) = kill_replica(replica);
        if !all_gone {
            self.problems.push(format!(
                "job processes of {} were still alive {DEATH_LIMIT:?} after SIGKILL",
                replica.identity
            ));
        }
        gone
    }

    /// The restart the plan asks for after `identity` is gone: the same identity, or a new one.
    fn restart(&mut self, plan: &Plan, identity: &str) -> Restart {
        let identity = if plan.restart_same {
            identity.to_owned()
        } else {
            self.next_identity += 1;
            format!("chaos-{}", self.next_identity - 1)
        };
        Restart {
            after: plan.restart_after,
            identity,
        }
    }

    fn restart_later(&mut self, restart: Option<&Restart>) {
        if let Some(restart) = restart {
            self.restarts
                .push((Instant::now() + restart.after, restart.identity.clone()));
        }
    }

    /// Ends the run: pending restarts are dropped, every replica is woken (SIGCONT) and killed with its
    /// job processes, and any job process of this run still alive anywhere is killed.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.restarts.clear();
        for identity in self.identities() {
            self.server.faults(&identity).clear();
        }
        for mut member in std::mem::take(&mut self.members) {
            let pid = member.replica.pid().as_raw();
            thaw(pid, &tree_of(pid));
            let gone = self.kill(&mut member.replica);
            self.end_incarnation(member.incarnation, "teardown".to_owned(), Some(gone));
        }
        kill_strays(&self.jobs.marker);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// In front of the real server, the proxy makes a real user (a client certificate, a Role and its binding,
/// then waits for the authorizer) for each bearer token on its first request, and holds every other
/// client's requests meanwhile: not a fault of the model. One request per identity before the run makes
/// them all beforehand.
fn prewarm(server: &FakeApiServer, identity: &str) {
    use std::io::{Read, Write};
    let addr = server.url();
    let addr = addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    write!(
        stream,
        "GET /apis/coordination.k8s.io/v1/namespaces/{}/leases/{} HTTP/1.0\r\nHost: {addr}\r\n\
         Authorization: Bearer {identity}\r\n\r\n",
        server.namespace(),
        super::LEASE
    )
    .expect("send a request to the proxy");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split_whitespace().nth(1);
    assert!(
        matches!(status, Some("200" | "404")),
        "the proxy serves {identity}: {answer}"
    );
}

/// N of `chaos-N`.
fn identity_number(identity: &str) -> usize {
    identity
        .strip_prefix("chaos-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// `kill -9` of leasecron alone (by hand, or the OOM killer's choice): its run supervisor must end every
/// process under it, descendants that left their group included. Waits until none of the processes under
/// it at that moment is left; returns when that was seen, and whether it was.
fn kill_replica(replica: &mut Replica) -> (u128, bool) {
    let pid = replica.pid();
    let _ = kill(pid, Signal::SIGSTOP);
    let tree = tree_of(pid.as_raw());
    let _ = kill(pid, Signal::SIGKILL);
    let _ = replica.child.wait();
    let pids: Vec<i32> = tree.iter().map(|p| p.pid).collect();
    let all_gone = wait_gone(&pids, DEATH_LIMIT);
    (now_ns(), all_gone)
}

/// SIGSTOPs leasecron, then (`whole`) every process under it (the run supervisor, the runs and what they
/// started: a frozen VM or cgroup); returns its job processes at that moment (stopped, it spawns no more),
/// stopped or not, and the processes to wake.
fn freeze(pid: i32, whole: bool) -> (Vec<Proc>, Vec<Proc>) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    let tree = tree_of(pid);
    if whole {
        signal_tree(&tree, Signal::SIGSTOP);
        (jobs_in(&tree), tree)
    } else {
        (jobs_in(&tree), Vec::new())
    }
}

/// SIGCONTs the processes under leasecron, then leasecron: a frozen machine wakes all at once; the jobs
/// first, so that the runner's first act (possibly SIGTERM to them) finds them awake.
fn thaw(pid: i32, stopped: &[Proc]) {
    signal_tree(stopped, Signal::SIGCONT);
    let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
}

/// SIGKILLs every process of this chaos run's jobs still alive (stopped ones are woken first).
pub fn kill_strays(marker: &str) {
    for p in processes() {
        if p.state != 'Z' && has_marker(p.pid, marker) {
            let pid = Pid::from_raw(p.pid);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Nanoseconds as whole milliseconds.
pub fn ms(ns: u128) -> u128 {
    ns / 1_000_000
}

/// One line per fault and restart, as injected.
pub fn fault_log(events: &[Injected]) -> String {
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "  #{} {} {} {} (pid {}, {}) {}",
                e.seq,
                super::clock(e.start_ns),
                e.kind,
                e.target,
                e.pid,
                e.role
                    .map_or("restart".to_owned(), |r| format!("{r:?}").to_lowercase()),
                e.detail
            )
        })
        .collect();
    lines.join("\n")
}

/// How many faults of each kind were injected.
pub fn count_by_kind(events: &[Injected]) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for event in events {
        let mut kind = event.kind.to_owned();
        if let Some((_, long)) = event.freeze {
            kind.push_str(if long { " long" } else { " short" });
        }
        if let Some(role) = event.role {
            kind.push_str(match role {
                Role::Leader => " (leader)",
                Role::Follower => " (follower)",
            });
        }
        *counts.entry(kind).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    counts
}
