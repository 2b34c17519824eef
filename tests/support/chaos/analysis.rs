//! The invariants of a chaos run, checked on what was recorded once it is over, and the report.
//!
//! See `tests/chaos.rs` for what each invariant says and why its bound is what it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::cluster::{count_by_kind, ms, Incarnation, Injected};
use super::{
    clock, Liveness, Mark, Observed, Settings, BEFORE_FAULT, JOBS, LONG, QUEUE, RECOVERY, TICK,
};

/// A tick run that starts this much after its slot was caught up, or fired late (after a freeze); on
/// time, a run starts within a few tens of milliseconds (a run state write, a fork).
const LATE: Duration = Duration::from_millis(500);
/// How many examples of each kind of finding the report lists.
const EXAMPLES: usize = 6;

/// Everything a chaos run recorded.
pub struct Input<'a> {
    pub settings: &'a Settings,
    pub observed: &'a Observed,
    pub events: &'a [Injected],
    pub incarnations: &'a [Incarnation],
    pub problems: &'a [String],
    /// What the replicas did that the design allows (reported, not violations).
    pub notes: &'a [String],
    /// Every tick slot from the first to the last of these must have run, or be lost within the bound.
    pub slots: (DateTime<Utc>, DateTime<Utc>),
    /// The whole run, start-up to teardown.
    pub elapsed: Duration,
    /// The replicas' logs (every incarnation's), for what the leaders say they caught up.
    pub logs: &'a [std::path::PathBuf],
}

/// One run of a job, assembled from its records.
#[derive(Clone, Debug)]
pub struct Run {
    pub job: String,
    pub identity: String,
    pub token: u64,
    pub slot: DateTime<Utc>,
    pub pid: i32,
    /// Its `start` record's clock; for a run stopped before it wrote one, its `term` record's.
    pub start_ns: u128,
    /// False if SIGTERM stopped it before its `start` record.
    pub started: bool,
    pub end: Option<(u128, Mark)>,
    pub busy: bool,
    pub unlocked: bool,
    pub liveness: Liveness,
    /// Index into the incarnations.
    pub incarnation: Option<usize>,
}

/// Two runs of one job alive at once, the earlier-token one on a replica frozen for longer than the
/// design covers: what only the fencing token protects against.
#[derive(Clone, Debug)]
pub struct Fenced {
    pub stale: usize,
    pub fresh: usize,
    /// The freeze (an index into the events).
    pub freeze: usize,
}

/// What a chaos run found.
pub struct Report {
    pub text: String,
    pub violations: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.violations.is_empty() {
            writeln!(f, "violations: none")
        } else {
            writeln!(f, "VIOLATIONS ({}):", self.violations.len())?;
            for violation in &self.violations {
                writeln!(f, "  - {violation}")?;
            }
            Ok(())
        }
    }
}

/// Checks every invariant; returns the figures and what was violated.
pub fn analyse(input: &Input<'_>) -> Report {
    let mut check = Check::new(input);
    check.terms();
    check.overlaps();
    check.stale_writes();
    check.slots_twice();
    check.lost_slots();
    check.sanity();
    for problem in input.problems {
        check.violate(format!("replica: {problem}"));
    }
    for note in input.notes {
        check.figure(format!("note: {note}"));
    }
    for line in &input.observed.malformed {
        check.violate(format!("malformed record {line:?}"));
    }
    check.report()
}

struct Check<'a> {
    input: &'a Input<'a>,
    runs: Vec<Run>,
    /// For each record line, the run it belongs to.
    run_of_line: Vec<usize>,
    violations: Vec<String>,
    figures: Vec<String>,
}

