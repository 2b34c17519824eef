//! Rate limits that know nothing of what they limit: a [`TokenBucket`], a [`Throttle`] that folds the
//! repeats of a key under such a bucket, and a [`LogLimiter`] for log lines about repeated trouble.
//!
//! All are pure: the caller passes the time in, so tests need no clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// The latest item offered for a key, and how many occurrences it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Folded<T> {
    /// The latest item.
    pub item: T,
    /// How many items were offered since the last one let through (this one included).
    pub count: u32,
}

// === impl Throttle ===

/// Per-key intervals and folding, under a global token bucket. Pure: time is passed in.
///
/// A key is let through at most once per interval; the items offered in between are folded into one
/// pending [`Folded`] (the latest item and the count), let through once the key's interval is over and the
/// bucket has a token.
#[derive(Debug)]
pub(crate) struct Throttle<K, T> {
    keys: HashMap<K, KeyState<T>>,
    bucket: TokenBucket,
    key_interval: Duration,
}

/// One key's last write and what was folded since.
#[derive(Debug)]
struct KeyState<T> {
    last_write: Option<Instant>,
    pending: Option<Folded<T>>,
}

impl<T> Default for KeyState<T> {
    fn default() -> Self {
        KeyState {
            last_write: None,
            pending: None,
        }
    }
}

impl<T> KeyState<T> {
    /// When the key may be written again (`None`: never written, open).
    fn open_at(&self, interval: Duration) -> Option<Instant> {
        self.last_write.map(|last| last + interval)
    }
}

impl<K: Eq + Hash, T> Throttle<K, T> {
    /// Each key at most once per `key_interval`, all keys together at most `burst` at once and one more
    /// every `refill` (which must not be zero).
    pub(crate) fn new(now: Instant, key_interval: Duration, burst: u32, refill: Duration) -> Self {
        Throttle {
            keys: HashMap::new(),
            bucket: TokenBucket::full(now, burst, refill),
            key_interval,
        }
    }

    /// What to let through now for `item` of `key`, or `None` if it was folded into its key's pending
    /// write.
    pub(crate) fn offer(&mut self, key: K, item: T, now: Instant) -> Option<Folded<T>> {
        self.forget_idle(now);
        let interval = self.key_interval;
        let state = self.keys.entry(key).or_default();
        let open = state.pending.is_none() && state.open_at(interval).is_none_or(|at| at <= now);
        if open && self.bucket.try_take(now) {
            state.last_write = Some(now);
            return Some(Folded { item, count: 1 });
        }
        let count = state.pending.as_ref().map_or(0, |p| p.count);
        state.pending = Some(Folded {
            item,
            count: count.saturating_add(1),
        });
        None
    }

    /// The pending writes whose key is open, as far as the bucket has tokens.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Folded<T>> {
        let mut writes = Vec::new();
        for state in self.keys.values_mut() {
            let open = state.open_at(self.key_interval).is_none_or(|at| at <= now);
            if state.pending.is_none() || !open {
                continue;
            }
            if !self.bucket.try_take(now) {
                break;
            }
            state.last_write = Some(now);
            writes.extend(state.pending.take());
        }
        writes
    }

    /// Every pending write, regardless of intervals and tokens.
    pub(crate) fn drain(&mut self) -> Vec<Folded<T>> {
        self.keys
            .values_mut()
            .filter_map(|state| state.pending.take())
            .collect()
    }

    /// When [`Throttle::due`] may next return something: the earliest pending key's opening, but not
    /// before the bucket's next token (a key never written is open at once).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let token = self.bucket.next_token_at();
        self.keys
            .values()
            .filter(|state| state.pending.is_some())
            .map(|state| {
                state
                    .open_at(self.key_interval)
                    .map_or(token, |at| at.max(token))
            })
            .min()
    }

    /// Drops keys with nothing pending whose interval is over: they behave as new keys.
    fn forget_idle(&mut self, now: Instant) {
        let interval = self.key_interval;
        self.keys.retain(|_, state| {
            state.pending.is_some() || state.open_at(interval).is_some_and(|at| at > now)
        });
    }
}

// === impl TokenBucket ===

