//! The text under one key of a ConfigMap's `data`: the jobs ConfigMap and the run state ConfigMap each
//! hold theirs under one key, and when it is missing they say which keys there are.

use k8s_openapi::api::core::v1::ConfigMap;

/// How many keys a "key not found" message lists.
const MAX_KEYS_LISTED: usize = 10;

/// Why a ConfigMap has no text under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The key is under `binaryData`, not `data`: each resource says what to do about it.
    InBinaryData,
    /// `key KEY not found in data (keys: ...)`, listing at most ten of the keys there are.
    NotFound(String),
}

/// The text under `key` in `config_map`'s `data`, or why there is none.
pub(crate) fn text_under<'a>(config_map: &'a ConfigMap, key: &str) -> Result<&'a str, Missing> {
    if let Some(text) = config_map.data.as_ref().and_then(|data| data.get(key)) {
        return Ok(text);
    }
    if config_map
        .binary_data
        .as_ref()
        .is_some_and(|binary| binary.contains_key(key))
    {
        return Err(Missing::InBinaryData);
    }
    let keys: Vec<&str> = config_map
        .data
        .iter()
        .flat_map(|data| data.keys())
        .map(String::as_str)
        .collect();
    Err(Missing::NotFound(match keys.len() {
        0 => format!("key {key} not found in data (it has no keys)"),
        n if n <= MAX_KEYS_LISTED => {
            format!("key {key} not found in data (keys: {})", keys.join(", "))
        }
        n => format!(
            "key {key} not found in data (keys: {}, and {} more)",
            keys[..MAX_KEYS_LISTED].join(", "),
            n - MAX_KEYS_LISTED
        ),
    }))
}
