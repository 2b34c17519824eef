//! Component tests: the library's modules driven in this process, one module here per module of `src/`
//! it exercises, with the file backend and the Kubernetes one side by side where a module has both.
//! Real child processes only where the module under test starts them (the runner); the Kubernetes API is
//! the fake API server or the real kube-apiserver behind it (`on_both_servers!`).
//!
//! A test that starts the `leasecron` binary belongs in `tests/binary.rs` instead; README "How it is
//! tested" has the rule for every tier. `cargo test --test component lease::` runs one module.

pub mod support;

/// The modules, in `tests/component/` (a file module declared inside this inline one is looked up there).
mod component {
    mod config;
    /// The operator controls: the file beside the lease file and the ConfigMap beside the Lease, each
    /// store and the replicas' feed of it.
    mod controls {
        mod file;
        mod fixtures;
        mod kube;
    }
    mod dispatch;
    /// The elector: on the file store under paused time, and on the Kubernetes Lease in real time.
    mod election {
        mod file;
        mod kube;
    }
    mod fake_apiserver;
    mod kube_access;
    mod kube_events;
    /// `executor: kubernetes` on the real API server.
    mod kubernetes_jobs;
    /// The lease stores: the lease file and the Kubernetes Lease.
    mod lease {
        mod file;
        mod kube;
    }
    mod metrics;
    mod operator;
    mod reload;
    mod runner;
    /// The run state in its ConfigMap: the ledger and the store, and its capacity.
    mod run_state {
        mod capacity;
        mod kube;
    }
    mod schedule;
}
