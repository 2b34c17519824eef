//! The log's way to stderr: a write never panics and never stalls the replica.
//!
//! `tracing-subscriber`'s `fmt` layer formats each event and writes it with one `write_all` to a writer its
//! `MakeWriter` hands out. Handing it `std::io::stderr` goes wrong in two ways when the reader of stderr
//! misbehaves:
//!
//! - **The reader is gone** (`leasecron run … 2>&1 | head`, a log shipper restarting): the write fails with
//!   `EPIPE` (Rust ignores SIGPIPE, so the process is not killed), and the layer reports the failure with
//!   `eprintln!`, which panics on the same broken pipe. Every log statement then panics in the task that
//!   made it: runs end unrecorded and the shutdown task dies, while the elector keeps renewing.
//! - **The reader is stopped** (the pipe is full): the write blocks the thread that logs, a tokio worker.
//!   With every worker blocked nothing renews, and the term's deadline timer cannot fire either, so the
//!   runs of a leader that loses its lease would not be ended.
//!
//! So events are not written where they are logged. The [`QueueWriter`] (the `MakeWriter`) buffers each
//! event and hands it to a bounded [`LogQueue`] without waiting; one thread of its own (`leasecron-log`)
//! writes the queue to file descriptor 2. A failed write (`EPIPE`, `EBADF`, `EIO`, …) drops that event and
//! counts it ([`LogQueue::write_errors`]); an event that finds the queue full ([`QUEUE_BYTES`]: the writer
//! is blocked on a stopped reader) is dropped and counted too ([`LogQueue::dropped`]). The process-wide
//! queue is [`STDERR`]; its counters are exported as `leasecron_log_write_errors_total` and
//! `leasecron_log_lines_dropped_total`. Before the process exits, [`flush`] waits, within a bound, for
//! what is queued to be written.
//!
//! Writes go to the descriptor through `write(2)` (`nix`) rather than `std::io::Stderr`, which reports a
//! closed descriptor (`EBADF`) as success: such a loss is counted too.
//!
//! What a line looks like (logfmt text or JSON, and the conventions for field values) is in [`format`](mod@format);
//! [`subscriber`] puts the two together.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

pub mod format;

pub use format::{rfc3339, seconds, subscriber, LogFormat};

/// How many bytes of formatted events may wait for the writer thread; an event that would exceed it is
/// dropped. 1 MiB is thousands of ordinary lines, or 64 of the longest job output lines (16 KiB).
pub const QUEUE_BYTES: usize = 1 << 20;
/// How long [`flush`] waits at exit for the queued events to be written: long enough for a file or a
/// live pipe, short enough that a stopped reader delays the exit only briefly.
pub const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The process-wide queue to stderr, used by [`stderr`] and [`flush`].
pub static STDERR: LogQueue = LogQueue::new(QUEUE_BYTES);

/// Errors setting the log writer up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(#[source] io::Error),
}

/// A bounded queue of formatted log events, written to a sink by one thread of its own.
#[derive(Debug)]
pub struct LogQueue {
    state: Mutex<State>,
    /// Signalled when an event is queued.
    queued: Condvar,
    /// Signalled when the writer has written everything queued.
    idle: Condvar,
    max_bytes: usize,
    events: AtomicU64,
    write_errors: AtomicU64,
    dropped: AtomicU64,
    /// True once a writer thread was started.
    started: AtomicBool,
}

#[derive(Debug)]
struct State {
    events: VecDeque<Vec<u8>>,
    bytes: usize,
    /// True while the writer thread writes an event it took off the queue.
    writing: bool,
}

/// The `MakeWriter` over a [`LogQueue`]: each writer it makes collects one event and queues it on drop.
#[derive(Debug, Clone, Copy)]
pub struct QueueWriter {
    queue: &'static LogQueue,
}

/// The writer of one event: collects what is written and queues it when dropped. Its writes never fail.
#[derive(Debug)]
pub struct EventWriter {
    queue: &'static LogQueue,
    buf: Vec<u8>,
}

/// File descriptor 2, written with `write(2)`.
#[derive(Debug, Clone, Copy)]
struct Fd2;

