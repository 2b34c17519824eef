//! Reaps orphaned zombies, and ends the processes that runs leave behind.
//!
//! In a container leasecron is often PID 1, and elsewhere `run` makes itself a child subreaper
//! ([`become_subreaper`]), so every orphaned grandchild of a job (a daemonised helper, a process that
//! escaped its group) is reparented to it, and nobody else will ever `wait` for it. The [`Reaper`] does: at
//! start and on every SIGCHLD it scans `/proc/*/stat` for zombies whose parent is this process and
//! `waitpid`s them, and scans once more [`REAP_INTERVAL`] after the last SIGCHLD, in case a child ended
//! while the scan ran (its signal coalesced with the one being handled). No child, no SIGCHLD: an idle
//! replica never scans.
//!
//! A process that left its run's process group (`setsid`, `setpgid`) is not reached by the run's
//! escalation, which signals the group. At the end of a term, [`signal_strays`] sends SIGTERM to every
//! descendant of this process outside the runs' groups, and once the runs have ended [`kill_descendants`]
//! SIGKILLs whatever is left: nothing a term started outlives it (see `TermHandle::sweeping_strays`).
//!
//! It must never steal an exit status from tokio, which waits for the runner's own children by pid. So the
//! runner spawns through [`spawn_tracked`], which records the child's pid under the same lock the reaper
//! holds for a whole scan-and-reap pass, and forgets it (through [`TrackedChild`]'s drop) only after tokio
//! has reaped it. A pid the reaper sees is therefore either tracked (skipped) or not the runner's.
//!
//! Children spawned by other code through `std::process` (none in leasecron itself) are not tracked and
//! could lose their exit status to the reaper when leasecron is PID 1.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{getpid, Pid};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::sleep_until_some;

/// After a SIGCHLD, when the reaper scans once more even without another (signals of children that end
/// together coalesce, and one may end while the scan runs). Without a SIGCHLD stream, how often it scans.
pub const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// Where the kernel lists processes.
const PROC_ROOT: &str = "/proc";

/// Errors of a reaper pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/proc` could not be listed.
    #[error("cannot list {path}: {source}")]
    ListProc {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A process group could not be signalled.
    #[error("{signal} to process group {pgid}: {source}")]
    SignalGroup {
        /// The group.
        pgid: i32,
        /// The signal.
        signal: Signal,
        /// Why.
        source: Errno,
    },
}

/// The fields of `/proc/PID/stat` the reaper needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent's process id.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
}

/// A running reaper task.
#[derive(Debug)]
pub struct Reaper {
    task: JoinHandle<()>,
}

/// A child spawned through [`spawn_tracked`]; its pid stays tracked until this guard is dropped, which the
/// runner does only after tokio reaped the child (or gave it to tokio's orphan queue).
#[derive(Debug)]
pub struct TrackedChild {
    /// The child.
    pub child: Child,
    _tracked: Option<TrackedPid>,
}

/// A pid whose exit status and lifetime belong to someone else: the reaper does not reap it, and the term's
/// sweep does not signal it (nor, while it leads its group, its group). Tracked until dropped.
#[derive(Debug)]
pub struct TrackedPid(i32);

/// Pids whose exit status belongs to tokio or to the supervisor. One set per process, like the zombies it
/// guards.
static TRACKED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn tracked() -> MutexGuard<'static, BTreeSet<i32>> {
    // Every update is a single insert or remove: the set is consistent even after a panic elsewhere.
    TRACKED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spawns `command`, tracking the child's pid so the reaper never reaps it.
pub fn spawn_tracked(command: &mut Command) -> io::Result<TrackedChild> {
    let mut set = tracked();
    let child = command.spawn()?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok());
    let tracked = pid.map(|pid| {
        set.insert(pid);
        TrackedPid(pid)
    });
    Ok(TrackedChild {
        child,
        _tracked: tracked,
    })
}

// === impl TrackedPid ===

impl TrackedPid {
    /// Tracks `pid` until the guard is dropped.
    pub fn new(pid: i32) -> Self {
        tracked().insert(pid);
        Self(pid)
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.0
    }
}

impl Drop for TrackedPid {
    fn drop(&mut self) {
        tracked().remove(&self.0);
    }
}

// === impl Reaper ===

