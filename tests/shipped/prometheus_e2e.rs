//! End to end with a real Prometheus: two `leasecron run` replicas elect through the Lease of the fake
//! API server, and of the real one (through the fake in proxy mode), a `prometheus` server on 127.0.0.1 scrapes both (with deploy/alerts/leasecron.rules.yaml loaded),
//! and PromQL over its HTTP API must show exactly one leader before and after a forced failover, while the
//! Lease-flapping expression of the rules file moves; the config-diverged expression counts one jobs
//! version over both replicas.
//!
//! Skips, with a message, only when `prometheus` is not installed; `.ci/run` installs Debian's `prometheus`
//! package, so CI always runs it.

use crate::support::{fake_apiserver, replica};

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Which};
use replica::{every_second_job, http_request, wait_for, Replica, FAST_TIMINGS};
use serde_json::Value;

/// The bound of every wait: Prometheus scrapes and evaluates every second, and the flapping expression
/// samples on a 15 s grid, so each condition should hold well within this.
const WAIT: Duration = Duration::from_secs(60);
/// The rules file Prometheus loads, relative to the crate.
const RULES: &str = "deploy/alerts/leasecron.rules.yaml";
/// The alert whose expression (without its threshold) is the flapping expression.
const FLAPPING_ALERT: &str = "LeasecronLeaseFlapping";
/// The alert whose expression (without its threshold) counts the jobs versions the replicas run.
const DIVERGED_ALERT: &str = "LeasecronConfigDiverged";
/// The scrape job's name in the generated prometheus.yml.
const SCRAPE_JOB: &str = "leasecron";
/// The leasecron job in the jobs file.
const JOB: &str = "tick";
/// How much of each log goes into a failure message.
const LOG_TAIL: usize = 6000;

/// A `prometheus` server process with its log; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

// === impl Prometheus ===

impl Prometheus {
    /// Starts `prometheus` in `dir` scraping `targets` every second, with the rules file loaded; `None` if
    /// the binary is not installed.
    fn start(dir: &Path, targets: &[SocketAddr]) -> Option<Prometheus> {
        let addr = free_port();
        let config = dir.join("prometheus.yml");
        fs::write(&config, prometheus_config(targets)).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let file = fs::File::create(&log).expect("create the Prometheus log");
        let spawned = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup the Prometheus log"))
            .stderr(file)
            .spawn();
        match spawned {
            Ok(child) => Some(Prometheus { child, addr, log }),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => panic!("cannot start prometheus: {e}"),
        }
    }

    /// Evaluates `promql` now: the samples of its instant vector, or `None` if Prometheus did not answer
    /// with one (not up yet, or the query failed).
    fn query(&self, promql: &str) -> Option<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let body = http_get(self.addr, &path)?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        if answer["status"] != "success" || answer["data"]["resultType"] != "vector" {
            return None;
        }
        answer["data"]["result"]
            .as_array()?
            .iter()
            .map(Sample::from_json)
            .collect()
    }

    /// Evaluates `promql`, expecting a single sample: its value, or `None` for an empty vector.
    fn scalar(&self, promql: &str) -> Option<f64> {
        match &self.query(promql)?[..] {
            [one] => Some(one.value),
            _ => None,
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample of an instant vector.
#[derive(Debug, Clone)]
struct Sample {
    labels: serde_json::Map<String, Value>,
    value: f64,
}

// === impl Sample ===

impl Sample {
    /// `{"metric": {...}, "value": [time, "value"]}`.
    fn from_json(json: &Value) -> Option<Sample> {
        Some(Sample {
            labels: json["metric"].as_object()?.clone(),
            value: json["value"][1].as_str()?.parse().ok()?,
        })
    }

    fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name)?.as_str()
    }
}

/// A generated prometheus.yml: one scrape job of `targets`, scraped and evaluated every second.
fn prometheus_config(targets: &[SocketAddr]) -> String {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join(RULES);
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - \"{}\"\n\
         scrape_configs:\n  - job_name: {SCRAPE_JOB}\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.join(", ")
    )
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("the bound address")
}

