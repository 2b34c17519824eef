//! The documents and requests the tests of both stores write.

use chrono::{TimeZone, Utc};
use leasecron::controls::{Controls, Request, Suspension, FORMAT};
use leasecron::run_state::RequestKind;

/// The empty document.
pub(super) fn empty() -> Controls {
    Controls {
        format: FORMAT,
        ..Controls::default()
    }
}

/// A document that suspends `job` (by alice, for a db migration).
pub(super) fn suspending(job: &str) -> Controls {
    let mut controls = empty();
    controls.suspended.insert(
        job.to_owned(),
        Suspension {
            note: Some("db migration".to_owned()),
            by: "alice".to_owned(),
            at: Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid"),
            request: "r0".to_owned(),
        },
    );
    controls
}

/// alice's request `id` to run `backup` now.
pub(super) fn trigger(id: &str) -> Request {
    Request {
        id: id.to_owned(),
        kind: RequestKind::Trigger,
        job: "backup".to_owned(),
        by: "alice".to_owned(),
        requested_at: Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid"),
        from: None,
        to: None,
        note: None,
    }
}
