//! Spawning the real `leasecron` binary: replicas for multi-process tests, and one-shot commands.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Names another build of `leasecron` to spawn instead of cargo's: `scripts/bench-report` points
/// `idle_scale` at the shipped build (profile `dist`) with it.
pub const BINARY_ENV: &str = "LEASECRON_BINARY";

/// The binary under test: cargo's build for this target, or [`BINARY_ENV`]'s.
pub fn leasecron() -> Command {
    Command::new(std::env::var_os(BINARY_ENV).map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_leasecron")),
        PathBuf::from,
    ))
}

/// Runs `leasecron ARGS` to completion.
pub fn output(args: &[&str]) -> Output {
    leasecron().args(args).output().expect("spawn leasecron")
}

/// Runs `leasecron ARGS` to completion where no Kubernetes client configuration can be found: `KUBECONFIG`
/// names a file that does not exist, `HOME` is an empty temporary directory (no `~/.kube/config`), and the
/// in-cluster variables are unset. The outcome then does not depend on the machine running the tests.
pub fn output_without_kubeconfig(args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("a temporary HOME");
    leasecron()
        .args(args)
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .env("HOME", home.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("spawn leasecron")
}

/// Fast lease timings for tests: LD 3s, RD 1.5s, RP 500ms (a grace of up to 500ms fits).
pub const FAST_TIMINGS: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "1500ms",
    "--retry-period",
    "500ms",
];

/// How long a replica may take to exit after a signal before a test fails.
pub const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// Writes `text` as the jobs file `dir/jobs.yaml`, and returns its path.
pub fn write_jobs_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("jobs.yaml");
    fs::write(&path, text).expect("write the jobs file");
    path
}

/// Writes a jobs file with one job `name` firing every second, with `grace` and the `/bin/sh` `script`
/// (single quotes are not allowed in it), and returns its path.
pub fn every_second_job(dir: &Path, name: &str, grace: &str, script: &str) -> PathBuf {
    assert!(
        !script.contains('\''),
        "the script is single-quoted in YAML"
    );
    write_jobs_file(
        dir,
        &format!(
            "jobs:\n  - name: {name}\n    schedule: \"* * * * * *\"\n    terminationGrace: {grace}\n    shell: '{script}'\n"
        ),
    )
}

