//! `leasecron run` on the Kubernetes store, as a process: start-up errors and their exit codes.

#[path = "support/replica.rs"]
mod replica;

use std::fs;

use replica::leasecron;

fn jobs(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("jobs.yaml");
    fs::write(
        &path,
        "jobs:\n  - name: a\n    schedule: \"@hourly\"\n    command: [\"true\"]\n",
    )
    .expect("write jobs");
    path
}

/// A kubeconfig pointing at a port nobody listens on.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}],
        "current-context": "x",
    });
    fs::write(&path, config.to_string()).expect("write kubeconfig");
    path
}

#[test]
fn an_invalid_lease_name_or_namespace_exits_2_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = jobs(dir.path());
    for (flag, value) in [("--lease-name", "Bad_Name"), ("--lease-namespace", "a.b")] {
        let out = leasecron()
            .args(["run", "--jobs"])
            .arg(&jobs)
            .args([flag, value, "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", dir.path().join("none"))
            .env("HOME", dir.path())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag) && stderr.contains(value), "{stderr}");
    }
}

#[test]
fn no_kubeconfig_and_no_cluster_exits_2_saying_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = leasecron()
        .args(["run", "--jobs"])
        .arg(jobs(dir.path()))
        .args(["--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", dir.path().join("none"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot configure the Kubernetes client"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_api_server_exits_1_naming_its_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = leasecron()
        .args(["run", "--jobs"])
        .arg(jobs(dir.path()))
        .args(["--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http://127.0.0.1:9") && stderr.contains("cannot reach the Kubernetes API"),
        "{stderr}"
    );
}
