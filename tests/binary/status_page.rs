//! The status page at `/` of a real `leasecron run`: its HTTP answer (content type, security headers,
//! HEAD), that it agrees with `/status`, and that a real browser — Debian's headless Chromium — loads it
//! without a single console message and shows every job with its state.
//!
//! Chromium is required: the browser test fails when `chromium` is not on `PATH` (`.ci/run` installs it,
//! `apt-get install chromium` here), unless `LEASECRON_SKIP_BROWSER=1` says to skip it, which it then
//! says. The page has no script, so any console line at all is a fault: a Content-Security-Policy
//! violation (an external or inline resource the policy forbids) prints one.

use crate::support::replica;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use replica::{http_request_with, wait_for, write_jobs_file, Replica, FAST_TIMINGS};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Set to `1` to skip the browser test where Chromium is not installed.
const SKIP_BROWSER_VAR: &str = "LEASECRON_SKIP_BROWSER";
/// How long Chromium may take to load and dump one page.
const BROWSER_LIMIT: Duration = Duration::from_secs(60);

/// A replica of three every-second jobs: one that succeeds, one that exits 3, one suspended in the file.
fn start(dir: &Path) -> Replica {
    let jobs = write_jobs_file(
        dir,
        "defaults:\n  terminationGrace: 500ms\njobs:\n\
         \x20 - name: passes\n    schedule: \"* * * * * *\"\n    shell: \"true\"\n\
         \x20 - name: fails\n    schedule: \"* * * * * *\"\n    shell: \"exit 3\"\n\
         \x20 - name: paused\n    schedule: \"* * * * * *\"\n    shell: \"true\"\n    suspend: true\n",
    );
    let lease = dir.join("lease.json");
    Replica::start(dir, "page-replica", &jobs, &lease, &FAST_TIMINGS)
}

/// Waits until `/status` shows a finished run of both running jobs, and returns it.
fn wait_for_runs(replica: &Replica) -> Value {
    wait_for(WAIT, || {
        replica.status().filter(|s| {
            s["leading"] == true
                && ["passes", "fails"].iter().all(|name| {
                    s["jobs"].as_array().is_some_and(|jobs| {
                        jobs.iter().any(|job| {
                            job["name"] == *name
                                && job["last_run"]["source"] == "this_replica"
                                && job["run_state"]["history"]
                                    .as_array()
                                    .is_some_and(|h| h.iter().any(|e| e["outcome"].is_string()))
                        })
                    })
                })
        })
    })
    .unwrap_or_else(|| panic!("no runs in /status: {}", replica.log_text()))
}

/// The `<tr>` of job `name` in a page or a DOM, up to its end.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("<tr id=\"job-{name}\""))
        .unwrap_or_else(|| panic!("no row for {name} in {html}"));
    let end = html[start..].find("</tr>").expect("the row ends") + start;
    &html[start..end]
}

#[test]
fn the_page_is_html_agrees_with_status_and_head_answers_like_get_on_every_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replica = start(dir.path());
    let status = wait_for_runs(&replica);
    let addr = replica.http_addr().expect("serving");

    let page = http_request_with(addr, "GET", "/").expect("/ answers");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.headers
            .contains("content-type: text/html; charset=utf-8"),
        "{}",
        page.headers
    );
    assert!(
        page.headers
            .contains("content-security-policy: default-src 'none'"),
        "{}",
        page.headers
    );
    assert!(page.headers.contains("x-content-type-options: nosniff"));
    assert!(page.body.starts_with("<!doctype html>"));
    assert!(page.body.contains("This replica leads."), "{}", page.body);
    // What /status said a moment ago, the page says too (the token and the config do not change).
    let token = status["fencing_token"].as_u64().expect("leading");
    assert!(page.body.contains(&format!("fencing token <b>{token}</b>")));
    let hash = status["config"]["hash"].as_str().expect("a hash");
    assert!(page.body.contains(&format!("hash <code>{hash}</code>")));
    let passes = row(&page.body, "passes");
    assert!(
        passes.contains("<b class=\"b succeeded\">succeeded</b>"),
        "{passes}"
    );
    assert!(passes.contains("<code>* * * * * *</code> <small>UTC</small>"));
    let fails = row(&page.body, "fails");
    assert!(
        fails.contains("<b class=\"b failed\">failed</b> exit 3"),
        "{fails}"
    );
    let paused = row(&page.body, "paused");
    assert!(paused.contains("class=\"suspended\""), "{paused}");
    assert!(paused.contains("<code>suspend: true</code> in the jobs file"));

    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/status", "application/json"),
        ("/metrics", "text/plain; version=0.0.4"),
        ("/healthz", "text/plain"),
        ("/readyz", "text/plain"),
    ] {
        let head = http_request_with(addr, "HEAD", path).expect("HEAD answers");
        assert_eq!(head.status, 200, "HEAD {path}: {}", head.headers);
        assert!(
            head.headers
                .contains(&format!("content-type: {content_type}")),
            "HEAD {path}: {}",
            head.headers
        );
        assert!(head.body.is_empty(), "HEAD {path} has a body");
    }
    replica.stop_cleanly();
}

