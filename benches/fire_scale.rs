//! The cost of one fire with many jobs loaded: does it grow with the number of jobs?
//!
//! A few measured jobs (`SCALE_MEASURED`, default 4) fire every second (`* * * * * *`, `Allow`) and run a
//! probe: the child records its own clock first, so the lag is slot → child running, as in `start_lag`.
//! The runner's own `start_delay` (slot → just before `spawn()`) is reported beside it. Each scenario runs
//! leasecron's real timers, dispatcher and runner as a leader, with the observers `run` wires (metrics,
//! `/status`), for `SCALE_SECONDS` (default 12) after a warm-up (every timer started), in this process:
//!
//! - 10 jobs: the measured ones, the others far away (a date half a year off);
//! - `SCALE_JOBS` (default 10 000) jobs, the others far away: nothing but the measured jobs fires;
//! - the same number, the others firing every `SCALE_SPREAD_MINUTES` (default 10) minutes, each at a
//!   second of its own (10 000 jobs: about 17 fires a second besides the measured ones), running the probe
//!   too;
//! - 10 and `SCALE_JOBS` jobs with the file run state (every slot claimed, written and fsynced before its
//!   spawn), whose record already holds an entry for every job (each ran before): the steady state;
//! - 10 jobs with as much memory touched (ballast) as the many jobs took: the cost of a fork grows with the
//!   memory of the process that forks;
//! - `SCALE_JOBS` jobs far away, with the HTTP endpoints served and `/metrics` and `/status` fetched every
//!   second;
//! - 10 jobs, `SCALE_JOBS` jobs far away, and `SCALE_JOBS` jobs spread, each again with every process
//!   started through the run supervisor (`Launcher::Supervised`, as `leasecron run` does: a small child
//!   process forks, not this one), the others with `Launcher::InProcess` (the spawner thread forks this
//!   process). Each supervised scenario runs right after its in-process twin, so that both see about the
//!   same load.
//!
//! For a supervised run, "slot → spawn()" is the runner's `start_delay`: slot → the request to the
//! supervisor, before it is sent; the wait in the supervisor's line, its fork and the exec are in the rest.
//!
//! ```text
//! cargo bench --bench fire_scale                                   # ~3 min
//! SCALE_SECONDS=60 SCALE_JOBS=20000 cargo bench --bench fire_scale
//! SCALE_ONLY=1,6 cargo bench --bench fire_scale                    # only these scenarios (0-based)
//! ```

#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;
#[path = "../tests/support/scale_jobs.rs"]
pub mod scale_jobs;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{self, JobSet, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::event::{DispatchEvent, ElectionEvent, RunEvent};
use leasecron::http::{self, Endpoints, Health, StatusBoard};
use leasecron::metrics::Metrics;
use leasecron::observe::{self, Observer, Observers};
use scale::{Probe, Summary, PROBE_ENV};
use scale_jobs::JobSpec;
use tokio_util::sync::CancellationToken;

const MEASURED_PREFIX: &str = "measured-";
const WIDTH: usize = 50;
/// Longest wait for every timer to have started.
const WARM_UP_LIMIT: Duration = Duration::from_secs(60);

/// What else the jobs file holds besides the measured jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Others {
    FarAway,
    Spread { minutes: usize },
}

/// Which process forks each run's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// This process, on the runner's spawner thread (`Launcher::InProcess`).
    InProcess,
    /// The run supervisor, a small child process (`Launcher::Supervised`, what `leasecron run` uses).
    Supervised,
}

impl Launch {
    fn label(self) -> &'static str {
        match self {
            Launch::InProcess => "in-process",
            Launch::Supervised => "supervised",
        }
    }
}

/// Runs scenario N in a child process (set by the parent).
const SCENARIO_ENV: &str = "SCALE_SCENARIO";
/// Where the child writes its figures.
const RESULT_ENV: &str = "SCALE_RESULT_OUT";
/// How many MiB of ballast the child touches first.
const BALLAST_ENV: &str = "SCALE_BALLAST_MIB";

