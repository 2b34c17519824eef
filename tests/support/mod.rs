//! The support code of every test binary: one module tree, declared once per binary as `pub mod support;`
//! at its root (public, so what one binary does not use is not dead code there).
//!
//! Spawning and reading the real binary:
//!
//! - [`replica`]: `leasecron run` processes and one-shot commands, jobs that record their runs, polling.
//! - [`exposition`]: a sample of the Prometheus text format, and a metric of a replica.
//! - [`logfmt`]: leasecron's text log, line by line.
//! - [`mount`]: a ConfigMap volume as kubelet writes it (the atomic swap of `..data`).
//! - [`repo`]: the repository's own files (`deploy/`, the alerting rules), by path and as YAML.
//!
//! The Kubernetes API:
//!
//! - [`fake_apiserver`]: the strict fake API server, and in front of the real kube-apiserver
//!   ([`fake_apiserver::real`], tools/kube-testenv) in proxy mode; `on_both_servers!` runs a test on both.
//! - [`kube_electors`]: Lease stores and in-process electors on the fake's clients, and who holds the
//!   Lease.
//! - [`stores`]: real replicas on a lease file or on either server's Lease, operator commands against
//!   them, waiting for one to lead or follow, and counting the runs of each slot.
//!
//! In-process fixtures and generators:
//!
//! - [`election_faults`]: a lease store that fails or hangs on demand, and electors on file stores.
//! - [`runner_fixtures`]: jobs, terms, the runner's events and its captured log.
//! - [`arbitrary_config`], [`arbitrary_schedule`], [`embedding`]: proptest models of the jobs file and of
//!   schedules, and the text helpers the fuzz targets share.
//! - [`scale_jobs`]: generated jobs files of any size.
//! - [`chaos`]: the chaos test's cluster, faults and analysis.
//!
//! `benches/` and `fuzz/` include some of these files by path (`replica.rs`, `scale_jobs.rs`, `mount.rs`,
//! `embedding.rs`, `fake_apiserver/mod.rs`), so those name nothing of this tree outside themselves (but
//! for the paths in `on_both_servers!`, which only the tests expand).

pub mod arbitrary_config;
pub mod arbitrary_schedule;
pub mod chaos;
pub mod election_faults;
pub mod embedding;
pub mod exposition;
pub mod fake_apiserver;
pub mod job_controller;
pub mod kube_electors;
pub mod logfmt;
pub mod mount;
pub mod replica;
pub mod repo;
pub mod runner_fixtures;
pub mod scale_jobs;
pub mod stores;