/// Starts the writer thread of [`STDERR`] (once) and returns the `MakeWriter` that feeds it.
pub fn stderr() -> Result<QueueWriter, Error> {
    STDERR.start(Fd2).map_err(Error::Thread)
}

/// Waits until every event queued for stderr so far is written (or failed), at most `limit`; false if
/// the limit passed first (the reader of stderr is stopped).
pub fn flush(limit: Duration) -> bool {
    STDERR.flush(limit)
}

// === impl LogQueue ===

impl LogQueue {
    /// An empty queue holding at most `max_bytes` of events (one event is always accepted into an empty
    /// queue, whatever its size).
    pub const fn new(max_bytes: usize) -> LogQueue {
        LogQueue {
            state: Mutex::new(State {
                events: VecDeque::new(),
                bytes: 0,
                writing: false,
            }),
            queued: Condvar::new(),
            idle: Condvar::new(),
            max_bytes,
            events: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }

    /// Starts the thread that writes this queue to `sink`, unless one was started already (then `sink` is
    /// dropped), and returns the `MakeWriter` that feeds the queue.
    pub fn start(
        &'static self,
        sink: impl Write + Send + 'static,
    ) -> Result<QueueWriter, io::Error> {
        if !self.started.swap(true, Ordering::AcqRel) {
            let spawned = std::thread::Builder::new()
                .name("leasecron-log".to_owned())
                .spawn(move || self.write_to(sink));
            if let Err(error) = spawned {
                self.started.store(false, Ordering::Release);
                return Err(error);
            }
        }
        Ok(QueueWriter { queue: self })
    }

    /// Events handed to the queue since the start: written, failed or dropped.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Events whose write failed, since the start.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues one event; drops and counts it if the queue is full. Never waits for the writer.
    pub fn push(&self, event: Vec<u8>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if state.bytes > 0 && state.bytes + event.len() > self.max_bytes {
            drop(state);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.bytes += event.len();
        state.events.push_back(event);
        drop(state);
        self.queued.notify_one();
    }

    /// Waits until everything queued so far is written (or failed), at most `limit`; false if the limit
    /// passed first. True at once if no writer thread was started and nothing is queued.
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while !state.events.is_empty() || state.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// The writer thread: writes each event in turn, forever (the process ends it).
    fn write_to(&self, mut sink: impl Write) {
        loop {
            let event = {
                let mut state = self.lock();
                state.writing = false;
                loop {
                    if let Some(event) = state.events.pop_front() {
                        state.bytes -= event.len();
                        state.writing = true;
                        break event;
                    }
                    self.idle.notify_all();
                    state = self
                        .queued
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            if sink.write_all(&event).and_then(|()| sink.flush()).is_err() {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl QueueWriter ===

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            queue: self.queue,
            buf: Vec::new(),
        }
    }
}

// === impl EventWriter ===

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.queue.push(std::mem::take(&mut self.buf));
        }
    }
}

// === impl Fd2 ===

impl Write for Fd2 {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        nix::unistd::write(io::stderr(), bytes).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};

    fn leaked(max_bytes: usize) -> &'static LogQueue {
        Box::leak(Box::new(LogQueue::new(max_bytes)))
    }

    /// A sink that hands what it is written to a channel, or fails every write.
    struct Channel(mpsc::Sender<Vec<u8>>);

    impl Write for Channel {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .send(bytes.to_vec())
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose writes wait until the test lets them through.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, mpsc::Sender<Vec<u8>>);

    impl Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (open, changed) = &*self.0;
            let mut open = open.lock().expect("not poisoned");
            while !*open {
                open = changed.wait(open).expect("not poisoned");
            }
            let _ = self.1.send(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log(writer: &QueueWriter, text: &str) {
        let mut event = writer.make_writer();
        event.write_all(text.as_bytes()).expect("never fails");
    }

    #[test]
    fn events_are_written_whole_and_in_order() {
        let queue = leaked(QUEUE_BYTES);
        let (tx, rx) = mpsc::channel();
        let writer = queue.start(Channel(tx)).expect("a thread");
        for i in 0..100 {
            log(&writer, &format!("line {i}\n"));
        }
        assert!(queue.flush(Duration::from_secs(30)));
        let written: Vec<String> = rx
            .try_iter()
            .map(|b| String::from_utf8(b).expect("utf-8"))
            .collect();
        let expected: Vec<String> = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, expected);
        assert_eq!((queue.write_errors(), queue.dropped()), (0, 0));
        assert_eq!(queue.events(), 100);
    }

