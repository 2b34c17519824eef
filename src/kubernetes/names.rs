//! Kubernetes names, checked as the API server checks them, so that a bad flag is a clear error at start
//! rather than a 422 later: an object name is a DNS-1123 subdomain, a namespace a DNS-1123 label.

/// Longest DNS-1123 label (a namespace).
pub(crate) const MAX_LABEL_LEN: usize = 63;
/// Longest DNS-1123 subdomain (an object name: a Lease's, a ConfigMap's).
pub(crate) const MAX_SUBDOMAIN_LEN: usize = 253;

/// Checks an object name (a Lease's, a ConfigMap's): a DNS-1123 subdomain (what the API server requires
/// of `metadata.name`).
pub(crate) fn check_object_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SUBDOMAIN_LEN {
        return Err(format!("it is longer than {MAX_SUBDOMAIN_LEN} characters"));
    }
    name.split('.')
        .try_for_each(|label| check_label(label, usize::MAX))
        .map_err(|why| {
            format!("{why} (a DNS-1123 subdomain: lowercase letters, digits, `-` and `.`)")
        })
}

/// Checks a namespace name: a DNS-1123 label.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    check_label(namespace, MAX_LABEL_LEN)
        .map_err(|why| format!("{why} (a DNS-1123 label: lowercase letters, digits and `-`)"))
}

fn check_label(label: &str, max_len: usize) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if label.is_empty() {
        return Err("it is empty or has an empty part".to_owned());
    }
    if label.len() > max_len {
        return Err(format!("it is longer than {max_len} characters"));
    }
    if !label.chars().all(|c| alnum(c) || c == '-') {
        return Err(format!(
            "{label:?} has a character other than a-z, 0-9 and `-`"
        ));
    }
    if !label.starts_with(alnum) || !label.ends_with(alnum) {
        return Err(format!(
            "{label:?} must start and end with a lowercase letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_name_is_a_dns_1123_subdomain() {
        for good in [
            "a",
            "leasecron",
            "cron.jobs",
            "x-1.y-2",
            &"a".repeat(MAX_SUBDOMAIN_LEN),
        ] {
            assert_eq!(check_object_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Cron",
            "-a",
            "a-",
            "a..b",
            "a_b",
            &"a".repeat(MAX_SUBDOMAIN_LEN + 1),
        ] {
            assert!(check_object_name(bad).is_err(), "{bad}");
        }
        let why = check_object_name("a..b").expect_err("empty part");
        assert!(
            why.contains("empty part") && why.contains("subdomain"),
            "{why}"
        );
    }

    #[test]
    fn a_namespace_is_a_dns_1123_label() {
        assert_eq!(check_namespace("kube-system"), Ok(()));
        assert_eq!(check_namespace(&"n".repeat(MAX_LABEL_LEN)), Ok(()));
        let why = check_namespace(&"n".repeat(MAX_LABEL_LEN + 1)).expect_err("too long");
        assert!(why.contains("longer than 63"), "{why}");
        let why = check_namespace("a.b").expect_err("a dot");
        assert!(
            why.contains("other than a-z") && why.contains("label"),
            "{why}"
        );
    }
}
