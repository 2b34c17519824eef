//! A process's stdout and stderr, streamed line by line into `tracing`.
//!
//! Lines are bounded by [`MAX_LINE_BYTES`]. A longer line is **split**, not truncated: nothing a job prints
//! is lost, and every piece but the last carries `partial = true` so a reader can join them again. A split
//! never cuts a UTF-8 sequence in half. Bytes that are not UTF-8 are logged lossily (U+FFFD) and never stop
//! the stream. A trailing `\r` is dropped, so CRLF output reads like LF output.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

/// The longest line logged as one event; longer lines are split into pieces of at most this size.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Size of one read from a pipe.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// One line (or piece of an over-long line) of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// The text, lossily decoded.
    pub(crate) text: String,
    /// True if the line continues in the next piece.
    pub(crate) partial: bool,
}

/// Cuts a byte stream into bounded lines.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

/// Where the lines of one attempt go: the fields every output event carries.
#[derive(Debug, Clone)]
pub(crate) struct OutputContext {
    pub(crate) job: String,
    pub(crate) run_id: u64,
    pub(crate) fencing_token: u64,
    pub(crate) attempt: u32,
    pub(crate) pid: u32,
}

/// The tasks pumping one process's pipes.
#[derive(Debug)]
pub(crate) struct Pumps {
    handles: Vec<JoinHandle<()>>,
}

// === impl Stream ===

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

// === impl LineSplitter ===

impl LineSplitter {
    /// A splitter emitting pieces of at most `max` bytes (at least 4, so any UTF-8 character fits).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            max: max.max(4),
        }
    }

    /// Feeds bytes; calls `emit` for every complete line or full piece.
    pub(crate) fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Line)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.append(&bytes[..newline], emit);
                    self.emit_pending(emit);
                    bytes = &bytes[newline + 1..];
                }
                None => {
                    self.append(bytes, emit);
                    bytes = &[];
                }
            }
        }
    }

    /// Flushes a last line that had no newline.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(Line)) {
        if !self.pending.is_empty() {
            self.emit_pending(emit);
        }
    }

    fn append(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Line)) {
        while !bytes.is_empty() {
            let room = self.max - self.pending.len();
            let take = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == self.max && !bytes.is_empty() {
                self.emit_piece(emit);
            }
        }
    }

    /// Emits a full buffer as a partial line, keeping an incomplete trailing UTF-8 sequence for the next.
    fn emit_piece(&mut self, emit: &mut impl FnMut(Line)) {
        let cut = utf8_safe_cut(&self.pending);
        let rest = self.pending.split_off(cut);
        emit(Line {
            text: String::from_utf8_lossy(&self.pending).into_owned(),
            partial: true,
        });
        self.pending = rest;
    }

    fn emit_pending(&mut self, emit: &mut impl FnMut(Line)) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        emit(Line {
            text: String::from_utf8_lossy(&self.pending).into_owned(),
            partial: false,
        });
        self.pending.clear();
    }
}

/// Where to cut `bytes` so that a UTF-8 sequence begun in its last three bytes is not split.
fn utf8_safe_cut(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let at = bytes.len() - back;
        let needed = match bytes[at] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            0x80..=0xBF => continue,
            _ => return bytes.len(),
        };
        return if needed > back && at > 0 {
            at
        } else {
            bytes.len()
        };
    }
    bytes.len()
}

// === impl Pumps ===

impl Pumps {
    /// Starts one task per pipe.
    pub(crate) fn start(
        stdout: Option<impl AsyncRead + Unpin + Send + 'static>,
        stderr: Option<impl AsyncRead + Unpin + Send + 'static>,
        ctx: OutputContext,
    ) -> Self {
        let mut handles = Vec::with_capacity(2);
        if let Some(out) = stdout {
            handles.push(tokio::spawn(pump(out, Stream::Stdout, ctx.clone())));
        }
        if let Some(err) = stderr {
            handles.push(tokio::spawn(pump(err, Stream::Stderr, ctx)));
        }
        Self { handles }
    }