impl<'a> Check<'a> {
    fn new(input: &'a Input<'a>) -> Check<'a> {
        let (runs, run_of_line) = assemble(input);
        Check {
            input,
            runs,
            run_of_line,
            violations: Vec::new(),
            figures: Vec::new(),
        }
    }

    fn violate(&mut self, violation: String) {
        self.violations.push(violation);
    }

    fn figure(&mut self, figure: String) {
        self.figures.push(figure);
    }

    /// When the run's processes were gone at the latest: its end record, else when the monitor or the
    /// test's SIGKILL saw its shell gone.
    fn upper(&self, run: &Run) -> u128 {
        if let Some((ns, _)) = run.end {
            return ns;
        }
        let gone = run
            .incarnation
            .and_then(|i| self.input.incarnations[i].gone_ns)
            .filter(|&gone| gone >= run.start_ns);
        [run.liveness.dead_seen_ns, gone]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u128::MAX)
    }

    /// The long freeze of the run's replica that can have made it stale by `until`: it began by then, and
    /// the run's process already existed when it began (a run spawned after a freeze is no excuse: §2
    /// step 5 says a woken runner starts nothing under its dead term).
    fn long_freeze(&self, run: &Run, until: u128) -> Option<usize> {
        let pid = run.incarnation.map(|i| self.input.incarnations[i].pid)?;
        self.input.events.iter().position(|e| {
            e.is_long_freeze() && e.pid == pid && e.start_ns <= until && e.jobs.contains(&run.pid)
        })
    }

    // === Terms ===

    /// One term = one (identity, token): a token never names two identities, in the runs or in the
    /// Lease; the Lease's `leaseTransitions` never goes down and goes up at every acquisition.
    fn terms(&mut self) {
        let mut owners: BTreeMap<u64, String> = BTreeMap::new();
        let lines = &self.input.observed.lines;
        let mut clashes = Vec::new();
        for line in lines {
            match owners.get(&line.token) {
                Some(owner) if *owner != line.identity => clashes.push(format!(
                    "fencing token {} used by {owner} and by {}",
                    line.token, line.identity
                )),
                Some(_) => {}
                None => {
                    owners.insert(line.token, line.identity.clone());
                }
            }
        }
        let lease = &self.input.observed.lease;
        let mut lease_owners: BTreeMap<u64, String> = BTreeMap::new();
        let mut last_held: Option<&super::LeaseSeen> = None;
        let mut previous: Option<&super::LeaseSeen> = None;
        for seen in lease {
            if let Some(previous) = previous {
                if seen.transitions < previous.transitions {
                    clashes.push(format!(
                        "leaseTransitions went down from {} to {} (version {})",
                        previous.transitions, seen.transitions, seen.version
                    ));
                }
            }
            previous = Some(seen);
            let Some(holder) = &seen.holder else {
                continue;
            };
            if let Some(held) = last_held {
                let new_term = held.holder.as_ref() != Some(holder) || held.acquire != seen.acquire;
                if new_term && seen.transitions <= held.transitions {
                    clashes.push(format!(
                        "{holder} acquired the Lease (version {}) without raising leaseTransitions ({})",
                        seen.version, seen.transitions
                    ));
                }
            }
            last_held = Some(seen);
            match lease_owners.get(&seen.transitions) {
                Some(owner) if owner != holder => clashes.push(format!(
                    "leaseTransitions {} names {owner} and {holder}",
                    seen.transitions
                )),
                Some(_) => {}
                None => {
                    lease_owners.insert(seen.transitions, holder.clone());
                }
            }
        }
        for (token, owner) in &owners {
            if let Some(holder) = lease_owners.get(token) {
                if holder != owner {
                    clashes.push(format!(
                        "runs of fencing token {token} by {owner}, but the Lease gave it to {holder}"
                    ));
                }
            }
        }
        clashes.dedup();
        for clash in clashes {
            self.violate(format!("terms: {clash}"));
        }
        let lease_terms = lease_owners.len();
        self.figure(format!(
            "terms: {lease_terms} seen in the Lease ({} failovers), {} ran jobs; fencing tokens {}",
            lease_terms.saturating_sub(1),
            owners.len(),
            match (owners.keys().next(), owners.keys().next_back()) {
                (Some(first), Some(last)) => format!("{first}..={last}"),
                _ => "none".to_owned(),
            }
        ));
    }

    // === Overlaps ===

    /// No two runs of a job are alive at once, unless the older-token one was on a replica frozen for
    /// longer than the design covers (reported apart, with the tokens).
    fn overlaps(&mut self) {
        let mut covered: Vec<String> = Vec::new();
        let mut fenced: Vec<Fenced> = Vec::new();
        for job in JOBS {
            let mut order: Vec<usize> = (0..self.runs.len())
                .filter(|&i| self.runs[i].job == job)
                .collect();
            order.sort_by_key(|&i| (self.runs[i].start_ns, i));
            for (position, &b) in order.iter().enumerate() {
                if !self.runs[b].started {
                    continue;
                }
                let pairs = self.overlapping(&order[..position], b);
                for a in pairs {
                    match self.classify(a, b) {
                        Ok(found) => fenced.push(found),
                        Err(why) => covered.push(why),
                    }
                }
            }
        }
        let (whole, runner): (Vec<&Fenced>, Vec<&Fenced>) = fenced
            .iter()
            .partition(|f| self.input.events[f.freeze].freeze.is_some_and(|(w, _)| w));
        self.figure(format!(
            "overlaps the design covers: {} (must be 0)",
            covered.len()
        ));
        for (what, found) in [
            ("whole-replica SIGSTOP (a frozen host)", &whole),
            ("runner-only SIGSTOP (its jobs run on)", &runner),
        ] {
            let stale: BTreeSet<usize> = found.iter().map(|f| f.stale).collect();
            self.figure(format!(
                "fencing-only overlaps after a long {what}: {} pairs, {} stale runs{}",
                found.len(),
                stale.len(),
                if found.is_empty() {
                    ""
                } else {
                    "; stale token < fresh token in every pair:"
                }
            ));
            for f in found.iter().take(EXAMPLES) {
                let (stale, fresh) = (&self.runs[f.stale], &self.runs[f.fresh]);
                let freeze = &self.input.events[f.freeze];
                self.figures.push(format!(
                    "    stale {} (frozen #{} {} ms) < fresh {}",
                    self.describe(stale),
                    freeze.seq,
                    ms(freeze.end_ns - freeze.start_ns),
                    self.describe(fresh)
                ));
            }
        }
        for why in covered {
            self.violate(format!("overlap: {why}"));
        }
    }

    /// The runs among `before` (started no later than `b`) that were alive when `b` began.
    fn overlapping(&self, before: &[usize], b: usize) -> Vec<usize> {
        let run_b = &self.runs[b];
        let mut pairs: Vec<usize> = before
            .iter()
            .copied()
            .filter(|&a| {
                let run_a = &self.runs[a];
                match run_a.end {
                    // Written before its process ended: surely alive at b's start.
                    Some((end, _)) => end > run_b.start_ns,
                    // Only its death seen, late by up to a monitor interval: the lock probe decides,
                    // unless a's life was invisible to it.
                    None => (run_b.busy || run_a.unlocked) && self.upper(run_a) > run_b.start_ns,
                }
            })
            .collect();
        if pairs.is_empty() && run_b.busy {
            // The kernel saw some run alive; the records cannot say which at this precision: blame one
            // that a long freeze explains, else the one that ended last.
            let loose = |a: usize| self.upper(&self.runs[a]) + 1_000_000_000 >= run_b.start_ns;
            let candidates: Vec<usize> = before.iter().copied().filter(|&a| loose(a)).collect();
            let explained = candidates.iter().copied().find(|&a| {
                self.runs[a].token < run_b.token
                    && self.long_freeze(&self.runs[a], run_b.start_ns).is_some()
            });
            match explained.or_else(|| {
                candidates
                    .iter()
                    .copied()
                    .max_by_key(|&a| self.upper(&self.runs[a]))
            }) {
                Some(a) => pairs.push(a),
                None => pairs.push(usize::MAX),
            }
        }
        pairs
    }

    fn classify(&self, a: usize, b: usize) -> Result<Fenced, String> {
        let run_b = &self.runs[b];
        if a == usize::MAX {
            return Err(format!(
                "{} found another run of its job alive (lock busy), but no recorded run was",
                self.describe(run_b)
            ));
        }
        let run_a = &self.runs[a];
        let pair = format!("{} and {}", self.describe(run_a), self.describe(run_b));
        if run_a.token == run_b.token {
            return Err(format!(
                "{pair}: two runs of one term at once (Forbid, Queue)"
            ));
        }
        let (stale, fresh) = if run_a.token < run_b.token {
            (a, b)
        } else {
            (b, a)
        };
        let began = run_b.start_ns;
        if let Some(freeze) = self.long_freeze(&self.runs[stale], began) {
            return Ok(Fenced {
                stale,
                fresh,
                freeze,
            });
        }
        if let Some(freeze) = self.long_freeze(&self.runs[fresh], began) {
            return Err(format!(
                "{pair}: the run of the frozen replica (#{}) has the higher fencing token",
                self.input.events[freeze].seq
            ));
        }
        Err(format!(
            "{pair}: no freeze beyond the design's margin explains it"
        ))
    }

    // === Stale writes ===

    /// A record with a lower token than one already written (what a downstream system fencing on the
    /// token rejects) comes only from a run on a replica frozen beyond the margin.
    fn stale_writes(&mut self) {
        let mut max = 0;
        let mut explained = 0;
        let mut unexplained = Vec::new();
        for (i, line) in self.input.observed.lines.iter().enumerate() {
            if line.token < max {
                let run = &self.runs[self.run_of_line[i]];
                if self.long_freeze(run, line.ns).is_some() {
                    explained += 1;
                } else {
                    unexplained.push(format!(
                        "{:?} record of {} written after a record of token {max}",
                        line.mark,
                        self.describe(run)
                    ));
                }
            }
            max = max.max(line.token);
        }
        self.figure(format!(
            "stale writes (a record whose token is below one already written): {} after long freezes, {} otherwise (must be 0)",
            explained,
            unexplained.len()
        ));
        for why in unexplained {
            self.violate(format!("stale write: {why}"));
        }
    }

    // === Slots ===

    /// No slot of any job is started twice.
    fn slots_twice(&mut self) {
        let mut by_slot: BTreeMap<(String, DateTime<Utc>), Vec<usize>> = BTreeMap::new();
        for (i, run) in self.runs.iter().enumerate() {
            by_slot
                .entry((run.job.clone(), run.slot))
                .or_default()
                .push(i);
        }
        let twice: Vec<Vec<usize>> = by_slot.into_values().filter(|r| r.len() > 1).collect();
        self.figure(format!("slots run twice: {} (must be 0)", twice.len()));
        for runs in twice {
            let runs: Vec<String> = runs.iter().map(|&i| self.describe(&self.runs[i])).collect();
            self.violate(format!("slot run twice: {}", runs.join(" and ")));
        }
    }

    /// Every tick slot in the checked range ran, or fell within a window of a fault that touched the
    /// leader: [fault start − BEFORE_FAULT, fault end + latency + RECOVERY].
    fn lost_slots(&mut self) {
        let (from, until) = self.input.slots;
        let started: BTreeSet<DateTime<Utc>> = self
            .runs
            .iter()
            .filter(|r| r.job == TICK)
            .map(|r| r.slot)
            .collect();
        let mut expected = 0;
        let mut lost = Vec::new();
        let mut slot = from;
        while slot <= until {
            expected += 1;
            if !started.contains(&slot) {
                lost.push(slot);
            }
            slot += chrono::Duration::seconds(1);
        }
        let mut unexplained = Vec::new();
        let mut by_fault: BTreeMap<usize, usize> = BTreeMap::new();
        let mut by_restart = Vec::new();
        for &slot in &lost {
            let at = ns_of(slot);
            // For the report, the latest fault before the slot, a restart only if nothing else.
            let explaining = |restart: bool| {
                self.input
                    .events
                    .iter()
                    .rev()
                    .filter(|e| (e.role.is_none()) == restart)
                    .find(|e| window(e).contains(&at) && self.touched_leader(e))
            };
            match explaining(false).or_else(|| explaining(true)) {
                Some(e) => {
                    *by_fault.entry(e.seq).or_default() += 1;
                    if e.role.is_none() {
                        by_restart.push(format!(
                            "{} (restart #{} of {} at {})",
                            text(slot),
                            e.seq,
                            e.target,
                            clock(e.start_ns)
                        ));
                    }
                }
                None => unexplained.push(slot),
            }
        }
        let late = self
            .runs
            .iter()
            .filter(|r| r.job == TICK && r.start_ns > ns_of(r.slot) + LATE.as_nanos())
            .count();
        let ran: usize = self.runs.iter().filter(|r| r.job == TICK).count();
        let longs: usize = self.runs.iter().filter(|r| r.job == LONG).count();
        let queues: usize = self.runs.iter().filter(|r| r.job == QUEUE).count();
        let killed = self.runs.iter().filter(|r| r.end.is_none()).count();
        let terminated = self
            .runs
            .iter()
            .filter(|r| matches!(r.end, Some((_, Mark::Term))))
            .count();
        let caught_up = |job: &str| self.logged(job, "catching up a slot");
        self.figure(format!(
            "runs: {ran} tick ({late} started over {} ms after their slot), {longs} long, {queues} queue; {terminated} ended by SIGTERM, {killed} killed; caught up per the leaders' logs: {} tick, {} long, {} queue",
            LATE.as_millis(),
            caught_up(TICK),
            caught_up(LONG),
            caught_up(QUEUE)
        ));
        self.figure(format!(
            "queue slots per the leaders' logs: {} queued, {} started from the queue, {} replaced by a later fire, {} dropped with their term",
            self.logged(QUEUE, "msg=\"slot queued"),
            self.logged(QUEUE, "msg=\"queued slot starting"),
            self.logged(QUEUE, "msg=\"queued slot replaced"),
            self.logged(QUEUE, "msg=\"queued slot dropped"),
        ));
        self.figure(format!(
            "tick slots {}..={}: {expected} due, {} lost, {} of them outside the bound (must be 0); bound: within [fault start - {} ms, fault end + latency + {} ms] of a fault whose target held the Lease in that window",
            text(from),
            text(until),
            lost.len(),
            unexplained.len(),
            BEFORE_FAULT.as_millis(),
            RECOVERY.as_millis()
        ));
        if !by_fault.is_empty() {
            let per: Vec<String> = by_fault
                .iter()
                .map(|(seq, n)| format!("#{seq} {}: {n}", self.input.events[*seq].kind))
                .collect();
            self.figure(format!("  lost slots by fault: {}", per.join(", ")));
        }
        if !by_restart.is_empty() {
            self.figure(format!(
                "  lost slots only a restart explains: {}",
                by_restart.join(", ")
            ));
        }
        if let Some(gap) = self.longest_tick_gap() {
            self.figure(format!(
                "longest stretch between two tick starts: {} ms",
                ms(gap)
            ));
        }
        for slot in unexplained {
            self.violate(format!(
                "slot {} of {TICK} lost outside the bound (no fault that touched the leader within it)",
                text(slot)
            ));
        }
    }

    /// True if the fault's target process held the Lease at some moment of the fault's window: a version
    /// of the Lease naming its identity, in a term first seen while that process lived (not a term of an
    /// earlier process of the same identity, which a restart inherits by name only); each version from
    /// when the monitor saw it until the next.
    fn touched_leader(&self, event: &Injected) -> bool {
        let Some(process) = self.input.incarnations.iter().find(|i| i.pid == event.pid) else {
            return false;
        };
        let window = window(event);
        let lease = &self.input.observed.lease;
        let mut term_seen: HashMap<(u64, &str), u128> = HashMap::new();
        lease.iter().enumerate().any(|(k, seen)| {
            let Some(holder) = seen.holder.as_deref() else {
                return false;
            };
            let term_began = *term_seen
                .entry((seen.transitions, holder))
                .or_insert(seen.at_ns);
            let until = lease.get(k + 1).map_or(u128::MAX, |next| next.at_ns);
            holder == process.identity
                && term_began >= process.started_ns
                && process.ended_ns.is_none_or(|ended| term_began <= ended)
                && seen.at_ns <= *window.end()
                && until >= *window.start()
        })
    }

    fn longest_tick_gap(&self) -> Option<u128> {
        let mut starts: Vec<u128> = self
            .runs
            .iter()
            .filter(|r| r.job == TICK && r.started)
            .map(|r| r.start_ns)
            .collect();
        starts.sort_unstable();
        starts.windows(2).map(|w| w[1] - w[0]).max()
    }

    /// How many lines of the replicas' logs (every incarnation's) are about `job` and contain `what`.
    fn logged(&self, job: &str, what: &str) -> usize {
        self.input
            .logs
            .iter()
            .filter_map(|log| std::fs::read_to_string(log).ok())
            .map(|text| {
                text.lines()
                    .filter(|l| l.contains(what) && l.contains(&format!("job={job} ")))
                    .count()
            })
            .sum()
    }

    /// The run did something: every job ran, the queue job queued, faults were injected.
    fn sanity(&mut self) {
        for job in JOBS {
            if !self.runs.iter().any(|r| r.job == job && r.end.is_some()) {
                self.violate(format!("no run of {job} finished: the run checked nothing"));
            }
        }
        if self.logged(QUEUE, "msg=\"queued slot starting") == 0 {
            self.violate(format!(
                "no slot of {QUEUE} started from its queue: the run checked nothing of Queue"
            ));
        }
        let faults = self
            .input
            .events
            .iter()
            .filter(|e| e.role.is_some())
            .count();
        if faults == 0 {
            self.violate("no fault was injected".to_owned());
        }
    }

    fn describe(&self, run: &Run) -> String {
        let end = match run.end {
            Some((ns, Mark::End)) => format!("end {}", clock(ns)),
            Some((ns, _)) => format!("SIGTERM {}", clock(ns)),
            None => match self.upper(run) {
                u128::MAX => "never seen gone".to_owned(),
                gone => format!("gone by {}", clock(gone)),
            },
        };
        format!(
            "{}@{} by {} token {} [{} .. {end}{}{}]",
            run.job,
            run.slot.format("%H:%M:%S"),
            run.identity,
            run.token,
            if run.started {
                format!("start {}", clock(run.start_ns))
            } else {
                "no start".to_owned()
            },
            if run.busy { ", lock busy" } else { "" },
            if run.unlocked { ", unlocked" } else { "" },
        )
    }

    fn report(self) -> Report {
        let input = self.input;
        let settings = input.settings;
        let restarts = input.events.iter().filter(|e| e.role.is_none()).count();
        let mut text = String::new();
        text.push_str(&format!(
            "chaos: seed {} ({:#x}), {} s of faults, {} replicas, {:.1} s in all\n",
            settings.seed,
            settings.seed,
            settings.chaos.as_secs(),
            settings.replicas,
            input.elapsed.as_secs_f64()
        ));
        text.push_str(&format!("reproduce: {}\n", settings.reproduce()));
        let faults: Vec<String> = count_by_kind(input.events)
            .into_iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        text.push_str(&format!(
            "faults: {} injected, {restarts} restarts, {} processes in all; {}\n",
            input.events.len() - restarts,
            input.incarnations.len(),
            faults.join(", ")
        ));
        for figure in &self.figures {
            text.push_str(figure);
            text.push('\n');
        }
        Report {
            text,
            violations: self.violations,
        }
    }
}

