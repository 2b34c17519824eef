//! Signals and a misbehaving stderr, on the real binary: SIGHUP re-reads the jobs, SIGUSR1, SIGUSR2 and
//! SIGALRM are logged and ignored, SIGTERM and SIGINT still shut down cleanly after them, none of them ends
//! a replica that is still starting, and a replica whose stderr reader is gone or stopped keeps leading,
//! running and answering, counts the lost log lines, and shuts down cleanly. The tests on the Kubernetes
//! API run on the fake API server and on the real one (through the fake in proxy mode).

use crate::on_both_servers;
use crate::support::{exposition, fake_apiserver, replica};

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use exposition::sample;
use fake_apiserver::{FakeApiServer, Fault, Resource, Verb, Which};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use nix::sys::signal::Signal;
use replica::{
    alive, http_request, lease_holder, leasecron, wait_for, write_jobs_file, Replica, EXIT_LIMIT,
    FAST_TIMINGS,
};

const WAIT: Duration = Duration::from_secs(30);

/// A jobs file with one job `name`, every second, running the `/bin/sh` `script` (no single quotes).
fn jobs_text(name: &str, script: &str) -> String {
    assert!(!script.contains('\''), "the script is single-quoted");
    format!(
        "jobs:\n  - name: {name}\n    schedule: \"* * * * * *\"\n    terminationGrace: 500ms\n    shell: '{script}'\n"
    )
}

fn write_jobs(dir: &Path, name: &str, script: &str) -> PathBuf {
    write_jobs_file(dir, &jobs_text(name, script))
}

/// Replaces the file at `path` with `text` in one rename, so no reader ever sees it half written.
fn replace(path: &Path, text: &str) {
    let temporary = path.with_extension("new");
    fs::write(&temporary, text).expect("write");
    fs::rename(&temporary, path).expect("rename");
}

fn scrape(addr: SocketAddr, series: &str) -> Option<f64> {
    let response = http_request(addr, "/metrics")?;
    (response.status == 200)
        .then(|| sample(&response.body, series))
        .flatten()
}

fn succeeded(job: &str) -> String {
    format!("leasecron_job_runs_total{{job=\"{job}\",outcome=\"succeeded\"}}")
}

/// Waits until `series` on `addr` is at least `at_least`; returns its value.
fn wait_for_metric(addr: SocketAddr, series: &str, at_least: f64) -> f64 {
    wait_for(WAIT, || scrape(addr, series).filter(|v| *v >= at_least))
        .unwrap_or_else(|| panic!("{series} did not reach {at_least}"))
}

/// Waits until the replica's log contains `text`.
fn wait_for_log(replica: &Replica, text: &str) {
    wait_for(WAIT, || replica.log_text().contains(text).then_some(()))
        .unwrap_or_else(|| panic!("no {text:?} in the log:\n{}", replica.log_text()));
}

/// The names of the jobs in force, from `/status`.
fn job_names(replica: &Replica) -> Option<Vec<String>> {
    let status = replica.status()?;
    status["jobs"]
        .as_array()?
        .iter()
        .map(|job| job["name"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the replica leads and has finished a run of `job`; returns its HTTP address.
fn wait_until_leading_and_running(replica: &Replica, job: &str) -> SocketAddr {
    let addr = wait_for(WAIT, || replica.http_addr()).expect("the replica serves HTTP");
    wait_for_metric(addr, &succeeded(job), 1.0);
    assert_eq!(replica.status().expect("status")["leading"], true);
    addr
}

fn still_running(replica: &mut Replica) {
    assert!(
        replica.child.try_wait().expect("try_wait").is_none(),
        "the replica ended: {}",
        replica.log_text()
    );
}

/// Starts `leasecron run` on a file lease with stderr a pipe, and returns the replica, the read end of its
/// stderr and the HTTP address it logged.
fn start_with_stderr_pipe(
    dir: &Path,
    jobs: &Path,
    lease: &Path,
) -> (Replica, ChildStderr, SocketAddr) {
    let mut child = leasecron()
        .args(["run", "--jobs"])
        .arg(jobs)
        .arg("--lease-file")
        .arg(lease)
        .args(["--identity", "piped", "--http-addr", "127.0.0.1:0"])
        .args(FAST_TIMINGS)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leasecron run");
    let stderr = child.stderr.take().expect("a stderr pipe");
    let replica = Replica {
        identity: "piped".to_owned(),
        child,
        log: dir.join("no-log-file"),
    };
    // Read the log until the HTTP address, on a thread, so that a silent replica fails the test instead
    // of hanging it; the thread hands the pipe back.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(addr) = line
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse::<SocketAddr>().ok())
            {
                let _ = tx.send((addr, reader.into_inner()));
                return;
            }
        }
    });
    let (addr, stderr) = rx
        .recv_timeout(WAIT)
        .expect("the replica logs the address it serves on");
    (replica, stderr, addr)
}

