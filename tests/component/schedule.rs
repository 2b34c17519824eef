//! Schedules against known next-fire tables (syntax, day rules, DST) and the Timer's tick semantics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use leasecron::clock::{PausedClock, SharedClock, WallClock};
use leasecron::schedule::{self, Schedule, Tick, Timer, ON_TIME_TOLERANCE};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
}

fn zone(name: &str) -> Tz {
    name.parse()
        .unwrap_or_else(|e| panic!("bad test zone {name}: {e}"))
}

/// Asserts that `expr` in `zone_name` fires at `expected` (RFC 3339, UTC), in order, after `from`.
fn assert_fires(expr: &str, zone_name: &str, from: &str, expected: &[&str]) {
    let schedule = Schedule::parse(expr, zone(zone_name))
        .unwrap_or_else(|e| panic!("{expr} should parse: {e}"));
    let mut at = utc(from);
    for want in expected {
        let next = schedule
            .next_after(at)
            .unwrap_or_else(|| panic!("{expr}: no fire after {at}"));
        assert_eq!(next, utc(want), "{expr} in {zone_name}: next after {at}");
        at = next;
    }
}

// === expressions ===

#[test]
fn five_fields_fire_on_the_minute_and_six_fields_on_the_second() {
    assert_fires(
        "30 2 * * *",
        "UTC",
        "2024-03-10T00:00:00Z",
        &[
            "2024-03-10T02:30:00Z",
            "2024-03-11T02:30:00Z",
            "2024-03-12T02:30:00Z",
        ],
    );
    assert_fires(
        "15 30 2 * * *",
        "UTC",
        "2024-03-10T00:00:00Z",
        &["2024-03-10T02:30:15Z", "2024-03-11T02:30:15Z"],
    );
    assert_fires(
        "*/20 * * * * *",
        "UTC",
        "2024-03-10T10:00:00Z",
        &[
            "2024-03-10T10:00:20Z",
            "2024-03-10T10:00:40Z",
            "2024-03-10T10:01:00Z",
        ],
    );
}

#[test]
fn macros_expand_to_their_cron_meaning() {
    let from = "2024-05-01T10:30:00Z"; // a Wednesday
    assert_fires(
        "@hourly",
        "UTC",
        from,
        &["2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z"],
    );
    for daily in ["@daily", "@midnight"] {
        assert_fires(
            daily,
            "UTC",
            from,
            &["2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z"],
        );
    }
    assert_fires(
        "@weekly",
        "UTC",
        from,
        &["2024-05-05T00:00:00Z", "2024-05-12T00:00:00Z"],
    );
    assert_fires(
        "@monthly",
        "UTC",
        from,
        &["2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z"],
    );
    for yearly in ["@yearly", "@annually", "@YEARLY"] {
        assert_fires(
            yearly,
            "UTC",
            from,
            &["2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"],
        );
    }
}

#[test]
fn month_and_day_names_work_in_their_fields() {
    assert_fires(
        "0 9 * JAN,jul MON-wed",
        "UTC",
        "2023-12-31T12:00:00Z",
        &[
            "2024-01-01T09:00:00Z",
            "2024-01-02T09:00:00Z",
            "2024-01-03T09:00:00Z",
            "2024-01-08T09:00:00Z",
        ],
    );
    assert_fires(
        "0 0 * * FRI-SUN",
        "UTC",
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-05T00:00:00Z",
            "2024-01-06T00:00:00Z",
            "2024-01-07T00:00:00Z",
            "2024-01-12T00:00:00Z",
        ],
    );
    assert_fires(
        "0 0 * * 7",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-07T00:00:00Z"],
    );
}

#[test]
fn restricted_day_of_month_and_day_of_week_combine_with_or() {
    // Fridays of January 2024 are 5, 12, 19, 26; the 13th is a Saturday.
    assert_fires(
        "0 0 13 * FRI",
        "UTC",
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-05T00:00:00Z",
            "2024-01-12T00:00:00Z",
            "2024-01-13T00:00:00Z",
            "2024-01-19T00:00:00Z",
        ],
    );
    // `*/10` is a restriction (days 1, 11, 21, 31), as in CronJob.
    assert_fires(
        "0 0 */10 * MON",
        "UTC",
        "2023-12-31T12:00:00Z",
        &[
            "2024-01-01T00:00:00Z",
            "2024-01-08T00:00:00Z",
            "2024-01-11T00:00:00Z",
            "2024-01-15T00:00:00Z",
            "2024-01-21T00:00:00Z",
            "2024-01-22T00:00:00Z",
        ],
    );
}