/// `GET path`: the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_request(addr, path)
        .filter(|response| response.status == 200)
        .map(|response| response.body)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The expression of the alert `name` in the rules file.
fn alert_expression(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RULES);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    let rules: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .find(|rule| rule["alert"] == name)
        .and_then(|rule| rule["expr"].as_str())
        .unwrap_or_else(|| panic!("{RULES} has no {name} alert with an expr"))
        .to_owned()
}

/// The diverged alert's expression without its `> 1` threshold: how many jobs versions the replicas of
/// one Deployment run.
fn versions_expression() -> String {
    let expr = alert_expression(DIVERGED_ALERT);
    expr.trim_end()
        .strip_suffix("> 1")
        .unwrap_or_else(|| panic!("{DIVERGED_ALERT}'s expr ends in `> 1`: {expr}"))
        .to_owned()
}

/// The flapping alert's expression from the rules file without its final `> N` threshold line: the number
/// of Lease acquisitions in the last 15 minutes.
fn flapping_expression() -> String {
    let expr = alert_expression(FLAPPING_ALERT);
    let lines: Vec<&str> = expr.trim_end().lines().collect();
    let [body @ .., threshold] = &lines[..] else {
        panic!("{FLAPPING_ALERT}'s expr is empty");
    };
    assert!(
        threshold.trim_start().starts_with('>'),
        "{FLAPPING_ALERT}'s expr ends in a `> N` threshold line: {expr}"
    );
    body.join("\n")
}

