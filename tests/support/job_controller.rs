//! What the Job controller would write, for the tests on the real API server, where none runs: a Job's
//! terminal status, with its conditions in the order the API server's status validation demands
//! (`SuccessCriteriaMet` before `Complete`, `FailureTarget` before `Failed`, no pod active or
//! terminating).

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

/// The terminal status of a Job that ended `how`: `Complete`, or the reason of its `Failed` condition
/// (`BackoffLimitExceeded`, `DeadlineExceeded`, ...). It started 5 s ago and ends now.
pub fn terminal_status(how: &str) -> Value {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let start =
        (Utc::now() - chrono::Duration::seconds(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let condition = |type_: &str, reason: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": format!("{reason} (played)"),
               "lastProbeTime": now, "lastTransitionTime": now})
    };
    if how == "Complete" {
        json!({"startTime": start, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
               "terminating": 0, "conditions": [condition("SuccessCriteriaMet", "CompletionsReached"),
                                                condition("Complete", "CompletionsReached")]})
    } else {
        json!({"startTime": start, "failed": 1, "active": 0, "ready": 0, "terminating": 0,
               "conditions": [condition("FailureTarget", how), condition("Failed", how)]})
    }
}

/// Plays the Job controller: the Job `name` of `jobs` ended `how` ([`terminal_status`]).
pub async fn finish(jobs: &Api<Job>, name: &str, how: &str) {
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": terminal_status(how)})),
    )
    .await
    .unwrap_or_else(|e| panic!("set the status of job {name}: {e}"));
}