#[test]
fn an_unrestricted_day_field_leaves_the_other_one_to_decide() {
    for expr in ["0 0 13 * *", "0 0 13 * ?", "0 0 13 * */1"] {
        assert_fires(
            expr,
            "UTC",
            "2024-01-01T00:00:00Z",
            &["2024-01-13T00:00:00Z", "2024-02-13T00:00:00Z"],
        );
    }
    assert_fires(
        "0 0 ? * FRI",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-05T00:00:00Z", "2024-01-12T00:00:00Z"],
    );
}

#[test]
fn last_day_nearest_weekday_and_nth_weekday() {
    assert_fires(
        "0 0 L * *",
        "UTC",
        "2024-01-15T00:00:00Z",
        &[
            "2024-01-31T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2024-03-31T00:00:00Z",
        ],
    );
    assert_fires(
        "0 0 L 2 *",
        "UTC",
        "2023-01-01T00:00:00Z",
        &["2023-02-28T00:00:00Z", "2024-02-29T00:00:00Z"],
    );
    // 15 June 2024 is a Saturday, 15 September a Sunday.
    assert_fires(
        "0 0 15W * *",
        "UTC",
        "2024-06-01T00:00:00Z",
        &[
            "2024-06-14T00:00:00Z",
            "2024-07-15T00:00:00Z",
            "2024-08-15T00:00:00Z",
            "2024-09-16T00:00:00Z",
        ],
    );
    // 1 June 2024 is a Saturday: W does not leave the month.
    assert_fires(
        "0 0 1W * *",
        "UTC",
        "2024-05-15T00:00:00Z",
        &["2024-06-03T00:00:00Z"],
    );
    // 31 March 2024 is a Sunday, 31 August a Saturday.
    assert_fires(
        "0 0 LW 3,8 *",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-03-29T00:00:00Z", "2024-08-30T00:00:00Z"],
    );
    assert_fires(
        "0 0 * * 1#2",
        "UTC",
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-08T00:00:00Z",
            "2024-02-12T00:00:00Z",
            "2024-03-11T00:00:00Z",
        ],
    );
    for last_friday in ["0 0 * * 5#L", "0 0 * * 5L", "0 0 * * FRI#L"] {
        assert_fires(
            last_friday,
            "UTC",
            "2024-01-01T00:00:00Z",
            &[
                "2024-01-26T00:00:00Z",
                "2024-02-23T00:00:00Z",
                "2024-03-29T00:00:00Z",
            ],
        );
    }
    assert_fires(
        "0 0 * * MON#5",
        "UTC",
        "2024-01-01T00:00:00Z",
        &["2024-01-29T00:00:00Z", "2024-04-29T00:00:00Z"],
    );
}

#[test]
fn expressions_cron_users_would_not_expect_are_rejected() {
    let rejected = [
        ("", "empty"),
        ("0 0 1 1 * 2030 *", "found 7"),
        ("0 0 1 1 * 2030", "invalid day-of-week field"),
        ("* * *", "found 3"),
        ("@every 5m", "unknown macro"),
        ("@reboot", "unknown macro"),
        ("0 0 * MON *", "unexpected `MON` in the month field"),
        ("0 0 * * JAN", "unexpected `JAN` in the day-of-week field"),
        ("0 0 1 * +MON", "`+` modifier"),
        ("60 * * * *", "invalid minute field"),
        ("0 24 * * *", "invalid hour field"),
        ("0 0 0 * *", "invalid day-of-month field"),
        ("0 0 * * 8", "invalid day-of-week field"),
        ("*/0 * * * *", "invalid minute field"),
        ("0/10 * * * *", "invalid minute field"),
        ("0 0 30 2 *", "never fires"),
    ];
    for (expr, message) in rejected {
        match Schedule::parse(expr, Tz::UTC) {
            Ok(s) => panic!("`{expr}` should be rejected, parsed as {s}"),
            Err(err) => assert!(
                err.to_string().contains(message),
                "`{expr}`: {err} should mention {message:?}"
            ),
        }
    }
}