    /// Waits until both pipes are drained, at most `limit`; then gives up on them. Returns false if it gave
    /// up (something outside the process group still holds a pipe open).
    pub(crate) async fn drain(mut self, limit: Duration) -> bool {
        let all = async {
            for handle in &mut self.handles {
                // A pump task only ends by finishing its pipe; a join error (panic) has nothing left to drain.
                let _ = handle.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_ok() {
            return true;
        }
        for handle in &self.handles {
            handle.abort();
        }
        false
    }
}

async fn pump(mut pipe: impl AsyncRead + Unpin, stream: Stream, ctx: OutputContext) {
    let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
    let mut emit = |line: Line| log_line(&ctx, stream, &line);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => splitter.push(&buf[..n], &mut emit),
            Err(error) => {
                tracing::warn!(job = %ctx.job, run_id = ctx.run_id, stream = stream.name(), %error, "reading job output failed");
                break;
            }
        }
    }
    splitter.finish(&mut emit);
}

fn log_line(ctx: &OutputContext, stream: Stream, line: &Line) {
    let (job, attempt, pid, partial) = (&ctx.job, ctx.attempt, ctx.pid, line.partial);
    let (run_id, fencing_token) = (ctx.run_id, ctx.fencing_token);
    // Both streams at INFO: what a job writes to stderr is its own business (progress, warnings of its
    // tools), not a warning of leasecron's; `stream` tells them apart, and the run's outcome says if it
    // failed.
    let stream = stream.name();
    tracing::info!(job = %job, run_id, fencing_token, stream, attempt, pid, partial, "{}", line.text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        let mut emit = |line| lines.push(line);
        for chunk in chunks {
            splitter.push(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        lines
    }

    fn whole(text: &str) -> Line {
        Line {
            text: text.into(),
            partial: false,
        }
    }

    fn piece(text: &str) -> Line {
        Line {
            text: text.into(),
            partial: true,
        }
    }

    #[test]
    fn lines_are_joined_across_reads() {
        let lines = split(64, &[b"hel", b"lo\nwor", b"ld\n"]);
        assert_eq!(lines, vec![whole("hello"), whole("world")]);
    }

    #[test]
    fn a_last_line_without_newline_is_flushed() {
        assert_eq!(split(64, &[b"a\nb"]), vec![whole("a"), whole("b")]);
    }

    #[test]
    fn empty_lines_and_crlf_are_kept_as_lines() {
        let lines = split(64, &[b"\r\nx\r\n\n"]);
        assert_eq!(lines, vec![whole(""), whole("x"), whole("")]);
    }

    #[test]
    fn long_lines_are_split_into_bounded_pieces() {
        let lines = split(4, &[b"abcdefghij\nk\n"]);
        assert_eq!(
            lines,
            vec![piece("abcd"), piece("efgh"), whole("ij"), whole("k")]
        );
    }

    #[test]
    fn a_line_of_exactly_the_bound_is_one_line() {
        assert_eq!(split(4, &[b"abcd\n"]), vec![whole("abcd")]);
    }

    #[test]
    fn a_split_never_cuts_a_utf8_character() {
        // "aé" is 3 bytes; a cut at 4 would fall inside the second "é".
        let lines = split(4, &["aéé\n".as_bytes()]);
        assert_eq!(lines, vec![piece("aé"), whole("é")]);
        let total: String = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(total, "aéé");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let lines = split(64, &[b"bad \xff\xfe bytes\nafter\n"]);
        assert_eq!(
            lines,
            vec![whole("bad \u{FFFD}\u{FFFD} bytes"), whole("after")]
        );
    }

    #[test]
    fn the_safe_cut_keeps_only_incomplete_sequences_back() {
        assert_eq!(utf8_safe_cut(b"abcd"), 4);
        assert_eq!(utf8_safe_cut("abé".as_bytes()), 4);
        assert_eq!(utf8_safe_cut(&[b'a', b'b', 0xE2, 0x82]), 2);
        assert_eq!(utf8_safe_cut(&[b'a', 0xF0, 0x9F, 0x98]), 1);
        assert_eq!(utf8_safe_cut(&[0xFF, 0xFF, 0xFF, 0xFF]), 4);
    }
}
