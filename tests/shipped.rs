//! Checks of what ships beside the binary: the manifests of `deploy/` (their agreement with leasecron and
//! with each other, and the Role applied to a real kube-apiserver and used by replicas), the alerting
//! rules, runbooks and dashboard, and the rules loaded into a real Prometheus scraping real replicas.
//!
//! README "How it is tested" has the rule for every tier. `cargo test --test shipped real_rbac::` runs
//! one module.

pub mod support;

/// The modules, in `tests/shipped/` (a file module declared inside this inline one is looked up there).
mod shipped {
    mod alert_rules;
    mod deploy_manifests;
    mod prometheus_e2e;
    mod real_rbac;
}