#[test]
fn upcoming_lists_fires_in_the_schedule_zone() {
    let schedule = Schedule::parse("0 9 * * MON-FRI", zone("Europe/Berlin")).expect("valid");
    let fires: Vec<String> = schedule
        .upcoming(utc("2024-07-05T12:00:00Z"), 3)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(
        fires,
        [
            "2024-07-08T09:00:00+02:00",
            "2024-07-09T09:00:00+02:00",
            "2024-07-10T09:00:00+02:00"
        ]
    );
    assert_eq!(schedule.expression(), "0 9 * * MON-FRI");
    assert_eq!(schedule.zone(), zone("Europe/Berlin"));
}

// === daylight-saving time ===

#[test]
fn berlin_spring_forward_runs_a_skipped_fixed_time_once_right_after_the_change() {
    // 2024-03-31: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    assert_fires(
        "30 2 * * *",
        "Europe/Berlin",
        "2024-03-30T00:00:00Z",
        &[
            "2024-03-30T01:30:00Z",
            "2024-03-31T01:00:00Z",
            "2024-04-01T00:30:00Z",
        ],
    );
    // A list of hours is still fixed-time (croner alone would skip 02:00 here).
    assert_fires(
        "0 2,14 * * *",
        "Europe/Berlin",
        "2024-03-30T14:00:00Z",
        &["2024-03-31T01:00:00Z", "2024-03-31T12:00:00Z"],
    );
    // Several skipped times of one schedule merge into the one fire after the gap.
    assert_fires(
        "0,30 2,3 * * *",
        "Europe/Berlin",
        "2024-03-31T00:00:00Z",
        &["2024-03-31T01:00:00Z", "2024-03-31T01:30:00Z"],
    );
}

#[test]
fn berlin_fall_back_runs_a_repeated_fixed_time_once_at_its_first_occurrence() {
    // 2024-10-27: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:00–02:59 happens twice.
    assert_fires(
        "30 2 * * *",
        "Europe/Berlin",
        "2024-10-26T00:00:00Z",
        &[
            "2024-10-26T00:30:00Z",
            "2024-10-27T00:30:00Z",
            "2024-10-28T01:30:00Z",
        ],
    );
}

#[test]
fn berlin_sub_hourly_schedules_keep_real_time_intervals_through_both_changes() {
    assert_fires(
        "*/15 * * * *",
        "Europe/Berlin",
        "2024-03-31T00:30:00Z",
        &[
            "2024-03-31T00:45:00Z",
            "2024-03-31T01:00:00Z",
            "2024-03-31T01:15:00Z",
        ],
    );
    assert_fires(
        "*/15 * * * *",
        "Europe/Berlin",
        "2024-10-27T00:30:00Z",
        &[
            "2024-10-27T00:45:00Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T01:15:00Z",
            "2024-10-27T01:30:00Z",
            "2024-10-27T01:45:00Z",
            "2024-10-27T02:00:00Z",
        ],
    );
    assert_fires(
        "@hourly",
        "Europe/Berlin",
        "2024-10-26T23:30:00Z",
        &[
            "2024-10-27T00:00:00Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T02:00:00Z",
        ],
    );
}

#[test]
fn wildcard_times_inside_a_gap_do_not_exist_and_are_skipped() {
    assert_fires(
        "*/30 2 * * *",
        "Europe/Berlin",
        "2024-03-30T12:00:00Z",
        &["2024-04-01T00:00:00Z"],
    );
}

#[test]
fn new_york_fixed_time_across_both_changes() {
    // 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    assert_fires(
        "30 2 * * *",
        "America/New_York",
        "2024-03-09T00:00:00Z",
        &[
            "2024-03-09T07:30:00Z",
            "2024-03-10T07:00:00Z",
            "2024-03-11T06:30:00Z",
        ],
    );
    // 2024-11-03: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:00–01:59 happens twice.
    assert_fires(
        "30 1 * * *",
        "America/New_York",
        "2024-11-02T00:00:00Z",
        &[
            "2024-11-02T05:30:00Z",
            "2024-11-03T05:30:00Z",
            "2024-11-04T06:30:00Z",
        ],
    );
}

