//! leasecron: a singleton cron runner for Kubernetes.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod election;
pub mod lease_store;
pub mod schedule;
pub mod term;