/// `burst` tokens at most, one more every `refill`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    burst: u32,
    refill: Duration,
    tokens: u32,
    /// When the last token was added (or the bucket was last full).
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket (`refill` must not be zero).
    pub(crate) fn full(now: Instant, burst: u32, refill: Duration) -> TokenBucket {
        TokenBucket {
            burst,
            refill,
            tokens: burst,
            refilled: now,
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// When the next token is there.
    pub(crate) fn next_token_at(&self) -> Instant {
        if self.tokens > 0 {
            self.refilled
        } else {
            self.refilled + self.refill
        }
    }

    fn refill(&mut self, now: Instant) {
        let periods =
            now.saturating_duration_since(self.refilled).as_nanos() / self.refill.as_nanos();
        let added = u32::try_from(periods).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(added).min(self.burst);
        if self.tokens == self.burst {
            self.refilled = now;
        } else {
            self.refilled += self.refill * added;
        }
    }
}

// === impl LogLimiter ===

/// Allows one log line per interval and counts the ones it suppressed.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// One line per `interval`.
    pub(crate) fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` if a line may be logged now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_INTERVAL: Duration = Duration::from_secs(60);
    const BURST: u32 = 10;
    const REFILL: Duration = Duration::from_secs(6);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn throttle(now: Instant) -> Throttle<&'static str, String> {
        Throttle::new(now, KEY_INTERVAL, BURST, REFILL)
    }

    #[test]
    fn the_first_item_of_a_key_is_let_through_at_once() {
        let t0 = Instant::now();
        let mut throttle = throttle(t0);
        let write = throttle.offer("a", "n".to_owned(), t0);
        assert_eq!(write.map(|w| w.count), Some(1));
        assert_eq!(throttle.next_due(), None);
    }

    #[test]
    fn repeats_within_the_interval_fold_into_one_write_with_the_count_and_latest_item() {
        let t0 = Instant::now();
        let mut throttle = throttle(t0);
        assert!(throttle.offer("a", "1".to_owned(), t0).is_some());
        for i in 2..=60 {
            let written = throttle.offer("a", i.to_string(), t0 + secs(i));
            assert_eq!(written, None, "repeat {i} was written");
        }
        assert_eq!(throttle.next_due(), Some(t0 + KEY_INTERVAL));
        assert!(throttle.due(t0 + KEY_INTERVAL - secs(1)).is_empty());
        let writes = throttle.due(t0 + KEY_INTERVAL);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].count, 59);
        assert_eq!(writes[0].item, "60");
        assert_eq!(throttle.next_due(), None);
    }

    #[test]
    fn a_repeat_after_a_pending_write_was_flushed_waits_for_the_interval() {
        let t0 = Instant::now();
        let mut throttle = throttle(t0);
        throttle.offer("a", "1".to_owned(), t0);
        throttle.offer("a", "2".to_owned(), t0 + secs(1));
        assert_eq!(throttle.due(t0 + KEY_INTERVAL).len(), 1);
        let later = t0 + KEY_INTERVAL + secs(1);
        assert_eq!(throttle.offer("a", "3".to_owned(), later), None);
        assert_eq!(throttle.next_due(), Some(t0 + KEY_INTERVAL * 2));
    }

    #[test]
    fn a_key_is_open_again_after_a_quiet_interval() {
        let t0 = Instant::now();
        let mut throttle = throttle(t0);
        throttle.offer("a", "1".to_owned(), t0);
        let write = throttle.offer("a", "2".to_owned(), t0 + KEY_INTERVAL);
        assert_eq!(write.map(|w| w.count), Some(1));
    }

    #[test]
    fn keys_are_limited_apart() {
        let t0 = Instant::now();
        let mut throttle = throttle(t0);
        assert!(throttle.offer("a", "n".to_owned(), t0).is_some());
        assert!(throttle.offer("b", "n".to_owned(), t0).is_some());
    }

    #[test]
    fn the_global_bucket_caps_writes_across_keys_and_folds_the_rest() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, KEY_INTERVAL, BURST, REFILL);
        let written = (0..BURST + 5)
            .filter(|key| throttle.offer(*key, "n", t0).is_some())
            .count();
        assert_eq!(written, BURST as usize);
        assert_eq!(throttle.next_due(), Some(t0 + REFILL));
        assert_eq!(throttle.due(t0 + REFILL).len(), 1);
        assert_eq!(throttle.due(t0 + REFILL * 5).len(), 4);
        assert_eq!(throttle.next_due(), None);
    }

    #[test]
    fn drain_returns_every_pending_write_regardless_of_limits() {
        let t0 = Instant::now();
        let mut throttle = throttle(t0);
        for i in 0..100 {
            throttle.offer("a", i.to_string(), t0);
        }
        let drained = throttle.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].count, 99);
        assert!(throttle.drain().is_empty());
    }

    #[test]
    fn the_bucket_refills_one_token_per_period_up_to_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(t0, BURST, REFILL);
        for _ in 0..BURST {
            assert!(bucket.try_take(t0));
        }
        assert!(!bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + REFILL - Duration::from_millis(1)));
        assert!(bucket.try_take(t0 + REFILL));
        let much_later = t0 + REFILL * 1000;
        let taken = (0..BURST * 2)
            .filter(|_| bucket.try_take(much_later))
            .count();
        assert_eq!(taken, BURST as usize);
    }

    #[test]
    fn the_log_limiter_allows_one_line_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let interval = secs(60);
        let mut limiter = LogLimiter::new(interval);
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0 + secs(1)), None);
        assert_eq!(limiter.allow(t0 + secs(2)), None);
        assert_eq!(limiter.allow(t0 + interval), Some(2));
    }
}
