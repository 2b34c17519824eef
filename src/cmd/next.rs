//! `leasecron next`: the next fire times of each job, in the job's zone, and with `--lease-file` or
//! `--lease-name` each job's last slot from the run state (read without a replica's HTTP port).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use super::Error;
use crate::backend;
use crate::config::{self, LoadOptions};
use crate::kubernetes;
use crate::kubernetes::run_state::StateConfigMap;
use crate::local::run_state::StateFile;
use crate::run_state::{JobRecord, Ledger, StateRecord};

/// Where `leasecron next` reads the run state from.
#[derive(Debug, Clone)]
pub enum StateSource {
    /// Beside this lease file.
    File(PathBuf),
    /// The ConfigMap `<name>-state` of this Kubernetes Lease.
    Kube {
        /// The Lease's name.
        name: String,
        /// Its namespace, if given (else `POD_NAMESPACE`, else the client configuration's).
        namespace: Option<String>,
    },
}

/// How long `next` waits for the API server.
const NEXT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The run state (empty if there is none yet; an unusable one reads as empty, as the ledger would
/// rebuild it).
pub async fn read_run_state(source: StateSource) -> Result<StateRecord, Error> {
    let ledger = match source {
        StateSource::File(lease) => {
            let state = StateFile::beside(&lease);
            // No lease file and no run state: most likely a typo, not a lease with no runs yet.
            if !lease.exists() && !state.path().exists() {
                return Err(Error::NoRunState {
                    state: state.path().to_path_buf(),
                    lease,
                });
            }
            Ledger::new(state, String::new())
        }
        StateSource::Kube { name, namespace } => {
            backend::check_lease_name(&name)?;
            let config = kubernetes::infer_config()
                .await
                .map_err(backend::Error::from)?;
            let namespace = backend::resolve_namespace(namespace, &config)?;
            let state = StateConfigMap::new(config, &namespace, &name, NEXT_REQUEST_TIMEOUT)
                .map_err(backend::Error::from)?;
            Ledger::new(state, String::new())
        }
    };
    ledger.refresh().await.map_err(Error::State)
}

/// `leasecron next`: the next `count` fire times of each job (or of `job`), in each job's zone; with a run
/// state `record`, each job's last slot from it. `file` is a jobs file or a manifest whose ConfigMaps hold
/// one under `data.KEY`, as `validate` takes it (`-`: standard input), read up to `max_file_size` bytes.
pub fn next(
    file: &Path,
    key: &str,
    max_file_size: u64,
    count: usize,
    job: Option<&str>,
    record: Option<&StateRecord>,
) -> Result<String, Error> {
    // `next` shows when jobs fire; whether their grace fits some lease timings is `validate`'s business.
    let opts = LoadOptions {
        max_termination_grace: Duration::MAX,
    };
    let checked = config::check_source(file, key, &opts, max_file_size)?;
    let now = Utc::now();
    let mut out = String::new();
    let mut found = false;
    let config_maps = match &checked.source {
        config::Source::JobsFile(_) => Vec::new(),
        config::Source::Manifest { config_maps, .. } => config_maps.iter().collect(),
    };
    for (index, set) in checked.source.job_sets().enumerate() {
        // Several ConfigMaps: say whose jobs follow.
        if let (true, Some(config_map)) = (config_maps.len() > 1, config_maps.get(index)) {
            let name = config_map.name.as_deref().unwrap_or("(unnamed)");
            out.push_str(&format!("# ConfigMap {name}, key {}\n", config_map.key));
        }
        for j in set
            .jobs
            .iter()
            .filter(|j| job.is_none_or(|name| name == j.name))
        {
            found = true;
            let jitter = j.jitter.map_or_else(String::new, |jitter| {
                format!(
                    "  (fires {} after each slot: jitter {})",
                    humantime::format_duration(j.jitter_offset()),
                    humantime::format_duration(jitter)
                )
            });
            out.push_str(&format!(
                "{}  \"{}\"  {}{}{jitter}\n",
                j.name,
                j.schedule.expression(),
                j.schedule.zone(),
                if j.suspend { "  (suspended)" } else { "" }
            ));
            if let Some(record) = record {
                out.push_str(&describe_record(record.jobs.get(&j.name)));
            }
            for at in j.schedule.upcoming(now, count) {
                out.push_str(&format!("  {}\n", at.to_rfc3339()));
            }
        }
    }
    match job {
        Some(name) if !found => Err(Error::UnknownJob(name.to_owned())),
        _ => Ok(out),
    }
}

/// One job's run state, as `next` prints it.
fn describe_record(record: Option<&JobRecord>) -> String {
    let Some(record) = record else {
        return "  last slot: none recorded\n  next:\n".to_owned();
    };
    let mut out = String::new();
    if let Some(started) = &record.last_started {
        let completed = record
            .last_completion
            .as_ref()
            .filter(|c| c.slot == started.slot)
            .map_or_else(|| "not completed".to_owned(), |c| c.outcome.clone());
        out.push_str(&format!(
            "  last slot: {} (fencing token {}, {}, {completed})\n",
            started.slot.to_rfc3339(),
            started.fencing_token,
            started.identity
        ));
    }
    if let Some(success) = &record.last_success {
        out.push_str(&format!(
            "  last success: {} (finished {})\n",
            success.slot.to_rfc3339(),
            success.finished_at.to_rfc3339()
        ));
    }
    out.push_str("  next:\n");
    out
}