impl Reaper {
    /// Starts the reaper if this process is PID 1 or a subreaper ([`become_subreaper`]); otherwise orphans
    /// go to the real init and this returns `None`. The reaper stops when `shutdown` is cancelled.
    pub fn spawn_if_orphans_come_here(shutdown: CancellationToken) -> Option<Self> {
        let subreaper = nix::sys::prctl::get_child_subreaper().unwrap_or(false);
        (getpid().as_raw() == 1 || subreaper).then(|| Self::spawn(shutdown))
    }

    /// Starts the reaper regardless of this process's pid.
    pub fn spawn(shutdown: CancellationToken) -> Self {
        Self {
            task: tokio::spawn(reap_loop(shutdown)),
        }
    }

    /// Waits until the reaper stopped.
    pub async fn join(self) {
        // The loop has no panicking path; a join error could only be a cancelled runtime.
        let _ = self.task.await;
    }
}

async fn reap_loop(shutdown: CancellationToken) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGCHLD; reaping every {REAP_INTERVAL:?} only");
            None
        }
    };
    // The scan due without a signal: at once (orphans from before the reaper started), then only
    // REAP_INTERVAL after a SIGCHLD, or every REAP_INTERVAL if there is no SIGCHLD stream.
    let mut follow_up = Some(tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            () = sleep_until_some(follow_up) => {
                follow_up = sigchld
                    .is_none()
                    .then(|| tokio::time::Instant::now() + REAP_INTERVAL);
            }
            signalled = recv_signal(&mut sigchld) => {
                if !signalled {
                    // The stream closed and never yields again: scan every REAP_INTERVAL from now on.
                    sigchld = None;
                }
                follow_up = Some(tokio::time::Instant::now() + REAP_INTERVAL);
            }
        }
        match reap_orphans() {
            Ok(0) => {}
            Ok(reaped) => tracing::debug!(reaped, "reaped orphaned zombies"),
            Err(error) => tracing::warn!(%error, "reaping orphans failed"),
        }
    }
}