#[test]
fn a_replica_whose_stderr_reader_is_gone_keeps_running_jobs_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The job prints, so each run adds log lines (its output) besides the runner's own.
    let jobs = write_jobs(dir.path(), "tick", "echo tick; echo tock >&2");
    let lease = dir.path().join("lease.json");
    let (mut replica, stderr, addr) = start_with_stderr_pipe(dir.path(), &jobs, &lease);
    // The reader goes away (`| head`, a log shipper restarting): every later log write fails with EPIPE.
    drop(stderr);
    let before = scrape(addr, &succeeded("tick")).unwrap_or(0.0);
    wait_for_metric(addr, &succeeded("tick"), before + 3.0);
    wait_for_metric(addr, "leasecron_log_write_errors_total", 1.0);
    assert_eq!(lease_holder(&lease).as_deref(), Some("piped"));
    still_running(&mut replica);

    replica.stop_cleanly();
    assert_eq!(lease_holder(&lease), None, "the lease was released");
}

#[test]
fn a_replica_whose_stderr_reader_is_stopped_keeps_running_jobs_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // About 1 MB of output per run, logged in 16 KiB pieces: the pipe (64 KiB) is full at once, and the
    // log queue soon after.
    let jobs = write_jobs(
        dir.path(),
        "chatty",
        r#"head -c 1000000 /dev/zero | tr "\0" x; echo"#,
    );
    let lease = dir.path().join("lease.json");
    // The reader stops: the pipe stays open and is never read again.
    let (mut replica, _stopped_reader, addr) = start_with_stderr_pipe(dir.path(), &jobs, &lease);
    wait_for_metric(addr, "leasecron_log_lines_dropped_total", 1.0);
    // Still leading, running and answering while its log writes cannot complete.
    let before = scrape(addr, &succeeded("chatty")).expect("metrics are served");
    wait_for_metric(addr, &succeeded("chatty"), before + 2.0);
    assert_eq!(lease_holder(&lease).as_deref(), Some("piped"));
    still_running(&mut replica);

    replica.stop_cleanly();
    assert_eq!(lease_holder(&lease), None, "the lease was released");
}

