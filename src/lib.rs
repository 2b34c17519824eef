//! leasecron: a singleton cron runner for Kubernetes.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod schedule;
pub mod term;
