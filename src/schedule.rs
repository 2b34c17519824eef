//! Cron schedules (croner + chrono-tz) and the per-job timer.
//!
//! SKELETON — owned by the config/schedule helper.

/// A parsed cron expression in an IANA zone.
#[derive(Debug, Clone)]
pub struct Schedule {}