#[test]
fn new_york_sub_hourly_across_both_changes() {
    assert_fires(
        "*/20 * * * *",
        "America/New_York",
        "2024-03-10T06:30:00Z",
        &[
            "2024-03-10T06:40:00Z",
            "2024-03-10T07:00:00Z",
            "2024-03-10T07:20:00Z",
        ],
    );
    assert_fires(
        "*/20 * * * *",
        "America/New_York",
        "2024-11-03T05:30:00Z",
        &[
            "2024-11-03T05:40:00Z",
            "2024-11-03T06:00:00Z",
            "2024-11-03T06:20:00Z",
            "2024-11-03T06:40:00Z",
            "2024-11-03T07:00:00Z",
        ],
    );
}

#[test]
fn latest_at_or_before_mirrors_next_after_across_a_fall_back() {
    let berlin = zone("Europe/Berlin");
    let quarter = Schedule::parse("*/15 * * * *", berlin).expect("valid");
    // 02:20 CET, in the second pass through 02:xx.
    assert_eq!(
        quarter.latest_at_or_before(utc("2024-10-27T01:20:00Z")),
        Some(utc("2024-10-27T01:15:00Z"))
    );
    let fixed = Schedule::parse("50 2 * * *", berlin).expect("valid");
    // At 02:10 CET the 02:50 CEST of the first pass (00:50 UTC) is the latest fire.
    assert_eq!(
        fixed.latest_at_or_before(utc("2024-10-27T01:10:00Z")),
        Some(utc("2024-10-27T00:50:00Z"))
    );
    // The skipped 02:30 fired at 03:00 CEST on the spring-forward day.
    let spring = Schedule::parse("30 2 * * *", berlin).expect("valid");
    assert_eq!(
        spring.latest_at_or_before(utc("2024-03-31T05:00:00Z")),
        Some(utc("2024-03-31T01:00:00Z"))
    );
}

#[test]
fn walking_a_year_forward_and_backward_gives_the_same_fires() {
    for (expr, zone_name) in [
        ("*/30 * * * *", "Europe/Berlin"),
        ("30 2 * * *", "Europe/Berlin"),
        ("0 1-3 * * *", "America/New_York"),
        ("*/20 1 * * *", "America/New_York"),
        ("0 30 1,2 * * *", "Australia/Lord_Howe"),
    ] {
        let schedule = Schedule::parse(expr, zone(zone_name)).expect("valid");
        let start = utc("2024-01-01T00:00:00Z");
        let end = utc("2025-01-01T00:00:00Z");
        let mut forward = Vec::new();
        let mut at = start;
        while let Some(next) = schedule.next_after(at).filter(|n| *n < end) {
            assert!(next > at, "{expr}: fires must strictly increase");
            forward.push(next);
            at = next;
        }
        let mut backward = Vec::new();
        let mut at = end - TimeDelta::seconds(1);
        while let Some(prev) = schedule.latest_at_or_before(at).filter(|p| *p > start) {
            backward.push(prev);
            at = prev - TimeDelta::seconds(1);
        }
        backward.reverse();
        assert_eq!(forward, backward, "{expr} in {zone_name}");
    }
}

// === Timer ===

/// A wall clock that moves with tokio's paused clock and can also be stepped, as a suspend or NTP would.
/// It reports its steps only if made [`SteppableClock::reporting`] (as the system clock does), and counts
/// its reads.
#[derive(Debug)]
struct SteppableClock {
    base: PausedClock,
    step: Mutex<TimeDelta>,
    reports: Option<tokio::sync::watch::Sender<u64>>,
    reads: std::sync::atomic::AtomicUsize,
}

impl SteppableClock {
    fn starting_at(wall: &str) -> Arc<SteppableClock> {
        SteppableClock::new(wall, None)
    }

    /// A clock whose steps are reported through [`WallClock::steps`].
    fn reporting(wall: &str) -> Arc<SteppableClock> {
        SteppableClock::new(wall, Some(tokio::sync::watch::channel(0).0))
    }