/// The next signal of `stream`: true, or false once it closed; never resolves without a stream.
async fn recv_signal(stream: &mut Option<tokio::signal::unix::Signal>) -> bool {
    match stream {
        Some(stream) => stream.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

/// One pass: reaps every zombie child of this process that the runner does not track. Returns how many.
pub(crate) fn reap_orphans() -> Result<usize, Error> {
    let set = tracked();
    let zombies = orphan_zombies(scan_proc()?, getpid().as_raw(), &set);
    Ok(reap(&zombies))
}

/// The pids in `stats` that are zombies, children of `parent`, and not in `tracked`.
pub(crate) fn orphan_zombies(
    stats: impl IntoIterator<Item = ProcStat>,
    parent: i32,
    tracked: &BTreeSet<i32>,
) -> Vec<i32> {
    stats
        .into_iter()
        .filter(|s| s.state == 'Z' && s.ppid == parent && !tracked.contains(&s.pid))
        .map(|s| s.pid)
        .collect()
}

/// `waitpid(WNOHANG)`s each pid; returns how many were reaped.
pub fn reap(pids: &[i32]) -> usize {
    pids.iter()
        .filter(
            |&&pid| match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => status.pid().is_some(),
                Err(Errno::ECHILD) => false,
                Err(error) => {
                    tracing::warn!(pid, %error, "waitpid failed");
                    false
                }
            },
        )
        .count()
}

/// Reads `/proc/*/stat` of every process. Processes that vanish mid-scan are skipped.
pub(crate) fn scan_proc() -> Result<Vec<ProcStat>, Error> {
    let entries = std::fs::read_dir(PROC_ROOT).map_err(|source| Error::ListProc {
        path: PROC_ROOT.into(),
        source,
    })?;
    let stats = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_str().is_some_and(is_pid))
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect();
    Ok(stats)
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// Parses the start of `/proc/PID/stat`: `pid (comm) state ppid ...`. The command name may itself contain
/// spaces and parentheses, so the fields after it are found from the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find(" (")?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Makes this process the child subreaper of its descendants (`PR_SET_CHILD_SUBREAPER`): an orphaned
/// grandchild is reparented to it rather than to init, so the [`Reaper`] reaps it and
/// [`kill_descendants`] finds it. PID 1 is one already.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// The live (not zombie) processes in `stats` that descend from `root`, `root` excluded.
pub fn descendants(stats: &[ProcStat], root: i32) -> Vec<ProcStat> {
    let mut found: BTreeSet<i32> = BTreeSet::from([root]);
    let mut result = Vec::new();
    // Parents may be listed after their children: repeat until a pass adds nothing.
    loop {
        let before = found.len();
        for stat in stats {
            if !found.contains(&stat.pid) && found.contains(&stat.ppid) {
                found.insert(stat.pid);
                if stat.state != 'Z' {
                    result.push(*stat);
                }
            }
        }
        if found.len() == before {
            return result;
        }
    }
}

/// The descendants of `root` in `stats` that no run is responsible for: outside every group led by a
/// tracked child (a run's process group is led by the run's process).
pub fn strays(stats: &[ProcStat], root: i32, tracked: &BTreeSet<i32>) -> Vec<ProcStat> {
    descendants(stats, root)
        .into_iter()
        .filter(|s| !tracked.contains(&s.pid) && !tracked.contains(&s.pgrp))
        .collect()
}

/// Sends `signal` to every descendant of this process outside the runs' process groups ([`strays`]).
/// Returns how many were signalled.
pub fn signal_strays(signal: Signal) -> usize {
    let stats = match scan_proc() {
        Ok(stats) => stats,
        Err(error) => {
            tracing::warn!(%error, "cannot look for processes the runs left behind");
            return 0;
        }
    };
    let strays = strays(&stats, getpid().as_raw(), &tracked());
    for stray in &strays {
        send(stray.pid, signal);
    }
    strays.len()
}

/// SIGKILLs every live descendant of this process whose environment carries every one of `marks`
/// (`NAME=VALUE`: the `LEASECRON_*` variables of one attempt): what the attempt left behind outside its
/// process group `group` (`setsid`, a double fork). Call it once the attempt's group has been SIGKILLed:
/// what is still in it is dying, and not counted again here. Processes of a live run's group are spared,
/// as in [`strays`]. A process that cleared its environment is not recognised here; the term's end, and
/// the supervisor if leasecron dies, still end it. Returns the pids killed.
pub(crate) fn kill_marked(marks: &[String], group: i32) -> Vec<i32> {
    let stats = match scan_proc() {
        Ok(stats) => stats,
        Err(error) => {
            tracing::warn!(%error, "cannot look for processes a run left behind");
            return Vec::new();
        }
    };
    let spared = tracked();
    let marked: Vec<i32> = strays(&stats, getpid().as_raw(), &spared)
        .into_iter()
        .filter(|process| process.pgrp != group && environ_has(process.pid, marks))
        .map(|process| process.pid)
        .collect();
    drop(spared);
    for &pid in &marked {
        send(pid, Signal::SIGKILL);
    }
    marked
}

/// True if `/proc/PID/environ` holds every one of `marks`.
fn environ_has(pid: i32, marks: &[String]) -> bool {
    let Ok(environ) = std::fs::read(format!("{PROC_ROOT}/{pid}/environ")) else {
        return false;
    };
    marks.iter().all(|mark| {
        environ
            .split(|&byte| byte == 0)
            .any(|entry| entry == mark.as_bytes())
    })
}

/// Ends what is left of process group `pgid` once its leader has been reaped, and counts it: the processes
/// a run's process left behind in its group (`cmd &`). A signal-0 probe comes first: a group whose every
/// member is gone (the common case) does not exist any more, and costs no `/proc` scan. Otherwise the group
/// is stopped (SIGSTOP: none of its processes forks or leaves it meanwhile), its live processes are
/// counted, and it is SIGKILLed. Returns how many were alive.
///
/// Once its leader is reaped, a group id stays pinned only by the members that remain, so the signals can
/// reach no other group (unless every member ends between the probe and the stop). `Err`: the count or the
/// SIGKILL failed (the SIGKILL is sent all the same).
pub(crate) fn end_leftover_group(pgid: i32) -> Result<usize, Error> {
    // killpg(0) would signal our own group and killpg(1) init's; neither is ever a run's group.
    if pgid <= 1 {
        return Ok(0);
    }
    let group = Pid::from_raw(pgid);
    if killpg(group, None).is_err() {
        return Ok(0);
    }
    // Ignored: EPERM from a member we may not signal; the SIGKILL below reports it.
    let _ = killpg(group, Signal::SIGSTOP);
    let counted = scan_proc().map(|stats| live_in_group(&stats, pgid));
    match killpg(group, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => counted,
        Err(source) => Err(Error::SignalGroup {
            pgid,
            signal: Signal::SIGKILL,
            source,
        }),
    }
}

/// How many processes in `stats` belong to group `pgid` and are alive (not zombies).
pub(crate) fn live_in_group(stats: &[ProcStat], pgid: i32) -> usize {
    stats
        .iter()
        .filter(|s| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X' | 'x'))
        .count()
}

/// How many times [`kill_descendants`] scans before it gives up on a process that keeps forking.
const KILL_PASSES: usize = 100;
/// The pause between two passes of [`kill_descendants`].
const KILL_PASS_PAUSE: Duration = Duration::from_millis(10);

/// SIGKILLs every descendant of this process but the tracked ones (the run supervisor; no run is in
/// flight), pass after pass (a process may fork while it is being killed), until none is left alive.
/// Returns how many were killed. Call it only when no run is in flight.
pub async fn kill_descendants() -> usize {
    let me = getpid().as_raw();
    let mut killed = BTreeSet::new();
    for _ in 0..KILL_PASSES {
        let alive = match scan_proc() {
            Ok(stats) => {
                let spared = tracked();
                let mut alive = descendants(&stats, me);
                alive.retain(|process| !spared.contains(&process.pid));
                alive
            }
            Err(error) => {
                tracing::warn!(%error, "cannot look for processes the runs left behind");
                break;
            }
        };
        if alive.is_empty() {
            return killed.len();
        }
        for process in alive {
            send(process.pid, Signal::SIGKILL);
            killed.insert(process.pid);
        }
        tokio::time::sleep(KILL_PASS_PAUSE).await;
    }
    tracing::warn!(
        passes = KILL_PASSES,
        "processes the runs left behind are still alive after repeated SIGKILLs"
    );
    killed.len()
}

fn send(pid: i32, signal: Signal) {
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pid, %signal, %error, "signalling a left-behind process failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: i32, state: char, ppid: i32) -> ProcStat {
        ProcStat {
            pid,
            state,
            ppid,
            pgrp: pid,
        }
    }

    fn in_group(pid: i32, ppid: i32, pgrp: i32) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp,
        }
    }

    #[test]
    fn parses_stat_lines_with_awkward_command_names() {
        let line = "4242 (my (odd) prog) Z 1 4242 4242 0 -1 4194564 0 0 0 0";
        assert_eq!(parse_stat(line), Some(stat(4242, 'Z', 1)));
        assert_eq!(parse_stat("7 (sh) S 6 7 7 0"), Some(stat(7, 'S', 6)));
        assert_eq!(parse_stat("8 (sh) S 7 7 7 0"), Some(in_group(8, 7, 7)));
    }

    #[test]
    fn rejects_malformed_stat_lines() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("x (sh) S 1"), None);
        assert_eq!(parse_stat("7 (sh)"), None);
        assert_eq!(parse_stat("7 (sh) S notanumber"), None);
        assert_eq!(parse_stat("7 (sh) S 6"), None, "no process group");
    }

    #[test]
    fn descendants_are_found_through_any_depth_in_any_order() {
        let stats = [
            in_group(40, 30, 30), // grandchild, listed before its parent
            in_group(30, 10, 30), // child
            in_group(50, 40, 50), // great-grandchild
            stat(60, 'Z', 10),    // a zombie child: already dead
            in_group(70, 1, 70),  // not ours
            in_group(10, 1, 10),  // the root itself
        ];
        let mut pids: Vec<i32> = descendants(&stats, 10).iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![30, 40, 50]);
    }

    #[test]
    fn strays_are_descendants_outside_the_runs_groups() {
        let stats = [
            in_group(30, 10, 30), // a run's process, leading its group
            in_group(31, 30, 30), // in the run's group
            in_group(32, 31, 32), // left the group (setsid)
            in_group(33, 10, 33), // reparented to us after its parent died
        ];
        let tracked = BTreeSet::from([30]);
        let mut pids: Vec<i32> = strays(&stats, 10, &tracked).iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![32, 33]);
    }

    #[test]
    fn only_untracked_zombie_children_are_orphans() {
        let stats = [
            stat(10, 'Z', 1),  // orphaned zombie: reap
            stat(11, 'Z', 1),  // tokio's child: keep
            stat(12, 'S', 1),  // alive
            stat(13, 'Z', 99), // someone else's zombie
        ];
        let tracked = BTreeSet::from([11]);
        assert_eq!(orphan_zombies(stats, 1, &tracked), vec![10]);
    }

    #[test]
    fn only_live_members_of_the_group_count() {
        let stats = [
            in_group(30, 10, 30),
            in_group(31, 30, 30),
            ProcStat {
                state: 'Z',
                ..in_group(32, 30, 30)
            },
            in_group(33, 10, 33),
        ];
        assert_eq!(live_in_group(&stats, 30), 2);
        assert_eq!(live_in_group(&stats, 99), 0);
    }

    #[test]
    fn what_a_reaped_leader_left_in_its_group_is_counted_and_killed() {
        use std::os::unix::process::CommandExt as _;
        let group = |script: &str| {
            let mut leader = std::process::Command::new("sh")
                .args(["-c", script])
                .process_group(0)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn sh");
            let pgid = i32::try_from(leader.id()).expect("pid fits i32");
            let output = std::io::read_to_string(leader.stdout.take().expect("a pipe"));
            let pids: Vec<i32> = output
                .expect("read the pids")
                .split_whitespace()
                .map(|pid| pid.parse().expect("a pid"))
                .collect();
            assert!(leader.wait().expect("wait").success());
            (pgid, pids)
        };
        let (pgid, left) = group("sleep 30 >/dev/null & echo $!; sleep 30 >/dev/null & echo $!");
        assert_eq!(left.len(), 2);
        assert_eq!(end_leftover_group(pgid).expect("counted"), 2);
        // SIGKILL is delivered asynchronously: the processes die in a moment.
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            live_in_group(&scan_proc().expect("scan"), pgid) == 0
        });
        assert!(gone, "every member was killed");
        let (empty, _) = group("true");
        assert_eq!(end_leftover_group(empty).expect("nothing left"), 0);
    }

    #[test]
    fn only_processes_carrying_every_mark_are_killed() {
        use std::os::unix::process::CommandExt as _;
        let spawn = |mark: &str, group: Option<i32>| {
            let mut command = std::process::Command::new("sleep");
            command
                .arg("30")
                .env("LEASECRON_TEST_MARK", mark)
                .env("LEASECRON_TEST_OTHER", "same");
            if let Some(group) = group {
                command.process_group(group);
            }
            command.spawn().expect("spawn sleep")
        };
        let mark = format!("kill-marked-{}", std::process::id());
        let mut marked = spawn(&mark, None);
        let mut other = spawn("someone-else", None);
        // Marked, but in the attempt's own group: that group's SIGKILL ends it, and counts it.
        let mut in_group = spawn(&mark, Some(0));
        let group = i32::try_from(in_group.id()).expect("pid fits i32");
        let marks = [
            format!("LEASECRON_TEST_MARK={mark}"),
            "LEASECRON_TEST_OTHER=same".to_owned(),
        ];
        let killed = kill_marked(&marks, group);
        let marked_pid = i32::try_from(marked.id()).expect("pid fits i32");
        assert_eq!(killed, vec![marked_pid]);
        // The reaper test, running beside this one, may reap the zombie first (ECHILD here).
        if let Ok(status) = marked.wait() {
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9)
            );
        }
        assert!(other.try_wait().expect("try_wait").is_none(), "spared");
        assert!(in_group.try_wait().expect("try_wait").is_none(), "spared");
        for mut spared in [other, in_group] {
            let _ = spared.kill();
            let _ = spared.wait();
        }
    }

    fn wait_until_zombie(pid: i32) -> bool {
        for _ in 0..1000 {
            let zombie = scan_proc()
                .unwrap_or_default()
                .iter()
                .any(|s| s.pid == pid && s.state == 'Z');
            if zombie {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// One test, not two: a reaper pass would reap the other test's untracked zombie.
    #[tokio::test]
    #[allow(clippy::zombie_processes)] // the zombie is the point; the reaper waits for it
    async fn reaps_untracked_zombies_and_spares_tokios_children() {
        let orphan = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let orphan = i32::try_from(orphan.id()).expect("pid fits i32");
        let mut ours = spawn_tracked(Command::new("true").arg("tracked")).expect("spawn true");
        let tracked_pid = ours
            ._tracked
            .as_ref()
            .expect("a fresh child has a pid")
            .pid();
        assert!(
            wait_until_zombie(orphan),
            "the orphan exited and stayed unreaped"
        );
        assert!(wait_until_zombie(tracked_pid), "the tracked child exited");

        let me = getpid().as_raw();
        let found = orphan_zombies(scan_proc().expect("scan /proc"), me, &tracked());
        assert!(found.contains(&orphan));
        assert!(!found.contains(&tracked_pid));

        assert!(reap_orphans().expect("reaper pass") >= 1);
        let left = scan_proc().expect("scan /proc");
        assert!(
            !left.iter().any(|s| s.pid == orphan),
            "the orphan was reaped"
        );
        let status = ours
            .child
            .wait()
            .await
            .expect("tokio still owns its child's status");
        assert!(status.success());
    }
}
