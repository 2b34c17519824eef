//! Start-up against an unavailable API: the start-up requests to the Kubernetes API (the GET of the Lease,
//! the read of `--jobs-configmap`, the identity check) are retried while they fail transiently —
//! unreachable, a reset connection, a timeout, a 5xx or a 429 — with a capped exponential backoff and
//! jitter, for up to `--startup-timeout` (then exit 1 with the last error): a brief outage while a pod
//! starts does not cost a crash-loop back-off. A permanent answer (403, 401, a missing ConfigMap, invalid
//! jobs) still exits 2 at once.

use std::future::Future;
use std::time::Duration;

use super::Error;

/// The first wait between start-up attempts; it doubles per attempt, up to [`STARTUP_RETRY_MAX_DELAY`].
const STARTUP_RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between start-up attempts: a recovered API server is noticed within this.
const STARTUP_RETRY_MAX_DELAY: Duration = Duration::from_secs(15);

/// Retries the start-up requests while they fail transiently ([`Error::is_transient`]), until a deadline.
#[derive(Debug)]
pub struct Startup {
    timeout: Duration,
    deadline: tokio::time::Instant,
    /// The state of the jitter's generator (xorshift64*).
    jitter: u64,
}

// === impl Startup ===

impl Startup {
    /// Retries until `timeout` from now (zero: tries once).
    pub fn new(timeout: Duration) -> Startup {
        // Replicas started together must not retry in step: seed from the clock and the process id.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Startup {
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            jitter: (nanos ^ (u64::from(std::process::id()) << 32)) | 1,
        }
    }

    /// Runs `call` until it succeeds, fails permanently, or fails transiently after the deadline
    /// ([`Error::StartupTimeout`] with the last failure). Each retry is logged at warn.
    pub async fn retry<T, F: Future<Output = Result<T, Error>>>(
        &mut self,
        step: &'static str,
        mut call: impl FnMut() -> F,
    ) -> Result<T, Error> {
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(
                            step,
                            attempts = attempt,
                            "the Kubernetes API answers again"
                        );
                    }
                    return Ok(value);
                }
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };
            let remaining = self
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(Error::StartupTimeout {
                    step,
                    attempts: attempt,
                    timeout: self.timeout,
                    source: Box::new(error),
                });
            }
            let delay = self.delay(attempt).min(remaining);
            tracing::warn!(
                step,
                attempt,
                %error,
                retry_in_seconds = delay.as_secs_f64(),
                "the Kubernetes API is unavailable at start; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The wait after failed attempt `attempt`: doubling from [`STARTUP_RETRY_FIRST_DELAY`] up to
    /// [`STARTUP_RETRY_MAX_DELAY`], then a random half of it taken off ("equal jitter"), in milliseconds.
    fn delay(&mut self, attempt: u32) -> Duration {
        let doubled =
            STARTUP_RETRY_FIRST_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let ceiling = doubled.min(STARTUP_RETRY_MAX_DELAY).as_millis() as u64;
        self.jitter ^= self.jitter >> 12;
        self.jitter ^= self.jitter << 25;
        self.jitter ^= self.jitter >> 27;
        let random = self.jitter.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = ceiling / 2;
        Duration::from_millis(ceiling - random % (half + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::jobs_configmap;
    use crate::lease_store;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> Error {
        Error::ConfigMap(jobs_configmap::Error::Unavailable {
            origin: "configmap/ns/jobs/jobs.yaml".to_owned(),
            verb: "get",
            detail: "HTTP 503".to_owned(),
        })
    }

    fn forbidden() -> Error {
        Error::Kubernetes {
            url: "https://api".to_owned(),
            source: lease_store::Error::Forbidden {
                store: "lease ns/l".to_owned(),
                verb: lease_store::Verb::Get,
                namespace: "ns".to_owned(),
                message: "no".to_owned(),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_the_call_succeeds() {
        let calls = AtomicU32::new(0);
        let mut startup = Startup::new(Duration::from_secs(60));
        let value = startup
            .retry("test", || async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0..=3 => Err(unavailable()),
                    _ => Ok(7),
                }
            })
            .await
            .expect("succeeds on the fifth attempt");
        assert_eq!((value, calls.load(Ordering::Relaxed)), (7, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let mut startup = Startup::new(Duration::from_secs(60));
        let error = startup
            .retry("test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(forbidden())
            })
            .await
            .expect_err("forbidden");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(error.is_usage());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline_with_the_last_error_and_exit_1() {
        let start = tokio::time::Instant::now();
        let mut startup = Startup::new(Duration::from_secs(20));
        let error = startup
            .retry("reading --jobs-configmap", || async {
                Err::<(), _>(unavailable())
            })
            .await
            .expect_err("gives up");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(20),
            "the last wait ends at the deadline"
        );
        let Error::StartupTimeout { attempts, .. } = &error else {
            panic!("expected StartupTimeout, got {error:?}");
        };
        // Waits of at most 0.5, 1, 2, 4, 8 s and at least half of each: 6 to 10 attempts in 20 s.
        assert!((6..=10).contains(attempts), "{attempts}");
        assert!(!error.is_usage());
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "reading --jobs-configmap: gave up after {attempts} attempts in 20s (--startup-timeout): "
            )) && text.contains("HTTP 503"),
            "{text}"
        );
        let no_retry = Startup::new(Duration::ZERO)
            .retry("test", || async { Err::<(), _>(unavailable()) })
            .await
            .expect_err("no retry");
        assert!(matches!(
            no_retry,
            Error::StartupTimeout { attempts: 1, .. }
        ));
    }

    #[test]
    fn the_delays_double_up_to_the_cap_and_keep_at_least_half() {
        let mut startup = Startup::new(Duration::from_secs(60));
        for attempt in 1..40 {
            let ceiling = (STARTUP_RETRY_FIRST_DELAY * 2u32.pow((attempt - 1).min(16)))
                .min(STARTUP_RETRY_MAX_DELAY);
            let delay = startup.delay(attempt);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{attempt}: {delay:?}"
            );
        }
        // Jittered: not every delay at the cap is the same.
        let capped: std::collections::HashSet<Duration> =
            (0..20).map(|_| startup.delay(30)).collect();
        assert!(capped.len() > 1);
    }
}
