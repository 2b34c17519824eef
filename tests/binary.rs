//! Binary tests: the real `leasecron` binary, spawned as a replica or a one-shot command, and watched from
//! outside as an operator would (exit codes, logs, `/metrics` and `/status`, the files its jobs write, the
//! Lease), on a lease file or on the fake or the real API server.
//!
//! A test that drives a library module in this process belongs in `tests/component.rs` instead; README
//! "How it is tested" has the rule for every tier. `cargo test --test binary signals::` runs one module.

pub mod support;

/// The modules, in `tests/binary/` (a file module declared inside this inline one is looked up there).
mod binary {
    mod cli;
    mod client_go_interop;
    /// The operator controls at start: an invalid document, a denied watch.
    mod controls;
    /// `leasecron convert`: CronJob manifests to jobs-file entries, against golden files.
    mod convert;
    mod descendants;
    mod http;
    mod kubernetes_jobs;
    mod logs;
    /// Several replicas electing: through a lease file and through a Kubernetes Lease.
    mod multiprocess {
        mod file;
        mod kube;
    }
    mod huge_pages;
    mod open_files;
    /// The operator commands: on a lease file, and on a Kubernetes Lease.
    mod operate {
        mod file;
        mod kube;
        mod leader;
    }
    mod pid1;
    /// Live reload: of the jobs file and of the jobs ConfigMap.
    mod reload {
        mod configmap;
        mod file;
    }
    /// The run state across replicas: each slot at most once across failovers, and its capacity at start
    /// and on a reload.
    mod run_state {
        mod capacity;
        mod failover;
    }
    mod signals;
    mod startup_retry;
    mod status_page;
}