#[test]
fn sighup_re_reads_the_jobs_file_and_keeps_the_last_good_jobs_if_it_is_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The jobs file is a symlink into another directory, so the directory watch does not see edits of
    // its target (only the periodic re-read would): SIGHUP is the way to apply one now.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let target = elsewhere.path().join("real.yaml");
    fs::write(&target, jobs_text("tick", "true")).expect("write");
    let jobs = dir.path().join("jobs.yaml");
    std::os::unix::fs::symlink(&target, &jobs).expect("symlink");
    let lease = dir.path().join("lease.json");
    let mut replica = Replica::start(dir.path(), "hup", &jobs, &lease, &FAST_TIMINGS);
    let addr = wait_until_leading_and_running(&replica, "tick");

    // Unchanged: the re-read is logged as such.
    replica.signal(Signal::SIGHUP);
    wait_for_log(
        &replica,
        &format!("SIGHUP: re-reading the jobs file {}", jobs.display()),
    );
    wait_for_log(&replica, "re-read the jobs file on request: unchanged");

    // A new version applies.
    replace(&target, &jobs_text("tock", "true"));
    replica.signal(Signal::SIGHUP);
    wait_for(WAIT, || (job_names(&replica)? == ["tock"]).then_some(()))
        .unwrap_or_else(|| panic!("tock is in force: {}", replica.log_text()));
    wait_for_metric(addr, &succeeded("tock"), 1.0);
    assert_eq!(
        scrape(addr, "leasecron_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );

    // An invalid one is rejected and the last good jobs stay.
    replace(&target, "jobs:\n  - name: tock\n    schedule: nonsense\n");
    replica.signal(Signal::SIGHUP);
    wait_for_metric(
        addr,
        "leasecron_config_reloads_total{result=\"failure\"}",
        1.0,
    );
    assert_eq!(job_names(&replica).expect("status"), ["tock"]);
    let runs = scrape(addr, &succeeded("tock")).expect("metrics");
    wait_for_metric(addr, &succeeded("tock"), runs + 1.0);
    still_running(&mut replica);
    assert_eq!(replica.log_text().matches("SIGHUP: re-reading").count(), 3);

    replica.stop_cleanly();
    assert_eq!(lease_holder(&lease), None, "the lease was released");
}

#[test]
fn sigusr1_sigusr2_and_sigalrm_are_logged_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The job also checks that its processes get SIGPIPE's default action although leasecron ignores it:
    // `yes` dies of SIGPIPE (status 141) when `head` has read its line, instead of failing with EPIPE.
    let yes_status = dir.path().join("yes-status");
    let script = format!(
        "(yes; echo $? > {}) | head -1 > /dev/null",
        yes_status.display()
    );
    let jobs = write_jobs(dir.path(), "tick", &script);
    let lease = dir.path().join("lease.json");
    let mut replica = Replica::start(dir.path(), "usr", &jobs, &lease, &FAST_TIMINGS);
    let addr = wait_until_leading_and_running(&replica, "tick");
    let term = replica.status().expect("status")["fencing_token"].clone();

    for (signal, name) in [
        (Signal::SIGUSR1, "SIGUSR1"),
        (Signal::SIGUSR2, "SIGUSR2"),
        (Signal::SIGALRM, "SIGALRM"),
    ] {
        replica.signal(signal);
        wait_for_log(&replica, &format!("{name}: ignored"));
    }
    let runs = scrape(addr, &succeeded("tick")).expect("metrics");
    wait_for_metric(addr, &succeeded("tick"), runs + 2.0);
    still_running(&mut replica);
    let status = replica.status().expect("status");
    assert_eq!(status["leading"], true);
    assert_eq!(status["fencing_token"], term, "the same term goes on");
    assert_eq!(
        fs::read_to_string(&yes_status).expect("the job ran").trim(),
        "141",
        "yes was killed by SIGPIPE"
    );

    replica.stop_cleanly();
    assert_eq!(lease_holder(&lease), None, "the lease was released");
}

#[test]
fn sigterm_and_sigint_still_shut_down_cleanly_after_the_other_signals() {
    for (shutdown, identity) in [(Signal::SIGTERM, "term"), (Signal::SIGINT, "int")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("job.pid");
        let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
        let jobs = write_jobs(dir.path(), "long", &script);
        let lease = dir.path().join("lease.json");
        let mut replica = Replica::start(dir.path(), identity, &jobs, &lease, &FAST_TIMINGS);
        let job_pid: i32 = wait_for(WAIT, || {
            fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        })
        .expect("the job started");
        for signal in [
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGALRM,
        ] {
            replica.signal(signal);
        }
        wait_for_log(&replica, "SIGALRM: ignored");
        assert!(alive(job_pid), "the run goes on");
        assert_eq!(lease_holder(&lease).as_deref(), Some(identity));

        replica.signal(shutdown);
        let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
        assert!(status.success(), "{shutdown}: exited with {status}");
        assert!(!alive(job_pid), "{shutdown}: the run was ended before exit");
        assert_eq!(
            lease_holder(&lease),
            None,
            "{shutdown}: the lease was released"
        );
        assert!(
            replica.log_text().contains(&format!(" signal={shutdown}")),
            "{}",
            replica.log_text()
        );
    }
}