    fn new(wall: &str, reports: Option<tokio::sync::watch::Sender<u64>>) -> Arc<SteppableClock> {
        Arc::new(SteppableClock {
            base: PausedClock::starting_at(utc(wall)),
            step: Mutex::new(TimeDelta::zero()),
            reports,
            reads: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn step(&self, by: TimeDelta) {
        let mut step = self.step.lock().expect("clock lock");
        *step += by;
        if let Some(reports) = &self.reports {
            reports.send_modify(|count| *count += 1);
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl WallClock for SteppableClock {
    fn now(&self) -> DateTime<Utc> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.base.now() + *self.step.lock().expect("clock lock")
    }

    fn steps(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.reports
            .as_ref()
            .map(tokio::sync::watch::Sender::subscribe)
    }
}

fn timer(expr: &str, deadline: Option<Duration>, clock: &Arc<SteppableClock>) -> Timer {
    let schedule = Schedule::parse(expr, Tz::UTC).expect("valid");
    let shared: SharedClock = clock.clone();
    Timer::new(schedule, deadline, shared)
}

async fn tick(timer: &mut Timer) -> Tick {
    timer
        .next_tick()
        .await
        .expect("the schedule has a future fire")
}

#[tokio::test(start_paused = true)]
async fn ticks_follow_the_schedule_without_drift() {
    let clock = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut timer = timer("* * * * *", None, &clock);
    assert_eq!(timer.next_fire(), Some(utc("2024-05-01T10:01:00Z")));
    let first = utc("2024-05-01T10:01:00Z");
    for i in 0..600 {
        let expected = first + TimeDelta::minutes(i);
        match tick(&mut timer).await {
            Tick::Fire {
                scheduled,
                lateness,
            } => {
                assert_eq!(scheduled, expected);
                assert!(lateness <= ON_TIME_TOLERANCE, "tick {i} late: {lateness:?}");
                assert!(clock.now() >= scheduled, "never before the slot");
            }
            missed => panic!("tick {i}: {missed:?}"),
        }
        assert_eq!(timer.next_fire(), Some(expected + TimeDelta::minutes(1)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_clock_stepped_back_never_fires_a_slot_twice() {
    let clock = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut timer = timer("* * * * *", None, &clock);
    assert_eq!(
        tick(&mut timer).await.scheduled(),
        utc("2024-05-01T10:01:00Z")
    );
    clock.step(-TimeDelta::minutes(5));
    let next = tick(&mut timer).await;
    assert!(matches!(next, Tick::Fire { .. }), "{next:?}");
    assert_eq!(next.scheduled(), utc("2024-05-01T10:02:00Z"));
    assert!(
        clock.now() >= next.scheduled(),
        "woken early by the step, the timer slept again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stall_fires_once_for_the_latest_slot_within_the_starting_deadline() {
    let clock = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut timer = timer("*/5 * * * *", Some(Duration::from_secs(600)), &clock);
    assert_eq!(
        tick(&mut timer).await.scheduled(),
        utc("2024-05-01T10:05:00Z")
    );
    // While the timer sleeps towards 10:10, the host is suspended for an hour.
    let stepper = async {
        tokio::time::sleep(Duration::from_secs(45)).await;
        clock.step(TimeDelta::hours(1));
    };
    let (after_stall, ()) = tokio::join!(tick(&mut timer), stepper);
    match after_stall {
        Tick::Fire {
            scheduled,
            lateness,
        } => {
            assert_eq!(
                scheduled,
                utc("2024-05-01T11:05:00Z"),
                "only the latest slot"
            );
            assert!(lateness > ON_TIME_TOLERANCE && lateness <= Duration::from_secs(600));
        }
        missed => panic!("within the starting deadline: {missed:?}"),
    }
    let next = tick(&mut timer).await;
    assert_eq!(next.scheduled(), utc("2024-05-01T11:10:00Z"));
    assert!(matches!(next, Tick::Fire { lateness, .. } if lateness <= ON_TIME_TOLERANCE));
}

#[tokio::test(start_paused = true)]
async fn with_a_clock_that_reports_steps_the_timer_sleeps_until_the_slot_in_one_piece() {
    let quiet = SteppableClock::reporting("2024-05-01T10:00:30Z");
    let mut hourly = timer("0 * * * *", None, &quiet);
    let before = quiet.reads();
    let first = tick(&mut hourly).await;
    assert_eq!(first.scheduled(), utc("2024-05-01T11:00:00Z"));
    assert!(matches!(first, Tick::Fire { lateness, .. } if lateness <= ON_TIME_TOLERANCE));
    // A read to plan the sleep, one at its end, and the precise approach's: not one every 30 s (119).
    let reads = quiet.reads() - before;
    assert!(reads <= 6, "the clock was read {reads} times for one slot");

    let chunked = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut hourly = timer("0 * * * *", None, &chunked);
    let before = chunked.reads();
    tick(&mut hourly).await;
    assert!(
        chunked.reads() - before > 100,
        "without steps reported, the clock is read every 30 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reported_step_wakes_the_timer_at_once() {
    let clock = SteppableClock::reporting("2024-05-01T10:00:30Z");
    let mut timer = timer("*/5 * * * *", Some(Duration::from_secs(600)), &clock);
    assert_eq!(
        tick(&mut timer).await.scheduled(),
        utc("2024-05-01T10:05:00Z")
    );
    // While the timer sleeps towards 10:10, the host is suspended for an hour; resuming reports a step.
    let started = tokio::time::Instant::now();
    let stepper = async {
        tokio::time::sleep(Duration::from_secs(45)).await;
        clock.step(TimeDelta::hours(1));
    };
    let (after_stall, ()) = tokio::join!(tick(&mut timer), stepper);
    assert_eq!(after_stall.scheduled(), utc("2024-05-01T11:05:00Z"));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(45),
        "woken by the step, not by a periodic re-read (at 60 s)"
    );
    // A step back is reported too, and no slot runs twice.
    clock.step(-TimeDelta::minutes(30));
    let next = tick(&mut timer).await;
    assert_eq!(next.scheduled(), utc("2024-05-01T11:10:00Z"));
    assert!(clock.now() >= next.scheduled());
}

#[tokio::test(start_paused = true)]
async fn a_stall_past_the_starting_deadline_is_one_missed_tick() {
    let clock = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut timer = timer("0 * * * *", Some(Duration::from_secs(120)), &clock);
    clock.step(TimeDelta::minutes(210)); // now 13:30:30; 11:00, 12:00 and 13:00 have passed
    match tick(&mut timer).await {
        Tick::Missed {
            scheduled,
            lateness,
        } => {
            assert_eq!(scheduled, utc("2024-05-01T13:00:00Z"));
            assert!(lateness > Duration::from_secs(120));
        }
        fire => panic!("past the starting deadline: {fire:?}"),
    }
    let next = tick(&mut timer).await;
    assert!(matches!(next, Tick::Fire { .. }), "{next:?}");
    assert_eq!(next.scheduled(), utc("2024-05-01T14:00:00Z"));
}

#[tokio::test(start_paused = true)]
async fn without_a_starting_deadline_a_late_slot_is_missed() {
    let clock = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut timer = timer("*/5 * * * *", None, &clock);
    clock.step(TimeDelta::minutes(7)); // now 10:07:30, 10:05 is 2m30s late
    let late = tick(&mut timer).await;
    assert!(
        matches!(late, Tick::Missed { scheduled, .. } if scheduled == utc("2024-05-01T10:05:00Z")),
        "{late:?}"
    );
    let next = tick(&mut timer).await;
    assert!(
        matches!(next, Tick::Fire { scheduled, .. } if scheduled == utc("2024-05-01T10:10:00Z")),
        "{next:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn next_tick_is_cancel_safe() {
    let clock = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut timer = timer("* * * * *", None, &clock);
    let mut ticks = Vec::new();
    while ticks.len() < 3 {
        tokio::select! {
            tick = timer.next_tick() => ticks.push(tick.expect("future fire").scheduled()),
            () = tokio::time::sleep(Duration::from_secs(7)) => {}
        }
    }
    assert_eq!(
        ticks,
        [
            utc("2024-05-01T10:01:00Z"),
            utc("2024-05-01T10:02:00Z"),
            utc("2024-05-01T10:03:00Z")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_timer_follows_dst_on_tokio_time() {
    let berlin = zone("Europe/Berlin");
    let clock: SharedClock = Arc::new(PausedClock::starting_at(utc("2024-03-30T12:00:00Z")));
    let schedule = Schedule::parse("30 2 * * *", berlin).expect("valid");
    let mut timer = Timer::new(schedule, None, clock);
    let mut fires = Vec::new();
    for _ in 0..2 {
        let t = timer.next_tick().await.expect("future fire");
        assert!(matches!(t, Tick::Fire { .. }), "{t:?}");
        fires.push(t.scheduled());
    }
    assert_eq!(
        fires,
        [utc("2024-03-31T01:00:00Z"), utc("2024-04-01T00:30:00Z")]
    );

    let clock: SharedClock = Arc::new(PausedClock::starting_at(utc("2024-10-26T21:59:00Z")));
    let schedule = Schedule::parse("*/30 * * * *", berlin).expect("valid");
    let mut timer = Timer::new(schedule, None, clock);
    let mut count = 0;
    // From local 00:00 to 23:30 on the fall-back day: 48 wall times, 02:00 and 02:30 twice.
    while timer.next_fire() <= Some(utc("2024-10-27T22:30:00Z")) {
        timer.next_tick().await.expect("future fire");
        count += 1;
    }
    assert_eq!(count, 50);
}

#[tokio::test(start_paused = true)]
async fn a_schedule_without_future_fires_yields_none() {
    let clock: SharedClock = Arc::new(PausedClock::starting_at(utc("5001-01-01T00:00:00Z")));
    let schedule = Schedule::parse("@yearly", Tz::UTC).expect("valid");
    let mut timer = Timer::new(schedule, None, clock);
    assert_eq!(timer.next_fire(), None);
    assert_eq!(timer.next_tick().await, None);
}

// === jitter: a timer with an offset ===

#[tokio::test(start_paused = true)]
async fn an_offset_timer_fires_each_slot_at_slot_plus_offset_with_the_nominal_slot() {
    let offset = Duration::from_millis(3_250);
    let clock = SteppableClock::starting_at("2024-05-01T10:00:05Z");
    let mut timer = timer("*/10 * * * * *", None, &clock).with_offset(offset);
    assert_eq!(timer.offset(), offset);
    assert_eq!(
        timer.next_fire(),
        Some(utc("2024-05-01T10:00:10Z")),
        "nominal"
    );
    let begun = tokio::time::Instant::now();
    for i in 0..30 {
        let slot = utc("2024-05-01T10:00:10Z") + TimeDelta::seconds(10 * i);
        match tick(&mut timer).await {
            Tick::Fire {
                scheduled,
                lateness,
            } => {
                assert_eq!(scheduled, slot, "the tick carries the nominal slot");
                let fires_at = slot + TimeDelta::milliseconds(3_250);
                assert!(
                    clock.now() >= fires_at,
                    "tick {i}: not before slot + offset"
                );
                assert!(
                    clock.now() - fires_at <= TimeDelta::milliseconds(5),
                    "tick {i}: at slot + offset, not later ({})",
                    clock.now()
                );
                assert!(
                    lateness <= Duration::from_millis(5),
                    "lateness from the fire time: {lateness:?}"
                );
            }
            missed => panic!("tick {i}: {missed:?}"),
        }
    }
    // 5 s to the first slot, its offset, then 29 intervals: the offset does not accumulate.
    let elapsed = begun.elapsed();
    assert!(
        elapsed >= Duration::from_millis(5_000 + 3_250 + 290_000)
            && elapsed <= Duration::from_millis(5_000 + 3_250 + 290_000 + 50),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_offset_timer_started_between_a_slot_and_its_fire_time_still_fires_that_slot() {
    // 10:00:10 has passed, but it fires at 10:00:13.25: it is still ahead.
    let clock = SteppableClock::starting_at("2024-05-01T10:00:12Z");
    let mut timer = timer("*/10 * * * * *", None, &clock).with_offset(Duration::from_millis(3_250));
    assert_eq!(timer.next_fire(), Some(utc("2024-05-01T10:00:10Z")));
    let first = tick(&mut timer).await;
    assert!(
        matches!(first, Tick::Fire { scheduled, .. } if scheduled == utc("2024-05-01T10:00:10Z")),
        "{first:?}"
    );
    assert!(clock.now() >= utc("2024-05-01T10:00:13.250Z"));
}

#[tokio::test(start_paused = true)]
async fn the_on_time_tolerance_and_the_starting_deadline_count_from_the_fire_time() {
    // An offset of 50 s: every fire is 50 s after its slot, more than the 1 s tolerance and the 10 s
    // deadline, and still on time. At 10:00:30, 10:00 has not fired yet (10:00:50).
    let offset = Duration::from_secs(50);
    let clock = SteppableClock::starting_at("2024-05-01T10:00:30Z");
    let mut timer = timer("* * * * *", Some(Duration::from_secs(10)), &clock).with_offset(offset);
    for minute in 0..3 {
        let next = tick(&mut timer).await;
        let slot = utc("2024-05-01T10:00:00Z") + TimeDelta::minutes(minute);
        assert!(
            matches!(next, Tick::Fire { scheduled, lateness } if scheduled == slot && lateness <= ON_TIME_TOLERANCE),
            "{next:?}"
        );
    }
    // Now 10:02:50. A stall: the wall clock jumps past 10:03:50, the fire time of 10:03, while the timer
    // sleeps towards it: 5 s after its fire time (65 s after its slot), within the deadline.
    let stepper = async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        clock.step(TimeDelta::seconds(35)); // now 10:03:55
    };
    let (late, ()) = tokio::join!(tick(&mut timer), stepper);
    match late {
        Tick::Fire {
            scheduled,
            lateness,
        } => {
            assert_eq!(scheduled, utc("2024-05-01T10:03:00Z"));
            assert!(
                lateness > Duration::from_secs(4) && lateness < Duration::from_secs(6),
                "{lateness:?}"
            );
        }
        missed => panic!("5 s after its fire time, within the 10 s deadline: {missed:?}"),
    }
    // 10:04 fires at 10:04:50; jump to 10:05:10, 20 s after that: past the deadline. 10:05 (10:05:50) is
    // still ahead, so the missed tick is for 10:04.
    clock.step(TimeDelta::seconds(75));
    match tick(&mut timer).await {
        Tick::Missed {
            scheduled,
            lateness,
        } => {
            assert_eq!(scheduled, utc("2024-05-01T10:04:00Z"));
            assert!(
                lateness >= Duration::from_secs(20) && lateness < Duration::from_secs(21),
                "{lateness:?}"
            );
        }
        fire => panic!("20 s after its fire time: {fire:?}"),
    }
    let next = tick(&mut timer).await;
    assert!(
        matches!(next, Tick::Fire { scheduled, .. } if scheduled == utc("2024-05-01T10:05:00Z")),
        "{next:?}"
    );
    assert!(clock.now() >= utc("2024-05-01T10:05:50Z"));
}

#[test]
fn the_shortest_gap_is_found_among_the_next_slots() {
    let at = utc("2024-05-01T10:00:30Z");
    let two_a_day = Schedule::parse("0 0,1 * * *", Tz::UTC).expect("valid");
    let (gap, from, to) = two_a_day.shortest_gap(at, 8).expect("slots follow");
    assert_eq!(gap, Duration::from_secs(3600));
    assert_eq!(
        (from, to),
        (utc("2024-05-02T00:00:00Z"), utc("2024-05-02T01:00:00Z"))
    );
    let month_ends = Schedule::parse("0 0 1,31 * *", Tz::UTC).expect("valid");
    let (gap, from, _) = month_ends.shortest_gap(at, 8).expect("slots follow");
    assert_eq!(
        (gap, from),
        (Duration::from_secs(86_400), utc("2024-05-31T00:00:00Z"))
    );
    // A fixed time that a DST change moves: 02:30 Berlin fires at 03:00 CEST on 31 March 2024, 23.5 h
    // after the day before.
    let berlin = Schedule::parse("30 2 * * *", zone("Europe/Berlin")).expect("valid");
    let (gap, _, to) = berlin
        .shortest_gap(utc("2024-03-25T00:00:00Z"), 10)
        .expect("slots follow");
    assert_eq!(
        (gap, to),
        (Duration::from_secs(84_600), utc("2024-03-31T01:00:00Z"))
    );
    assert_eq!(two_a_day.shortest_gap(at, 1), None, "one slot has no gap");
}

#[test]
fn schedule_errors_are_a_public_enum() {
    let err = Schedule::parse("0 0 1 1 * 2030 *", Tz::UTC).unwrap_err();
    assert_eq!(err, schedule::Error::FieldCount(7));
}