    #[test]
    fn a_write_to_a_closed_pipe_fails_with_epipe_and_is_counted() {
        let (read, write) = nix::unistd::pipe().expect("a pipe");
        drop(read);
        let mut sink = std::fs::File::from(write);
        // Rust ignores SIGPIPE before main: the write fails instead of killing the process.
        let error = sink.write_all(b"x\n").expect_err("nobody reads");
        assert_eq!(error.raw_os_error(), Some(nix::libc::EPIPE));

        let queue = leaked(QUEUE_BYTES);
        let writer = queue.start(sink).expect("a thread");
        log(&writer, "one\n");
        log(&writer, "two\n");
        assert!(queue.flush(Duration::from_secs(30)));
        assert_eq!((queue.write_errors(), queue.dropped()), (2, 0));
    }

    #[test]
    fn a_blocked_sink_never_blocks_the_logger_and_the_overflow_is_counted() {
        let queue = leaked(64);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        let writer = queue.start(Gate(Arc::clone(&gate), tx)).expect("a thread");
        // The writer takes the first event and blocks on it; the next ones fill the 64 bytes.
        log(&writer, &"a".repeat(40));
        while !queue.lock().writing {
            std::thread::yield_now();
        }
        log(&writer, &"b".repeat(40));
        log(&writer, &"c".repeat(40));
        log(&writer, &"d".repeat(20));
        assert_eq!(queue.dropped(), 1, "c did not fit; d did");
        assert_eq!(queue.events(), 4, "dropped ones count too");
        assert!(
            !queue.flush(Duration::from_millis(10)),
            "nothing drains while blocked"
        );
        *gate.0.lock().expect("not poisoned") = true;
        gate.1.notify_all();
        assert!(queue.flush(Duration::from_secs(30)));
        let written: Vec<Vec<u8>> = rx.try_iter().collect();
        assert_eq!(
            written,
            vec![
                "a".repeat(40).into_bytes(),
                "b".repeat(40).into_bytes(),
                "d".repeat(20).into_bytes()
            ]
        );
        assert_eq!(queue.write_errors(), 0);
    }

    #[test]
    fn an_event_larger_than_the_queue_is_accepted_into_an_empty_queue() {
        let queue = leaked(8);
        let (tx, rx) = mpsc::channel();
        let writer = queue.start(Channel(tx)).expect("a thread");
        log(&writer, "longer than eight bytes\n");
        assert!(queue.flush(Duration::from_secs(30)));
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn a_second_start_reuses_the_thread() {
        let queue = leaked(QUEUE_BYTES);
        let (first, first_rx) = mpsc::channel();
        let (second, second_rx) = mpsc::channel();
        queue.start(Channel(first)).expect("a thread");
        let writer = queue.start(Channel(second)).expect("the same thread");
        log(&writer, "x\n");
        assert!(queue.flush(Duration::from_secs(30)));
        assert_eq!(first_rx.try_iter().count(), 1);
        assert_eq!(second_rx.try_iter().count(), 0);
    }

    #[test]
    fn tracing_events_go_through_the_queue_and_a_failing_sink_never_panics() {
        let queue = leaked(QUEUE_BYTES);
        let (tx, rx) = mpsc::channel();
        drop(rx);
        // Every write fails: the receiver is gone.
        let writer = queue.start(Channel(tx)).expect("a thread");
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("one");
            tracing::warn!(field = 1, "two");
        });
        assert!(queue.flush(Duration::from_secs(30)));
        assert_eq!(queue.write_errors(), 2);
    }

    #[test]
    fn flush_of_an_unstarted_empty_queue_returns_at_once() {
        assert!(leaked(8).flush(Duration::ZERO));
    }
}
