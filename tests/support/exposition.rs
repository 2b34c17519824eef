//! Reading the Prometheus text exposition format in tests.

/// The value of the sample written exactly as `series` (name and labels as the encoder prints them).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}
