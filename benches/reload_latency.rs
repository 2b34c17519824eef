//! Change-to-effect latency of a jobs reload: from the moment a kubelet-style swap of the `..data` symlink
//! is visible in the filesystem (the `rename` returned) until the new schedule is active (the added job's
//! timer has started and reported its next fire).
//!
//! The path measured is the production one, in this process: the inotify watch on the mount directory,
//! the debounce, the read, validation, the `Reloader`, and the dispatcher applying the diff. Each sample
//! swaps in a version that adds one new job; samples are `RELOAD_GAP` apart so they do not debounce into
//! each other.
//!
//! ```text
//! cargo bench --bench reload_latency           # RELOAD_SAMPLES=500 cargo bench --bench reload_latency
//! ```

#[path = "../tests/support/mount.rs"]
pub mod mount;
#[path = "support/report.rs"]
mod report;

use std::sync::Arc;
use std::time::Duration;

use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{self, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::event::DispatchEvent;
use leasecron::local::jobs_file;
use leasecron::observe::Observers;
use leasecron::reload::{self, Reloader, Snapshot};
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::Ledger;
use leasecron::runner::Runner;
use leasecron::term::Leadership;
use mount::KubeletMount;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const DEFAULT_SAMPLES: usize = 100;
/// Between samples: longer than the debounce's longest delay.
const RELOAD_GAP: Duration = Duration::from_millis(300);

fn version(count: usize) -> String {
    let mut text = String::from("jobs:\n");
    for i in 0..count {
        text.push_str(&format!(
            "  - name: job-{i}\n    schedule: \"*/5 * * * *\"\n    shell: \"true\"\n"
        ));
    }
    text
}

fn main() {
    let samples: usize = std::env::var("RELOAD_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SAMPLES);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let latencies = runtime.block_on(measure(samples));
    println!("reload change-to-effect latency, kubelet-style ..data swap, {samples} samples");
    println!(
        "  (debounce: quiet {:?}, at most {:?})",
        jobs_file::DEBOUNCE_QUIET,
        jobs_file::DEBOUNCE_MAX
    );
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    report::Report::new("reload_latency")
        .param("samples", samples)
        .param("gap_ms", RELOAD_GAP.as_millis() as u64)
        .param(
            "debounce_quiet_ms",
            jobs_file::DEBOUNCE_QUIET.as_millis() as u64,
        )
        .param(
            "debounce_max_ms",
            jobs_file::DEBOUNCE_MAX.as_millis() as u64,
        )
        .samples("change_to_effect", "ms", &ms)
        .write();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "  min {:.2} ms   median {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        at(0.0),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

async fn measure(samples: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mount = KubeletMount::new(dir.path(), &version(1));
    let load = LoadOptions::default();
    let path = mount.path();
    let initial = jobs_file::read(&path).await;
    let jobs = config::parse_str(
        initial.text.as_deref().expect("readable"),
        &initial.origin,
        &load,
    )
    .expect("valid");

    let clock: SharedClock = Arc::new(SystemClock);
    let ledger = Arc::new(Ledger::new(MemoryStore::new(), "bench".to_owned()));
    let runner = Runner::new(
        "bench".to_owned(),
        Arc::clone(&clock),
        None,
        Arc::clone(&ledger),
    );
    let (_leadership_tx, leadership) = watch::channel(Leadership::Follower { holder: None });
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher::new(runner, leadership, clock, ledger).with_events(events_tx);
    let (snapshots_tx, snapshots) = watch::channel::<Snapshot>(initial);
    let (jobs_tx, jobs_rx) = watch::channel(Arc::new(jobs));
    let stop = CancellationToken::new();
    tokio::spawn(jobs_file::watch(
        path,
        snapshots_tx,
        reload::Reread::new(),
        stop.clone(),
    ));
    tokio::spawn(Reloader::new(load, jobs_tx, Observers::new()).run(snapshots, stop.clone()));
    let dispatching = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(jobs_rx, stop).await }
    });
    // The initial version's events.
    tokio::time::sleep(RELOAD_GAP).await;
    while events.try_recv().is_ok() {}

    let mut latencies = Vec::with_capacity(samples);
    for sample in 0..samples {
        let count = sample + 2;
        let added = format!("job-{}", count - 1);
        let visible = mount.swap(&version(count));
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .expect("the reload takes effect")
                .expect("the dispatcher runs");
            if matches!(&event, DispatchEvent::NextRun { job, .. } if *job == added) {
                latencies.push(visible.elapsed());
                break;
            }
        }
        tokio::time::sleep(RELOAD_GAP).await;
    }
    stop.cancel();
    dispatching.await.expect("the dispatcher stops");
    latencies
}
