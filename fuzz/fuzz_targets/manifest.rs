//! Arbitrary bytes into the manifest path of `leasecron validate`: as a `---` separated stream of
//! Kubernetes objects (with the default `data` key and another), and as the jobs file embedded in a
//! ConfigMap, double-quoted and as a block literal.
//!
//! Beyond no panic and no hang: every diagnostic of the manifest is inside it; embedded, the text gives
//! the same jobs or the same problems as on its own: at the same positions of the embedded text when
//! quoted, moved into the manifest by the literal's lines and indentation (at most one past the end of
//! a line) when it is a block literal that reads back as written.

#![no_main]

use leasecron::config::{self, Diagnostic, LoadOptions, Source, DEFAULT_CONFIG_MAP_KEY};
use leasecron_fuzz::{
    check_jobs, check_source, config_map_literal, config_map_quoted, embeds_as_written, problems,
    shift_quoted_positions, yaml_lines, ORIGIN,
};
use libfuzzer_sys::fuzz_target;

fn embedded_jobs(source: Source) -> config::JobSet {
    match source {
        Source::Manifest {
            mut config_maps, ..
        } => {
            assert_eq!(config_maps.len(), 1);
            config_maps.remove(0).jobs
        }
        Source::JobsFile(_) => panic!("a ConfigMap read as a jobs file"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = LoadOptions::default();
    for key in [DEFAULT_CONFIG_MAP_KEY, "crontab.yaml"] {
        check_source(text, &config::parse_source(text, ORIGIN, key, &opts));
    }

    let plain = config::parse_str(text, ORIGIN, &opts);
    check_jobs(text, &plain);
    let expected = problems(&plain);

    let quoted = config_map_quoted(text, DEFAULT_CONFIG_MAP_KEY);
    let source = config::parse_source(&quoted, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts);
    check_source(&quoted, &source);
    match (&plain, source) {
        (Ok(jobs), Ok(source)) => assert_eq!(&embedded_jobs(source), jobs),
        (Err(_), found @ Err(_)) => {
            let moved: Vec<Diagnostic> = expected
                .iter()
                .map(|d| Diagnostic {
                    origin: format!("{ORIGIN} (data.jobs.yaml)"),
                    ..d.clone()
                })
                .collect();
            assert_eq!(problems(&found), moved, "quoted");
        }
        (plain, embedded) => panic!("{plain:?}\nbut quoted: {embedded:?}"),
    }

    if embeds_as_written(text) {
        let indent = 4;
        let (literal, above) = config_map_literal(text, DEFAULT_CONFIG_MAP_KEY, indent);
        let source = config::parse_source(&literal, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts);
        check_source(&literal, &source);
        let lines = yaml_lines(&literal);
        match (&plain, source) {
            (Ok(jobs), Ok(source)) => assert_eq!(&embedded_jobs(source), jobs),
            (Err(_), found @ Err(_)) => {
                let moved: Vec<Diagnostic> = expected
                    .iter()
                    .map(|d| Diagnostic {
                        line: d.line + above,
                        column: (d.column + indent)
                            .min(lines[d.line + above - 1].chars().count() + 1),
                        message: shift_quoted_positions(&d.message, above, indent),
                        ..d.clone()
                    })
                    .collect();
                assert_eq!(problems(&found), moved, "literal");
            }
            (plain, embedded) => panic!("{plain:?}\nbut as a literal: {embedded:?}"),
        }
    }
});
