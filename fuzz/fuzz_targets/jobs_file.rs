//! Arbitrary bytes into what `leasecron validate` does with a file (`config::parse_source`, which reads
//! a jobs file or a manifest), under four grace bounds, and into `config::parse_str`.
//!
//! Beyond no panic and no hang: every diagnostic is inside the text and printable; a plain jobs file
//! reads the same through both entry points; a wider grace bound accepts whatever a narrower one did,
//! as the same jobs; the schedules of accepted jobs give consistent fires.

#![no_main]

use chrono::DateTime;
use leasecron::config::{self, JobSet, Source, DEFAULT_CONFIG_MAP_KEY};
use leasecron_fuzz::{check_fires, check_jobs, check_source, load_options, ORIGIN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `leasecron validate` reads the file as UTF-8 and refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut accepted: Option<JobSet> = None;
    for opts in load_options() {
        let source = config::parse_source(text, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts);
        check_source(text, &source);
        let plain = config::parse_str(text, ORIGIN, &opts);
        check_jobs(text, &plain);
        if let Ok(Source::JobsFile(jobs)) = &source {
            assert_eq!(
                plain.as_ref().ok(),
                Some(jobs),
                "parse_source and parse_str differ"
            );
        }
        if let Some(narrower) = &accepted {
            assert_eq!(
                plain.as_ref().ok(),
                Some(narrower),
                "a wider grace bound refused"
            );
        }
        accepted = plain.ok();
    }
    // 2024-03-31T00:30:00Z: half an hour before Europe's spring-forward.
    let t = DateTime::from_timestamp(1_711_845_000, 0).expect("a valid instant");
    for job in accepted.iter().flat_map(|set| &set.jobs) {
        check_fires(&job.schedule, t, 3);
    }
});