/// Requests of `token` for `verb` on ConfigMaps.
fn config_map_requests(server: &FakeApiServer, token: &str, verb: Verb) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some(token))
        .filter(|r| r.verb == Some(verb) && r.resource == Some(Resource::ConfigMaps))
        .count()
}

fn signals_during_start_up_do_not_end_it_and_a_sighup_then_is_kept_for_the_watch(which: Which) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "signals_during_start_up")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_jobs(dir.path(), "tick", "true");
    // The API answers 503: the replica retries its start-up requests, the Lease untouched.
    server.faults("early").set(Fault::Status(503));
    let kubeconfig = server.kubeconfig(dir.path(), "early");
    let mut replica =
        Replica::start_on_kube(dir.path(), "early", &jobs, &kubeconfig, &FAST_TIMINGS);
    wait_for_log(
        &replica,
        "the Kubernetes API is unavailable at start; retrying",
    );
    for signal in [
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
        Signal::SIGHUP,
    ] {
        replica.signal(signal);
    }
    for name in ["SIGUSR1", "SIGUSR2", "SIGALRM"] {
        wait_for_log(&replica, &format!("{name}: ignored"));
    }
    wait_for_log(&replica, "SIGHUP: re-reading the jobs file");
    still_running(&mut replica);

    server.faults("early").set(Fault::None);
    let addr = wait_until_leading_and_running(&replica, "tick");
    // The SIGHUP that came before the jobs file was watched is answered once it is.
    wait_for_log(&replica, "re-read the jobs file on request: unchanged");
    assert!(scrape(addr, "leasecron_is_leader").is_some_and(|v| v == 1.0));
    replica.stop_cleanly();
}

fn sighup_gets_the_jobs_configmap_again(which: Which) {
    const NAME: &str = "leasecron-jobs";
    let Some((runtime, server)) =
        FakeApiServer::start_in_background_on(which, "sighup_gets_the_jobs_configmap")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": NAME},
            "data": {"jobs.yaml": jobs_text("tick", "true")},
        }))
        .expect("a ConfigMap");
        Api::<ConfigMap>::namespaced(server.client("admin").await, server.namespace())
            .create(&PostParams::default(), &config_map)
            .await
            .expect("create the ConfigMap");
    });
    let kubeconfig = server.kubeconfig(dir.path(), "cm");
    let mut replica = Replica::start_on_kube_with(
        dir.path(),
        "cm",
        &["--jobs-configmap", NAME],
        &kubeconfig,
        &FAST_TIMINGS,
    );
    wait_until_leading_and_running(&replica, "tick");
    // The watch is up.
    wait_for(WAIT, || {
        (config_map_requests(&server, "cm", Verb::Watch) > 0).then_some(())
    })
    .expect("the ConfigMap is watched");
    let gets = config_map_requests(&server, "cm", Verb::Get);

    replica.signal(Signal::SIGHUP);
    wait_for_log(
        &replica,
        &format!("SIGHUP: re-reading the jobs ConfigMap {NAME}"),
    );
    wait_for(WAIT, || {
        (config_map_requests(&server, "cm", Verb::Get) > gets).then_some(())
    })
    .expect("SIGHUP made a GET of the ConfigMap");
    wait_for_log(&replica, "re-read the jobs ConfigMap on request: unchanged");
    still_running(&mut replica);
    assert_eq!(
        config_map_requests(&server, "cm", Verb::List),
        0,
        "it never lists"
    );
    replica.stop_cleanly();
}

#[test]
fn a_closed_stdout_ends_next_and_validate_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_jobs(dir.path(), "tick", "true");
    let jobs = jobs.to_str().expect("a UTF-8 path");
    for args in [
        vec!["next", jobs, "--count", "1000"],
        vec!["validate", jobs],
    ] {
        let mut child = leasecron()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn leasecron");
        // The reader is gone before anything is written: every write fails with EPIPE.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{args:?}: {} {stderr}",
            output.status
        );
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

on_both_servers!(
    processes:
    signals_during_start_up_do_not_end_it_and_a_sighup_then_is_kept_for_the_watch,
    sighup_gets_the_jobs_configmap_again,
);
