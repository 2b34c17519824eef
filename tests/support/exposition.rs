//! Reading the Prometheus text exposition format in tests.

use super::replica::Replica;

/// The value of the sample written exactly as `series` (name and labels as the encoder prints them).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

/// The value of `series` on the replica's `/metrics`; `None` if it does not answer 200 or has no such
/// sample.
pub fn metric(replica: &Replica, series: &str) -> Option<f64> {
    let response = replica.http_get("/metrics")?;
    (response.status == 200)
        .then(|| sample(&response.body, series))
        .flatten()
}
