//! leasecron: a singleton cron runner for Kubernetes.
// `deny`, not `forbid`: the one `pre_exec` in `runner::command` needs a local `allow(unsafe_code)`.
#![deny(unsafe_code)]

pub mod clock;
pub mod config;
pub mod reaper;
pub mod runner;
pub mod schedule;
pub mod term;