/// The runs, from the record lines, and for each line its run.
fn assemble(input: &Input<'_>) -> (Vec<Run>, Vec<usize>) {
    let observed = input.observed;
    let mut runs: Vec<Run> = Vec::new();
    let mut run_of_line = Vec::with_capacity(observed.lines.len());
    let mut open: HashMap<i32, usize> = HashMap::new();
    for (i, line) in observed.lines.iter().enumerate() {
        let new_run = |started: bool, end: Option<(u128, Mark)>| Run {
            job: line.job.clone(),
            identity: line.identity.clone(),
            token: line.token,
            slot: line.slot,
            pid: line.pid,
            start_ns: line.ns,
            started,
            end,
            busy: line.busy,
            unlocked: line.unlocked,
            liveness: observed.liveness.get(&i).copied().unwrap_or_default(),
            incarnation: incarnation_of(input.incarnations, &line.identity, line.ns),
        };
        let index = match line.mark {
            Mark::Start => {
                runs.push(new_run(true, None));
                open.insert(line.pid, runs.len() - 1);
                runs.len() - 1
            }
            Mark::End | Mark::Term => match open.remove(&line.pid) {
                Some(r)
                    if runs[r].job == line.job
                        && runs[r].token == line.token
                        && runs[r].slot == line.slot =>
                {
                    runs[r].end = Some((line.ns, line.mark));
                    r
                }
                _ => {
                    runs.push(new_run(false, Some((line.ns, line.mark))));
                    runs.len() - 1
                }
            },
        };
        run_of_line.push(index);
    }
    (runs, run_of_line)
}

/// The incarnation of `identity` alive at `ns`.
fn incarnation_of(incarnations: &[Incarnation], identity: &str, ns: u128) -> Option<usize> {
    incarnations.iter().position(|inc| {
        inc.identity == identity
            && inc.started_ns <= ns
            && inc.ended_ns.is_none_or(|ended| ns <= ended)
    })
}

/// The slots a fault may cost: from [`BEFORE_FAULT`] before it to [`RECOVERY`] after it (and after the
/// requests a latency fault held back).
fn window(event: &Injected) -> std::ops::RangeInclusive<u128> {
    let start = event.start_ns.saturating_sub(BEFORE_FAULT.as_nanos());
    start..=event.end_ns + event.extra.as_nanos() + RECOVERY.as_nanos()
}

fn ns_of(at: DateTime<Utc>) -> u128 {
    at.timestamp_nanos_opt().unwrap_or_default().max(0) as u128
}

fn text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