/// One scenario's figures.
struct Figures {
    /// Child clock − slot, the first measured job spawned at each slot.
    first: Vec<f64>,
    /// Child clock − slot, measured jobs.
    lag: Vec<f64>,
    /// Slot → spawn() (the runner's start_delay), measured jobs.
    to_spawn: Vec<f64>,
    /// Child clock − slot, the other jobs' fires.
    others_lag: Vec<f64>,
    /// Fires of the measured jobs expected in the window, and how many ran.
    expected: usize,
    /// This process's RSS with the jobs loaded and every timer running.
    rss_mib: f64,
    /// The RSS of the process that forks the runs at the same moment: this one, or the supervisor.
    forker_rss_mib: f64,
    /// Of which anonymous memory (`RssAnon`): what `fork` copies the page tables of and marks
    /// copy-on-write; the binary's file-backed pages are not copied.
    forker_rss_anon_mib: f64,
}

impl Figures {
    /// Line-based, for the parent.
    fn encode(&self) -> String {
        let line = |name: &str, values: &[f64]| {
            let values: Vec<String> = values.iter().map(f64::to_string).collect();
            format!("{name} {}\n", values.join(" "))
        };
        [
            line("lag", &self.lag),
            line("first", &self.first),
            line("spawn", &self.to_spawn),
            line("others", &self.others_lag),
            line("expected", &[self.expected as f64]),
            line("rss", &[self.rss_mib]),
            line("forker_rss", &[self.forker_rss_mib]),
            line("forker_rss_anon", &[self.forker_rss_anon_mib]),
        ]
        .concat()
    }

    fn decode(text: &str) -> Figures {
        let field = |name: &str| -> Vec<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        };
        Figures {
            first: field("first"),
            lag: field("lag"),
            to_spawn: field("spawn"),
            others_lag: field("others"),
            expected: field("expected").first().copied().unwrap_or(0.0) as usize,
            rss_mib: field("rss").first().copied().unwrap_or(0.0),
            forker_rss_mib: field("forker_rss").first().copied().unwrap_or(0.0),
            forker_rss_anon_mib: field("forker_rss_anon").first().copied().unwrap_or(0.0),
        }
    }
}

/// The scenarios, each run in a fresh process (so that one's memory does not inflate the next one's).
#[derive(Debug, Clone, Copy)]
struct Scenario {
    jobs: usize,
    others: Others,
    state: bool,
    /// Touch this much extra memory first: 10 jobs at the RSS of many.
    ballast: bool,
    /// Serve the HTTP endpoints, and GET `/metrics` and `/status` every second as a scraper would.
    scraped: bool,
    /// Which process forks.
    launch: Launch,
}

