//! The repository's own files, for the checks of what ships (`deploy/`, the alerting rules, the docs).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The path of the repository's file `relative`.
pub fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The repository's YAML file `relative`, as JSON values; panics naming the file if it cannot be read.
pub fn yaml(relative: &str) -> Value {
    let text = fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
}
