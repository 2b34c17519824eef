//! The local backend: leasecron without a cluster, through files on one machine.
//!
//! - [`lease`]: a lease record in a file under `flock` (a [`LeaseStore`]).
//! - [`run_state`]: the run state, in a file beside the lease file.
//! - [`controls`]: the operators' controls, in a file beside the lease file, and the replicas' feed of it.
//! - [`jobs_file`]: the jobs file, watched for changes (also used with a Kubernetes Lease, where a
//!   ConfigMap volume mounts it).
//! - `dir_watch`: the inotify watch of a file's directory that the jobs file, the controls file and the
//!   lease file use.
//! - `cas_file`: the compare-and-swap file (a generation, a `flock`, a write renamed over) that the run
//!   state and the controls keep.
//!
//! [`LeaseStore`]: crate::lease_store::LeaseStore

mod cas_file;
pub mod controls;
pub(crate) mod dir_watch;
pub mod jobs_file;
pub mod lease;
pub mod run_state;