/// The holder recorded in a lease file; `None` if released (or unreadable).
pub fn lease_holder(lease: &Path) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(&fs::read_to_string(lease).ok()?).ok()?;
    value["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// One `leasecron run` process, its log in a file; killed with SIGKILL on drop if still running.
pub struct Replica {
    pub identity: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Replica {
    /// Starts `leasecron run --jobs JOBS --lease-file LEASE --identity ID` with `extra` flags.
    pub fn start(dir: &Path, identity: &str, jobs: &Path, lease: &Path, extra: &[&str]) -> Replica {
        Replica::start_as(dir, identity, identity, jobs, lease, extra)
    }

    /// Like [`Replica::start`], with its log in `dir/NAME.log`: for a second process with an identity
    /// already in use.
    pub fn start_as(
        dir: &Path,
        name: &str,
        identity: &str,
        jobs: &Path,
        lease: &Path,
        extra: &[&str],
    ) -> Replica {
        let mut command = leasecron();
        command
            .args(["run", "--jobs"])
            .arg(jobs)
            .arg("--lease-file")
            .arg(lease)
            .args(["--identity", identity, "--http-addr", "127.0.0.1:0"])
            .args(extra);
        let mut replica = Replica::spawn(dir, name, command);
        replica.identity = identity.to_owned();
        replica
    }

    /// Starts `leasecron run --jobs JOBS --identity ID` with `extra` flags, electing through the Kubernetes
    /// Lease of the API server in `kubeconfig` (passed as `KUBECONFIG`; `HOME` is `dir`, so no real
    /// `~/.kube/config` is ever read).
    pub fn start_on_kube(
        dir: &Path,
        identity: &str,
        jobs: &Path,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Replica {
        let jobs = jobs.to_str().expect("a UTF-8 path");
        Replica::start_on_kube_with(dir, identity, &["--jobs", jobs], kubeconfig, extra)
    }

    /// Like [`Replica::start_on_kube`], with the jobs from `source` (`--jobs FILE` or
    /// `--jobs-configmap NAME[/KEY]`).
    pub fn start_on_kube_with(
        dir: &Path,
        identity: &str,
        source: &[&str],
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Replica {
        let mut command = leasecron();
        command
            .arg("run")
            .args(source)
            .args(["--identity", identity, "--http-addr", "127.0.0.1:0"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", dir)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAMESPACE");
        Replica::spawn(dir, identity, command)
    }

    /// Spawns `command` with its output in `dir/IDENTITY.log`.
    pub fn spawn(dir: &Path, identity: &str, mut command: Command) -> Replica {
        let log = dir.join(format!("{identity}.log"));
        let file = fs::File::create(&log).expect("create log");
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("spawn leasecron run");
        Replica {
            identity: identity.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal replica");
    }

    /// Sends SIGTERM and asserts a clean shutdown: exit 0 within [`EXIT_LIMIT`].
    pub fn stop_cleanly(&mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(EXIT_LIMIT).expect("exits after SIGTERM");
        assert!(
            status.success(),
            "{} exited with {status}: {}",
            self.identity,
            self.log_text()
        );
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `GET path` on the replica's HTTP endpoint (its address read from its log).
    pub fn http_get(&self, path: &str) -> Option<HttpResponse> {
        http_request(self.http_addr()?, path)
    }

    /// `GET /status`, parsed: `None` until the replica serves it (or if it answers other than 200 with
    /// JSON).
    pub fn status(&self) -> Option<serde_json::Value> {
        let response = self.http_get("/status")?;
        (response.status == 200)
            .then(|| serde_json::from_str(&response.body).ok())
            .flatten()
    }

    /// The address the replica serves HTTP on, from its "serving" log line (text or JSON logs).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        let log = self.log_text();
        let line = log.lines().find(|l| l.contains("serving /healthz"))?;
        let addr = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(json) => json.get("addr")?.as_str()?.to_owned(),
            Err(_) => line
                .split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_owned(),
        };
        addr.parse().ok()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A raw HTTP response: status, headers (lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// `GET path` from `addr` over HTTP/1.0 (so the answer is never chunked), waiting at most 10 s.
pub fn http_request(addr: std::net::SocketAddr, path: &str) -> Option<HttpResponse> {
    http_request_with(addr, "GET", path)
}

/// `METHOD path` from `addr`, as [`http_request`].
pub fn http_request_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> Option<HttpResponse> {
    use std::io::{Read, Write};
    let limit = Duration::from_secs(10);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some(HttpResponse {
        status: head.split_whitespace().nth(1)?.parse().ok()?,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

/// Polls `probe` every 50 ms until it returns `Some`, up to `limit`.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True if a process with this pid exists (and is not a zombie of ours).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Writes a jobs file with one job `tick`, every second, that runs for ~400 ms and appends `start` and
/// `end` lines (identity, fencing token, slot, the child's own clock in ns) to `runs`; returns its path.
pub fn recording_job(dir: &Path, runs: &Path) -> PathBuf {
    let script = format!(
        "{}; sleep 0.4; {}",
        record_line("start", runs),
        record_line("end", runs)
    );
    every_second_job(dir, "tick", "500ms", &script)
}

/// The shell command that appends a `what` (`start` or `end`) line to `runs`: identity, fencing token,
/// slot, the child's own clock in ns, as [`read_recorded_runs`] reads them.
pub fn record_line(what: &str, runs: &Path) -> String {
    format!(
        r#"echo "{what} $LEASECRON_IDENTITY $LEASECRON_FENCING_TOKEN $LEASECRON_SCHEDULED_TIME $(date +%s%N)" >> {}"#,
        runs.display()
    )
}

/// One run as [`recording_job`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRun {
    /// `LEASECRON_IDENTITY`.
    pub identity: String,
    /// `LEASECRON_FENCING_TOKEN`.
    pub token: u64,
    /// `LEASECRON_SCHEDULED_TIME`.
    pub slot: String,
    /// The wall clock at the start, in ns since the epoch.
    pub start_ns: u128,
    /// The wall clock at the end; `None` if the run never finished (killed, or still running).
    pub end_ns: Option<u128>,
}

/// The runs recorded in `path` by [`recording_job`], by start.
pub fn read_recorded_runs(path: &Path) -> Vec<RecordedRun> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut runs: Vec<RecordedRun> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [what, identity, token, slot, ns] = fields[..] else {
            panic!("malformed run line {line:?}");
        };
        let token: u64 = token.parse().expect("LEASECRON_FENCING_TOKEN is a number");
        let ns: u128 = ns.parse().expect("the clock is a number");
        match what {
            "start" => runs.push(RecordedRun {
                identity: identity.to_owned(),
                token,
                slot: slot.to_owned(),
                start_ns: ns,
                end_ns: None,
            }),
            "end" => {
                let run = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.identity == identity && r.token == token && r.slot == slot)
                    .expect("an end after its start");
                run.end_ns = Some(ns);
            }
            other => panic!("unexpected record {other:?} in {line:?}"),
        }
    }
    runs.sort_by_key(|r| r.start_ns);
    runs
}

/// Asserts that no two runs of different replicas or terms overlapped. A run without an end counts as
/// running until `unfinished_until` (when its replica was killed, or now).
pub fn assert_no_overlap(runs: &[RecordedRun], unfinished_until: impl Fn(&RecordedRun) -> u128) {
    for (i, a) in runs.iter().enumerate() {
        let a_end = a.end_ns.unwrap_or_else(|| unfinished_until(a));
        for b in &runs[i + 1..] {
            assert!(a_end <= b.start_ns, "runs overlap: {a:?} and {b:?}");
        }
    }
}

/// The wall clock in ns since the epoch (the clock the jobs record with `date +%s%N`).
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}
