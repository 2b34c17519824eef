//! Tests beyond examples: properties checked on generated inputs (proptest) and behaviour at scale
//! (10 000 jobs, 1 000 runs due in one second). The chaos test is a tier of its own (`tests/chaos.rs`):
//! its time bounds assume nothing else runs beside it.
//!
//! README "How it is tested" has the rule for every tier. `cargo test --test slow properties::` runs one
//! module.

pub mod support;

/// The modules, in `tests/slow/` (a file module declared inside this inline one is looked up there).
mod slow {
    mod properties;
    mod scale;
}
