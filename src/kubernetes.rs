//! The Kubernetes backend: everything leasecron reads and writes through the API server.
//!
//! - [`lease`]: the `coordination.k8s.io/v1` Lease the replicas elect through (a [`LeaseStore`]).
//! - [`run_state`]: the run state, in the ConfigMap `<lease>-state` beside the Lease.
//! - [`jobs_configmap`]: the jobs file, read from a ConfigMap and watched through the API.
//! - [`events`]: Kubernetes Events about the Lease and the runs.
//!
//! [`LeaseStore`]: crate::lease_store::LeaseStore

pub mod events;
pub mod jobs_configmap;
pub mod lease;
pub mod run_state;