/// How `chromium` ran: its stdout (the DOM) and the console lines of its log.
struct Browsed {
    dom: String,
    console: Vec<String>,
    stderr: String,
}

/// `chromium --headless=new … --dump-dom URL`, with a profile of its own in `dir`; `None` if chromium is
/// not installed.
fn chromium_dump_dom(dir: &Path, url: &str) -> Option<Browsed> {
    let profile = dir.join("chromium-profile");
    let (stdout, stderr) = (dir.join("chromium.out"), dir.join("chromium.err"));
    let spawned = Command::new("chromium")
        .args([
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("create chromium.out"))
        .stderr(std::fs::File::create(&stderr).expect("create chromium.err"))
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot start chromium: {e}"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > BROWSER_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish in {BROWSER_LIMIT:?}: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&stderr).expect("read chromium.err");
    assert!(status.success(), "chromium exited with {status}: {stderr}");
    // Chromium logs each console message as `…:INFO:CONSOLE:LINE] "message", source: URL (LINE)` (older
    // releases: `…:INFO:CONSOLE(LINE)] …`).
    let console = stderr
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    Some(Browsed {
        dom: std::fs::read_to_string(&stdout).expect("read chromium.out"),
        console,
        stderr,
    })
}

#[test]
fn chromium_loads_the_page_without_a_console_message_and_shows_each_job_with_its_state() {
    if std::env::var(SKIP_BROWSER_VAR).as_deref() == Ok("1") {
        eprintln!("skipped: {SKIP_BROWSER_VAR}=1");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // First, that this Chromium's console lines are the ones looked for: a page that logs one.
    let probe =
        "data:text/html,<title>probe</title><script>console.error('leasecron-probe')</script>";
    let Some(probed) = chromium_dump_dom(dir.path(), probe) else {
        panic!(
            "chromium is not on PATH: install it (apt-get install chromium; .ci/run does), or set \
             {SKIP_BROWSER_VAR}=1 to skip this test"
        );
    };
    assert!(
        probed.console.iter().any(|l| l.contains("leasecron-probe")),
        "the probe's console.error is not in chromium's log as expected: {}",
        probed.stderr
    );

    let mut replica = start(dir.path());
    wait_for_runs(&replica);
    let addr = replica.http_addr().expect("serving");
    let browsed = chromium_dump_dom(dir.path(), &format!("http://{addr}/")).expect("chromium ran");
    assert!(
        browsed.console.is_empty(),
        "console messages on the page: {:#?}",
        browsed.console
    );
    let dom = &browsed.dom;
    assert!(
        dom.contains("<title>leasecron · page-replica</title>"),
        "{dom}"
    );
    assert!(dom.contains("This replica leads."), "{dom}");
    // The DOM as Chromium serializes it: every attribute quoted.
    let passes = row(dom, "passes");
    assert!(
        passes.starts_with("<tr id=\"job-passes\" class=\"succeeded"),
        "{passes}"
    );
    assert!(
        passes.contains("<b class=\"b succeeded\">succeeded</b>"),
        "{passes}"
    );
    assert!(
        passes.contains("<i class=\"succeeded\" title=\""),
        "{passes}"
    );
    let fails = row(dom, "fails");
    assert!(
        fails.starts_with("<tr id=\"job-fails\" class=\"failed"),
        "{fails}"
    );
    assert!(
        fails.contains("<b class=\"b failed\">failed</b> exit 3"),
        "{fails}"
    );
    assert!(fails.contains("<i class=\"failed\" title=\""), "{fails}");
    assert!(
        fails.contains(", exit 3"),
        "the run's title has its exit code: {fails}"
    );
    let paused = row(dom, "paused");
    assert!(
        paused.starts_with("<tr id=\"job-paused\" class=\"suspended\">"),
        "{paused}"
    );
    assert!(
        paused.contains("<b class=\"b suspended\">suspended</b>"),
        "{paused}"
    );
    assert!(paused.contains("<small>none recorded</small>"), "{paused}");
    assert!(paused.contains("if resumed: "), "{paused}");
    replica.stop_cleanly();
}
