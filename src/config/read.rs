//! Reading a jobs file: bounded in size, from a path or from standard input (`-`), and required to be UTF-8.
//!
//! The bound keeps a wrong path (`/dev/zero`, a log file, a disk image) from growing leasecron's memory
//! until the machine gives out: nothing past `max_size` + 1 bytes is ever read.

use std::io::{self, Read};
use std::path::Path;

use super::{Diagnostic, Diagnostics, Error};

/// The path that names standard input.
pub const STDIN_PATH: &str = "-";
/// How standard input is named in messages.
pub const STDIN_ORIGIN: &str = "<stdin>";

/// How `path` is named in messages: its path, or `<stdin>` for `-`.
pub fn origin_of(path: &Path) -> String {
    if path == Path::new(STDIN_PATH) {
        STDIN_ORIGIN.to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads the jobs file at `path` (`-`: standard input) as text, refusing more than `max_size` bytes and
/// text that is not UTF-8 (a diagnostic at the first bad byte).
pub fn read_text(path: &Path, max_size: u64) -> Result<String, Error> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = if path == Path::new(STDIN_PATH) {
        read_at_most(io::stdin().lock(), max_size).map_err(read_error)?
    } else {
        let file = std::fs::File::open(path).map_err(read_error)?;
        read_at_most(file, max_size).map_err(read_error)?
    };
    let origin = origin_of(path);
    if u64::try_from(bytes.len()).map_or(true, |len| len > max_size) {
        return Err(Error::TooLarge {
            origin,
            limit: max_size,
        });
    }
    utf8(bytes, &origin)
}

/// Up to `max_size` + 1 bytes of `reader`: one more than allowed says that there is more.
fn read_at_most(reader: impl Read, max_size: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(max_size.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `bytes` as text, or a diagnostic at the line and column of the first byte that is not UTF-8.
pub(super) fn utf8(bytes: Vec<u8>, origin: &str) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|error| {
        let (line, column, byte) = not_utf8_at(error.as_bytes(), error.utf8_error().valid_up_to());
        Error::Invalid(Diagnostics(vec![Diagnostic {
            origin: origin.to_owned(),
            line,
            column,
            job: None,
            message: format!(
                "the file is not valid UTF-8 (byte 0x{byte:02X} here): save it as UTF-8 \
                 (e.g. `iconv -f LATIN1 -t UTF-8`)"
            ),
        }]))
    })
}

/// 1-based line and column (in characters) of byte `at` of `bytes`, whose first `at` bytes are UTF-8, and
/// the byte there.
fn not_utf8_at(bytes: &[u8], at: usize) -> (usize, usize, u8) {
    let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
    let line = valid.matches('\n').count() + 1;
    let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
    let column = valid[line_start..].chars().count() + 1;
    (line, column, bytes.get(at).copied().unwrap_or_default())
}

/// `limit` bytes for messages: `1 MiB`, `512 KiB`, `1000 bytes`.
pub fn format_size(limit: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    match limit {
        n if n >= GIB && n % GIB == 0 => format!("{} GiB", n / GIB),
        n if n >= MIB && n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

/// Parses a size as `--max-file-size` takes it: bytes, or a number with `KiB`, `MiB` or `GiB` (also `K`,
/// `M`, `G`, `KB`, `MB`, `GB`, all powers of 1024, any case). Zero is refused.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let invalid = || format!("invalid size `{text}`: write e.g. 1MiB, 512KiB or 2000000 (bytes)");
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    match number.checked_mul(scale) {
        Some(0) => Err(format!("size `{text}` must be greater than zero")),
        Some(size) => Ok(size),
        None => Err(format!("size `{text}` is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.yaml");
        std::fs::write(&path, "jobs: []\n").expect("write");
        assert_eq!(read_text(&path, 9).expect("fits"), "jobs: []\n");
        let err = read_text(&path, 8).expect_err("one byte too many");
        assert!(matches!(&err, Error::TooLarge { limit: 8, .. }), "{err:?}");
        // An endless file stops at the limit.
        let err = read_text(Path::new("/dev/zero"), 1024).expect_err("endless");
        assert_eq!(
            err.to_string(),
            "/dev/zero: the file is larger than 1 KiB, the most leasecron reads as a jobs file: check \
             the path, or raise the limit with --max-file-size"
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_placed_at_its_first_bad_byte() {
        let err = utf8(b"jobs:\n  - name: \xc3\xa9\xff\n".to_vec(), "jobs.yaml").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "jobs.yaml:2:12: the file is not valid UTF-8 (byte 0xFF here): save it as UTF-8 \
             (e.g. `iconv -f LATIN1 -t UTF-8`)"
        );
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size(" 512 KiB "), Ok(512 << 10));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("2000000"), Ok(2_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(1500), "1500 bytes");
    }
}