fn main() {
    if scale::probe_if_asked() {
        return;
    }
    let jobs: usize = scale::env_or("SCALE_JOBS", 10_000);
    let measured: usize = scale::env_or("SCALE_MEASURED", 4);
    let seconds: u64 = scale::env_or("SCALE_SECONDS", 12);
    let spread: usize = scale::env_or("SCALE_SPREAD_MINUTES", 10);
    let scenarios = [
        Scenario {
            jobs: 10,
            others: Others::FarAway,
            state: false,
            ballast: false,
            scraped: false,
            launch: Launch::InProcess,
        },
        Scenario {
            jobs,
            others: Others::FarAway,
            state: false,
            ballast: false,
            scraped: false,
            launch: Launch::InProcess,
        },
        Scenario {
            jobs,
            others: Others::Spread { minutes: spread },
            state: false,
            ballast: false,
            scraped: false,
            launch: Launch::InProcess,
        },
        Scenario {
            jobs: 10,
            others: Others::FarAway,
            state: false,
            ballast: true,
            scraped: false,
            launch: Launch::InProcess,
        },
        Scenario {
            jobs: 10,
            others: Others::FarAway,
            state: true,
            ballast: false,
            scraped: false,
            launch: Launch::InProcess,
        },
        Scenario {
            jobs,
            others: Others::FarAway,
            state: true,
            ballast: false,
            scraped: false,
            launch: Launch::InProcess,
        },
        Scenario {
            jobs,
            others: Others::FarAway,
            state: false,
            ballast: false,
            scraped: true,
            launch: Launch::InProcess,
        },
        // The same through the run supervisor (indices 7 to 9: the results of 0 to 6 keep their keys).
        Scenario {
            jobs: 10,
            others: Others::FarAway,
            state: false,
            ballast: false,
            scraped: false,
            launch: Launch::Supervised,
        },
        Scenario {
            jobs,
            others: Others::FarAway,
            state: false,
            ballast: false,
            scraped: false,
            launch: Launch::Supervised,
        },
        Scenario {
            jobs,
            others: Others::Spread { minutes: spread },
            state: false,
            ballast: false,
            scraped: false,
            launch: Launch::Supervised,
        },
    ];
    // Each supervised scenario right after its in-process twin; the ballast after 0 and 1 (it takes the
    // RSS they measured).
    let order = [0, 7, 1, 8, 2, 9, 3, 4, 5, 6];
    debug_assert_eq!(order.len(), scenarios.len());
    if let Ok(index) = std::env::var(SCENARIO_ENV) {
        let index: usize = index.parse().expect("a scenario index");
        let out = std::env::var_os(RESULT_ENV).expect("a result file");
        let ballast_mib: usize = scale::env_or(BALLAST_ENV, 0);
        let figures = run_here(scenarios[index], measured, seconds, ballast_mib);
        std::fs::write(out, figures.encode()).expect("write the figures");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "fire lag: {measured} measured 1-second jobs (`* * * * * *`, all due at the same slot), {seconds} s per \
         scenario after warm-up, each scenario in a fresh process; child's own clock − slot"
    );
    let fires_per_second = (jobs - measured) as f64 / (60.0 * spread as f64);
    let only: Option<Vec<usize>> = std::env::var("SCALE_ONLY").ok().map(|list| {
        list.split(',')
            .filter_map(|i| i.trim().parse().ok())
            .collect()
    });
    let mut results: Vec<Option<(String, Figures)>> = scenarios.iter().map(|_| None).collect();
    for index in order {
        let scenario = scenarios[index];
        if only.as_ref().is_some_and(|only| !only.contains(&index)) {
            continue;
        }
        let ballast_mib = match (scenario.ballast, &results[0], &results[1]) {
            // The RSS the far-away jobs added.
            (true, Some(small), Some(large)) => {
                (large.1.rss_mib - small.1.rss_mib).max(0.0) as usize
            }
            (true, ..) => scale::env_or(BALLAST_ENV, 170),
            (false, ..) => 0,
        };
        let name = match (
            scenario.jobs,
            scenario.others,
            scenario.state,
            scenario.ballast,
        ) {
            (n, ..) if scenario.scraped => {
                format!("{n} jobs, /metrics and /status GET every second")
            }
            (n, _, false, true) => format!("{n} jobs + {ballast_mib} MiB of ballast"),
            (n, Others::FarAway, false, false) => format!("{n} jobs, the others far away"),
            (n, Others::Spread { .. }, _, _) => {
                format!("{n} jobs, the others {fires_per_second:.1} fires/s")
            }
            (n, _, true, _) => format!("{n} jobs + file run state"),
        };
        let name = match scenario.launch {
            Launch::InProcess => name,
            Launch::Supervised => format!("{name}, supervised"),
        };
        let out = dir.path().join(format!("figures-{index}"));
        let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .env(SCENARIO_ENV, index.to_string())
            .env(RESULT_ENV, &out)
            .env(BALLAST_ENV, ballast_mib.to_string())
            .status()
            .expect("run the scenario");
        assert!(status.success(), "scenario {name} failed: {status}");
        let figures = Figures::decode(&std::fs::read_to_string(&out).expect("figures"));
        eprintln!(
            "{name}: {} of {} measured fires ran; RSS {:.0} MiB, the forking process's {:.0} MiB",
            figures.lag.len(),
            figures.expected,
            figures.rss_mib,
            figures.forker_rss_mib
        );
        results[index] = Some((name, figures));
    }
    let by_index = |i: usize| results.get(i).and_then(Option::as_ref);
    let ran: Vec<&(String, Figures)> = order.iter().filter_map(|&i| by_index(i)).collect();
    println!();
    Summary::header(WIDTH);
    for (name, figures) in ran.iter().copied() {
        Summary::print(Summary::of(figures.lag.clone()), name, WIDTH);
        Summary::print(
            Summary::of(figures.first.clone()),
            "  first spawned of each slot",
            WIDTH,
        );
        Summary::print(
            Summary::of(figures.to_spawn.clone()),
            "  slot → spawn() (runner)",
            WIDTH,
        );
        if !figures.others_lag.is_empty() {
            Summary::print(
                Summary::of(figures.others_lag.clone()),
                "  the other jobs' fires",
                WIDTH,
            );
        }
    }
    println!();
    let of = |i: usize, pick: fn(&Figures) -> &Vec<f64>| {
        Summary::of(pick(&by_index(i)?.1).clone()).map(|s| (s.median, s.p99))
    };
    // (base, other): in-process 10 → 10 000 jobs and the rest as before; supervised 10 → 10 000 jobs;
    // supervised / in-process at the same job count.
    let pairs = [
        (0, 1),
        (0, 2),
        (0, 3),
        (4, 5),
        (1, 6),
        (7, 8),
        (7, 9),
        (0, 7),
        (1, 8),
        (2, 9),
    ];
    for (base, other) in pairs {
        let (Some(a), Some(b)) = (of(base, |f| &f.lag), of(other, |f| &f.lag)) else {
            continue;
        };
        let (Some(fa), Some(fb)) = (of(base, |f| &f.first), of(other, |f| &f.first)) else {
            continue;
        };
        let (Some(sa), Some(sb)) = (of(base, |f| &f.to_spawn), of(other, |f| &f.to_spawn)) else {
            continue;
        };
        println!(
            "{:<22} / {:<22}: lag median {:.2}x p99 {:.2}x; first of slot median {:.2}x; slot → spawn() median {:.2}x p99 {:.2}x",
            by_index(other).map_or("", |r| r.0.as_str()), by_index(base).map_or("", |r| r.0.as_str()), b.0 / a.0, b.1 / a.1, fb.0 / fa.0, sb.0 / sa.0, sb.1 / sa.1
        );
    }
    println!();
    for (launch, small, large) in [(Launch::InProcess, 0, 1), (Launch::Supervised, 7, 8)] {
        let (Some(a), Some(b)) = (of(small, |f| &f.lag), of(large, |f| &f.lag)) else {
            continue;
        };
        println!(
            "fire lag {jobs} vs 10 jobs, {}: median {:.2} vs {:.2} ms ({:.2}x), p99 {:.2} vs {:.2} ms ({:.2}x)",
            launch.label(),
            b.0,
            a.0,
            b.0 / a.0,
            b.1,
            a.1,
            b.1 / a.1
        );
    }
    for (name, figures) in ran.iter().copied() {
        println!(
            "{name}: {} of {} measured fires ran, process RSS {:.0} MiB, the forking process's {:.0} MiB ({:.1} MiB anonymous)",
            figures.lag.len(),
            figures.expected,
            figures.rss_mib,
            figures.forker_rss_mib,
            figures.forker_rss_anon_mib
        );
    }
    println!(
        "goal: the cost per fire does not grow with the number of jobs: ≤ 2x or + 1 ms (compare medians; the p99 of {} samples is near the max)",
        measured as u64 * seconds
    );
    let mut report = report::Report::new("fire_scale");
    report
        .param("jobs", jobs)
        .param("measured", measured)
        .param("seconds", seconds)
        .param("spread_minutes", spread)
        .param("spread_fires_per_second", fires_per_second);
    for (index, scenario) in scenarios.iter().enumerate() {
        let Some((name, figures)) = by_index(index) else {
            continue;
        };
        let key = |field: &str| format!("scenario{index}.{field}");
        report
            .raw(
                &key("scenario"),
                serde_json::json!({
                    "name": name,
                    "jobs": scenario.jobs,
                    "others": match scenario.others {
                        Others::FarAway => "far away".to_owned(),
                        Others::Spread { minutes } => format!("every {minutes} min, spread"),
                    },
                    "file_run_state": scenario.state,
                    "ballast": scenario.ballast,
                    "scraped": scenario.scraped,
                    "launcher": scenario.launch.label(),
                    "run_order": order.iter().position(|&i| i == index),
                }),
            )
            .samples(&key("lag"), "ms", &figures.lag)
            .samples(&key("first_of_slot"), "ms", &figures.first)
            .samples(&key("to_spawn"), "ms", &figures.to_spawn)
            .samples(&key("others_lag"), "ms", &figures.others_lag)
            .value(&key("expected"), figures.expected as f64, "fires")
            .value(&key("ran"), figures.lag.len() as f64, "fires")
            .value(&key("rss"), figures.rss_mib, "MiB")
            .value(&key("forker_rss"), figures.forker_rss_mib, "MiB")
            .value(&key("forker_rss_anon"), figures.forker_rss_anon_mib, "MiB");
    }
    report.write();
}