/// The end of `text`, at most [`LOG_TAIL`] bytes.
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(LOG_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Every process's log, for a failure message.
fn logs(replicas: &[Replica], prometheus: &Prometheus) -> String {
    let mut out = String::new();
    for replica in replicas {
        out += &format!(
            "\n--- {} ---\n{}",
            replica.identity,
            tail(&replica.log_text())
        );
    }
    out + &format!("\n--- prometheus ---\n{}", tail(&prometheus.log_text()))
}

/// The instance (`host:port`) of the one replica Prometheus sees leading, once `sum(leasecron_is_leader)`
/// is 1 and that replica is not `not`.
fn wait_single_leader(prometheus: &Prometheus, not: Option<&str>) -> Option<String> {
    wait_for(WAIT, || {
        let leaders = prometheus.query("leasecron_is_leader == 1")?;
        let [leader] = &leaders[..] else {
            return None;
        };
        let instance = leader.label("instance")?;
        let sum = prometheus.scalar("sum(leasecron_is_leader)")?;
        (sum == 1.0 && Some(instance) != not).then(|| instance.to_owned())
    })
}

fn prometheus_sees_exactly_one_leader_across_a_failover_and_the_flapping_expression_moves(
    which: Which,
) {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "prometheus_sees_exactly_one")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = every_second_job(dir.path(), JOB, "500ms", "true");
    let mut replicas: Vec<Replica> = ["prom-0", "prom-1"]
        .iter()
        .map(|id| {
            let kubeconfig = server.kubeconfig(dir.path(), id);
            Replica::start_on_kube(dir.path(), id, &jobs, &kubeconfig, &FAST_TIMINGS)
        })
        .collect();
    let addrs: Vec<SocketAddr> = replicas
        .iter()
        .map(|r| {
            wait_for(WAIT, || r.http_addr())
                .unwrap_or_else(|| panic!("{} never served HTTP: {}", r.identity, r.log_text()))
        })
        .collect();
    let Some(prometheus) = Prometheus::start(dir.path(), &addrs) else {
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
        return;
    };

    // Both targets scraped; exactly one leader among them.
    let both_up = wait_for(WAIT, || {
        let up = prometheus.query(&format!("up{{job=\"{SCRAPE_JOB}\"}} == 1"))?;
        (up.len() == addrs.len()).then_some(())
    });
    assert!(
        both_up.is_some(),
        "Prometheus never saw both targets up: {}",
        logs(&replicas, &prometheus)
    );
    // Both replicas run the same jobs: two info series, one hash, so the diverged alert's count is 1.
    let versions = versions_expression();
    let agreed = wait_for(WAIT, || {
        let series = prometheus.scalar("count(leasecron_config_info)")?;
        (series == 2.0)
            .then(|| prometheus.scalar(&versions))
            .flatten()
    });
    assert_eq!(
        agreed,
        Some(1.0),
        "{versions}: {}",
        logs(&replicas, &prometheus)
    );
    let first = wait_single_leader(&prometheus, None).unwrap_or_else(|| {
        panic!(
            "Prometheus never saw exactly one leader: {}",
            logs(&replicas, &prometheus)
        )
    });

    // The job's runs are visible, under `exported_job` (the scrape job owns `job`).
    let runs = wait_for(WAIT, || {
        let query = format!(
            "sum(leasecron_job_runs_total{{exported_job=\"{JOB}\",outcome=\"succeeded\"}}) > 0"
        );
        prometheus.scalar(&query)
    });
    assert!(
        runs.is_some(),
        "Prometheus never saw a successful run of {JOB}: {}",
        logs(&replicas, &prometheus)
    );

    // The Lease's transitions, and the flapping expression over them, before the failover.
    let flapping = flapping_expression();
    let transitions_query = "max(leasecron_lease_transitions)";
    let before = wait_for(WAIT, || {
        Some((
            prometheus.scalar(transitions_query)?,
            prometheus.scalar(&flapping)?,
        ))
    });
    let Some((transitions_before, flapping_before)) = before else {
        panic!(
            "Prometheus never evaluated the flapping expression {flapping}: {}",
            logs(&replicas, &prometheus)
        );
    };
    assert!(
        transitions_before >= 1.0,
        "the Lease was acquired at least once: {transitions_before}"
    );

    // SIGTERM the leader: it releases the Lease and the other replica takes it at once.
    let leader = addrs
        .iter()
        .position(|a| a.to_string() == first)
        .unwrap_or_else(|| panic!("the leader {first} is one of {addrs:?}"));
    replicas[leader].stop_cleanly();
    let second = wait_single_leader(&prometheus, Some(&first)).unwrap_or_else(|| {
        panic!(
            "Prometheus never saw the other replica as the one leader after {first} stopped: {}",
            logs(&replicas, &prometheus)
        )
    });
    assert_eq!(second, addrs[1 - leader].to_string());

    let moved = wait_for(WAIT, || {
        let transitions = prometheus.scalar(transitions_query)?;
        let flapping_now = prometheus.scalar(&flapping)?;
        (transitions > transitions_before && flapping_now > flapping_before)
            .then_some((transitions, flapping_now))
    });
    let Some((transitions_after, flapping_after)) = moved else {
        panic!(
            "the flapping expression never rose above {flapping_before} (transitions {transitions_before}): {}",
            logs(&replicas, &prometheus)
        );
    };
    assert_eq!(
        transitions_after,
        transitions_before + 1.0,
        "one failover, one more transition"
    );
    assert_eq!(
        flapping_after,
        flapping_before + 1.0,
        "one failover moves the flapping expression by one"
    );
    // Still exactly one leader once it all settled.
    assert_eq!(
        wait_single_leader(&prometheus, Some(&first)).as_deref(),
        Some(second.as_str())
    );
    replicas[1 - leader].stop_cleanly();
}

mod fake {
    #[test]
    fn prometheus_sees_exactly_one_leader_across_a_failover_and_the_flapping_expression_moves() {
        super::prometheus_sees_exactly_one_leader_across_a_failover_and_the_flapping_expression_moves(
            super::Which::Fake,
        );
    }
}

mod real {
    #[test]
    fn prometheus_sees_exactly_one_leader_across_a_failover_and_the_flapping_expression_moves() {
        super::prometheus_sees_exactly_one_leader_across_a_failover_and_the_flapping_expression_moves(
            super::Which::Real,
        );
    }
}
