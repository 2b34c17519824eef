//! The kube-apiserver audit log that tools/kube-testenv writes, read as it grows: the requests that the
//! benches on the real API server count and time. Reading only what was appended keeps a poll cheap: the
//! whole file re-read each time would cost a core while a failover is awaited.

#![allow(dead_code)] // each benchmark reads different fields

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One line of the audit log: the fields the benches read.
pub struct AuditEvent {
    pub id: String,
    pub stage: String,
    pub verb: String,
    pub user: String,
    pub namespace: Option<String>,
    pub group: Option<String>,
    pub resource: Option<String>,
    pub name: Option<String>,
    pub code: Option<u16>,
    pub received: DateTime<Utc>,
    pub completed: DateTime<Utc>,
}

impl AuditEvent {
    /// The event on `line`, if it is one.
    pub fn parse(line: &str) -> Option<AuditEvent> {
        let v: Value = serde_json::from_str(line).ok()?;
        let text = |pointer: &str| {
            v.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let time = |pointer: &str| {
            DateTime::parse_from_rfc3339(v.pointer(pointer)?.as_str()?)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        Some(AuditEvent {
            id: text("/auditID")?,
            stage: text("/stage")?,
            verb: text("/verb")?,
            user: text("/user/username")?,
            namespace: text("/objectRef/namespace"),
            group: text("/objectRef/apiGroup"),
            resource: text("/objectRef/resource"),
            name: text("/objectRef/name"),
            code: v
                .pointer("/responseStatus/code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok()),
            received: time("/requestReceivedTimestamp")?,
            completed: time("/stageTimestamp")?,
        })
    }
}

/// The audit log read as it grows, keeping the requests of one user (or of all).
pub struct AuditTail {
    path: PathBuf,
    offset: u64,
    user: Option<String>,
    pub events: Vec<AuditEvent>,
}

impl AuditTail {
    /// Every user's requests.
    pub fn new(path: &Path) -> AuditTail {
        AuditTail {
            path: path.to_owned(),
            offset: 0,
            user: None,
            events: Vec::new(),
        }
    }

    /// The requests of `user` only.
    pub fn of_user(path: &Path, user: &str) -> AuditTail {
        AuditTail {
            user: Some(user.to_owned()),
            ..AuditTail::new(path)
        }
    }

    /// Reads the complete lines written since the last poll.
    pub fn poll(&mut self) {
        let Ok(mut file) = fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let text = String::from_utf8_lossy(&bytes[..=end]);
        let user = self.user.as_deref();
        self.events.extend(
            text.lines()
                .filter_map(AuditEvent::parse)
                .filter(|e| user.is_none_or(|user| e.user == user)),
        );
        self.offset += end as u64 + 1;
    }
}