/// Runs one scenario in this process.
fn run_here(scenario: Scenario, measured: usize, seconds: u64, ballast_mib: usize) -> Figures {
    // Touched, so that it is resident (and copied by every fork, as the jobs' memory is).
    let ballast: Vec<u8> = vec![1; ballast_mib * 1024 * 1024];
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let figures = runtime.block_on(scenario_run(dir.path(), scenario, measured, seconds));
    std::hint::black_box(&ballast);
    figures
}

async fn scenario_run(work: &Path, scenario: Scenario, measured: usize, seconds: u64) -> Figures {
    let (total, others, with_state) = (scenario.jobs, scenario.others, scenario.state);
    let probes = work.join("probes");
    let set = jobs(total, measured, others, &probes);
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let ledger = match with_state {
        true => scale::steady_state_ledger(work, &set).await,
        false => scale::memory_ledger(),
    };
    let status = Arc::new(StatusBoard::new("bench", Arc::clone(&ledger)));
    let collector = Arc::new(Collector::default());
    metrics.set_jobs(&set);
    status.set_jobs(&set);
    let mut observers = Observers::new();
    observers.push(Arc::clone(&metrics) as Arc<dyn Observer>);
    observers.push(Arc::clone(&status) as Arc<dyn Observer>);
    observers.push(Arc::clone(&collector) as Arc<dyn Observer>);
    let (senders, receivers) = observe::channels();
    let fan_out = tokio::spawn(observers.run(receivers));
    drop(senders.election);

    let (handle, leadership, _leader) = scale::lead();
    let serving = CancellationToken::new();
    let scraper = match scenario.scraped {
        true => {
            let endpoints = Endpoints {
                health: Health::new(leadership.clone()),
                metrics: Arc::clone(&metrics),
                status: Arc::clone(&status),
            };
            Some(scrape_every_second(endpoints, serving.clone()).await)
        }
        false => None,
    };
    let (runner, supervisor) = scale::bench_runner(
        matches!(scenario.launch, Launch::Supervised),
        Arc::clone(&clock),
        senders.runs,
        Arc::clone(&ledger),
    );
    let dispatcher =
        Dispatcher::new(runner, leadership, clock, ledger).with_events(senders.dispatch);
    let stop = CancellationToken::new();
    let set = Arc::new(set);
    let running = {
        let stop = stop.clone();
        let (_jobs_tx, jobs) = tokio::sync::watch::channel(Arc::clone(&set));
        tokio::spawn(async move {
            dispatcher.run(jobs, stop).await;
            drop(_jobs_tx);
        })
    };
    // Warm-up: every timer has started and reported its next fire.
    let warm = tokio::time::Instant::now();
    while collector.next_runs.load(Ordering::Relaxed) < total - measured
        && warm.elapsed() < WARM_UP_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from = scale::next_whole_second(Utc::now());
    let until = from + chrono::Duration::seconds(seconds as i64);
    let rss_mib = scale::rss_mib(std::process::id());
    let forker = supervisor
        .as_ref()
        .map_or(std::process::id(), |supervisor| supervisor.pid());
    let forker_rss_mib = scale::rss_mib(forker);
    let forker_rss_anon_mib = scale::status_kib(forker, "RssAnon:") as f64 / 1024.0;
    tokio::time::sleep(
        (until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(500),
    )
    .await;
    stop.cancel();
    serving.cancel();
    if let Some(scraper) = scraper {
        let scrapes = scraper.join().expect("the scraper ends");
        eprintln!("{scrapes} requests answered");
    }
    running.await.expect("the dispatcher stops");
    handle.end().await;
    if let Some(supervisor) = &supervisor {
        supervisor.stop().await;
    }
    // Every sender is gone once the runner is (the dispatcher held it): the fan-out task ends.
    let _ = tokio::time::timeout(Duration::from_secs(10), fan_out).await;

    let in_window = |p: &Probe| p.scheduled >= from && p.scheduled < until;
    let all = scale::read_probes(&probes);
    let measured_probes: Vec<&Probe> = all
        .iter()
        .filter(|p| in_window(p) && p.job.starts_with(MEASURED_PREFIX))
        .collect();
    let lag = measured_probes.iter().map(|p| p.lag_ms()).collect();
    let mut first_of_slot: std::collections::BTreeMap<DateTime<Utc>, f64> = Default::default();
    for probe in &measured_probes {
        let lag = probe.lag_ms();
        first_of_slot
            .entry(probe.scheduled)
            .and_modify(|first| *first = first.min(lag))
            .or_insert(lag);
    }
    let first = first_of_slot.into_values().collect();
    let others_lag = all
        .iter()
        .filter(|p| in_window(p) && !p.job.starts_with(MEASURED_PREFIX))
        .map(Probe::lag_ms)
        .collect();
    let to_spawn = collector
        .to_spawn
        .lock()
        .expect("lock")
        .iter()
        .filter(|(job, scheduled, _)| {
            job.starts_with(MEASURED_PREFIX) && *scheduled >= from && *scheduled < until
        })
        .map(|(_, _, ms)| *ms)
        .collect();
    Figures {
        first,
        lag,
        to_spawn,
        others_lag,
        expected: measured * seconds as usize,
        rss_mib,
        forker_rss_mib,
        forker_rss_anon_mib,
    }
}

/// Serves the endpoints on loopback until `stop`, and GETs `/metrics` and `/status` once a second from a
/// thread of its own, as Prometheus and a dashboard would; the thread returns how many answered.
async fn scrape_every_second(
    endpoints: Endpoints,
    stop: CancellationToken,
) -> std::thread::JoinHandle<usize> {
    let listener = http::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(http::serve(listener, endpoints, stop.clone()));
    std::thread::spawn(move || {
        let mut answered = 0;
        while !stop.is_cancelled() {
            for path in ["/metrics", "/status"] {
                if get(addr, path) {
                    answered += 1;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        answered
    })
}

/// `GET path` over HTTP/1.0; true if it answered.
fn get(addr: std::net::SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = Vec::new();
    stream.write_all(request.as_bytes()).is_ok() && stream.read_to_end(&mut body).is_ok()
}

/// `total` jobs: `measured` 1-second probes, and the others far away or spread.
fn jobs(total: usize, measured: usize, others: Others, probes: &Path) -> JobSet {
    let exe = std::env::current_exe().expect("current exe");
    let exe = exe.to_str().expect("a UTF-8 path");
    let out = probes.to_str().expect("a UTF-8 path");
    let month = Utc::now().month();
    let specs: Vec<JobSpec> = (0..total)
        .map(|i| {
            if i < measured {
                JobSpec::new(format!("{MEASURED_PREFIX}{i}"), "* * * * * *", &[exe])
                    .with_env(PROBE_ENV, out)
                    .with_policy("Allow")
            } else {
                match others {
                    Others::FarAway => JobSpec::new(
                        format!("far-{i:05}"),
                        scale_jobs::far_away_schedule(i, month),
                        &["/bin/true"],
                    ),
                    Others::Spread { minutes } => JobSpec::new(
                        format!("spread-{i:05}"),
                        scale_jobs::spread_schedule(i, minutes),
                        &[exe],
                    )
                    .with_env(PROBE_ENV, out),
                }
            }
        })
        .collect();
    let text = scale_jobs::jobs_file(&specs);
    config::parse_str(&text, "bench", &LoadOptions::default()).expect("valid bench jobs")
}

/// Counts the other jobs' timer reports (each timer's first, unless they fire), and records each run's
/// slot → spawn().
#[derive(Default)]
struct Collector {
    next_runs: AtomicUsize,
    to_spawn: Mutex<Vec<(String, DateTime<Utc>, f64)>>,
}

impl Observer for Collector {
    fn on_run(&self, event: &RunEvent) {
        if let RunEvent::Finished(report) = event {
            if report.attempts > 0 {
                self.to_spawn.lock().expect("lock").push((
                    report.job.clone(),
                    report.scheduled,
                    report.start_delay.as_secs_f64() * 1e3,
                ));
            }
        }
    }

    fn on_election(&self, _event: &ElectionEvent) {}

    fn on_dispatch(&self, event: &DispatchEvent) {
        if let DispatchEvent::NextRun { job, .. } = event {
            if !job.starts_with(MEASURED_PREFIX) {
                self.next_runs.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
