//! Starting a run's process without copying the starter: `clone(CLONE_VM | CLONE_VFORK)`, the way glibc's
//! `posix_spawn` does it, with the set-up that `posix_spawn` cannot do (the parent-death signal and its
//! check, transparent huge pages). The run supervisor starts every run of `leasecron run` with it.
//!
//! `fork` copies the page tables of the whole process and then takes a copy-on-write fault for each page
//! the child touches before `exec`; with the set-up done in a `pre_exec` closure, `std::process::Command`
//! must fork. That copy was most of a run's start lag (docs/benchmarks.md). Here the child runs on a small
//! stack of its own in the parent's memory, while the thread that started it waits (`CLONE_VFORK`) until
//! it has called `exec` or exited; the other threads go on.
//!
//! The child does what `Command` does before `exec`, in the same order, and no more: handlers back to
//! their defaults (a handler of the parent must never run in the child, on the parent's memory) and
//! SIGPIPE too, an empty signal mask, stdin from `/dev/null`, stdout and stderr to the given descriptors,
//! the working directory, its own process group; then the parent-death signal and its check
//! (`process::die_with`, as the in-process runner's `pre_exec` does); then `execve` along `PATH` as `execvp` does. The huge-page setting is a
//! property of the memory the child shares until `exec`: the parent sets it around the clone. It calls
//! nothing but system-call wrappers: no allocation, no lock. Every byte it reads was prepared by the
//! parent before the clone, and it writes one thing back: the error that ended it, if `exec` failed.
//!
//! Descriptors: everything leasecron opens is close-on-exec (Rust's default), so the child gets exactly
//! 0, 1 and 2, as with `Command`.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;

/// The child's stack. It makes a dozen system calls through their wrappers and nothing deeper; glibc's
/// `posix_spawn` gives its child 32 KiB plus the size of the arguments (which this child does not copy).
const STACK_BYTES: usize = 64 * 1024;
/// What `execvp` searches when the environment has no `PATH` (glibc's default).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";
/// The exit status of a child whose `exec` failed (never seen: the parent reaps it and reports the error).
const EXEC_FAILED: c_int = 127;

/// What to start.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    /// A path, or a name looked up in `PATH` (the child's, as `execvp` does).
    pub(crate) program: &'a str,
    /// Its arguments (`argv[0]` is `program`).
    pub(crate) args: &'a [String],
    /// Variables added to this process's environment.
    pub(crate) env: &'a [(String, String)],
    /// The working directory, if not this process's.
    pub(crate) cwd: Option<&'a str>,
    /// Where its stdout and stderr go.
    pub(crate) stdout: BorrowedFd<'a>,
    pub(crate) stderr: BorrowedFd<'a>,
}

/// Everything the child reads, prepared by the parent. The pointers point into the parent's memory, which
/// stays as it is until the child has called `exec` or exited (`CLONE_VFORK`).
struct ChildArgs<'a> {
    /// The paths to try, in order (one if the program names a path).
    candidates: &'a [*const c_char],
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// Null: stay in the parent's working directory.
    cwd: *const c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    parent: Pid,
    /// Set by the child to the errno that ended it, if it did not reach `exec`.
    error: AtomicI32,
}

/// Starts `spec` in its own process group, with the parent-death signal SIGKILL. Returns once the child has
/// called `exec`; an error if it could not (no such program, no permission, a working directory that
/// does not exist...), with the child already reaped. The caller reaps the child it gets.
pub(crate) fn spawn(spec: &Spec<'_>) -> io::Result<Pid> {
    let program = c_string(spec.program.as_bytes().to_vec())?;
    let mut argv = vec![program.clone()];
    for arg in spec.args {
        argv.push(c_string(arg.clone().into_bytes())?);
    }
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (name, value) in spec.env {
        env.insert(name.into(), value.into());
    }
    let candidates = candidates(&program, env.get(std::ffi::OsStr::new("PATH")))?;
    let envp = env
        .into_iter()
        .map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend(value.into_vec());
            c_string(entry)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = spec
        .cwd
        .map(|dir| c_string(dir.as_bytes().to_vec()))
        .transpose()?;
    let dev_null = std::fs::File::open("/dev/null")?;
    // dup2 onto 1 and 2 must not clobber a descriptor still to be copied, nor copy one onto itself (which
    // would leave it close-on-exec): sources below 3 are moved above first.
    let stdout = above_stdio(spec.stdout)?;
    let stderr = above_stdio(spec.stderr)?;

    let candidate_ptrs: Vec<*const c_char> = candidates.iter().map(|c| c.as_ptr()).collect();
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    let args = ChildArgs {
        candidates: &candidate_ptrs,
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |dir| dir.as_ptr()),
        stdin: dev_null.as_raw_fd(),
        stdout: stdout.raw(),
        stderr: stderr.raw(),
        parent: Pid::this(),
        error: AtomicI32::new(0),
    };
    let stack = Stack::new()?;
    // The huge-page setting belongs to the memory (the mm), which the child shares until its exec, and
    // the new program inherits it from there: it is given back here, in the parent, for the clone, and
    // taken away again once the child runs its own program. Pages this process faults in meanwhile may be
    // huge; the run supervisor has no other thread.
    let give_back = super::gives_back_huge_pages();
    if give_back {
        nix::sys::prctl::set_thp_disable(false)?;
    }
    let cloned = clone_vfork(&stack, &args);
    if give_back {
        // A failure costs memory only, and the child is running: it is returned all the same.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
    let pid = cloned?;
    drop(stack);
    match args.error.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => {
            reap(pid);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// Clones the calling thread into a child that runs [`child_main`] on `stack` with `args`, and waits until
/// it has called `exec` or exited. Every signal is blocked around the clone, so none is handled in the child
/// before it has reset the handlers.
#[allow(unsafe_code)]
fn clone_vfork(stack: &Stack, args: &ChildArgs<'_>) -> io::Result<Pid> {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads `all` and writes `old`, both valid
    // sigset_t storage on this stack.
    let masked = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr())
    };
    if masked != 0 {
        return Err(io::Error::from_raw_os_error(masked));
    }
    // SAFETY: clone(2) with CLONE_VM | CLONE_VFORK, as glibc's posix_spawn makes it. The child runs
    // `child_main` on `stack` (mapped, writable, its top 16-byte aligned) in this process's memory;
    // `args` outlives it because this thread is suspended until the child calls execve or _exit, and
    // `child_main` only reads `args` and stores into its atomic `error`. SIGCHLD as the exit signal makes
    // it an ordinary child for waitpid.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(args).cast_mut().cast::<c_void>(),
        )
    };
    let cloned = if pid == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(Pid::from_raw(pid))
    };
    // SAFETY: restores the mask saved above, which pthread_sigmask initialised.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
    }
    cloned
}

/// The child, between the clone and `exec`. See the [module documentation](self).
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` that `clone_vfork` passed; the parent keeps it alive and unchanged
    // until this function has called execve or _exit.
    let args = unsafe { &*arg.cast::<ChildArgs<'_>>() };
    // SAFETY: only async-signal-safe system-call wrappers on memory prepared by the parent (C strings,
    // null-terminated pointer arrays, sigset_t and sigaction values on this stack). Nothing allocates,
    // locks or unwinds; every path ends in execve or _exit.
    unsafe {
        reset_signals();
        check(args, libc::dup2(args.stdin, 0));
        check(args, libc::dup2(args.stdout, 1));
        check(args, libc::dup2(args.stderr, 2));
        if !args.cwd.is_null() {
            check(args, libc::chdir(args.cwd));
        }
        check(args, libc::setpgid(0, 0));
        if let Err(errno) = super::die_with(args.parent) {
            fail(args, errno as c_int);
        }
        // As execvp: a candidate that is missing is skipped, one without permission remembered, any
        // other error final.
        let mut denied = false;
        let mut last = libc::ENOENT;
        for &path in args.candidates {
            libc::execve(path, args.argv, args.envp);
            last = Errno::last_raw();
            match last {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        fail(
            args,
            if denied && last != libc::ENOEXEC {
                libc::EACCES
            } else {
                last
            },
        )
    }
}

/// Every caught signal back to its default action, and SIGPIPE (which Rust's runtime ignores); then an
/// empty mask. Ignored signals other than SIGPIPE stay ignored, as with `Command`.
#[allow(unsafe_code)]
unsafe fn reset_signals() {
    // SAFETY (for the caller's block): sigaction and sigprocmask on values on this stack.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..libc::SIGRTMAX() + 1 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let caught =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if caught || signal == libc::SIGPIPE {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Ends the child with errno if a system call returned -1.
fn check(args: &ChildArgs<'_>, returned: c_int) {
    if returned == -1 {
        fail(args, Errno::last_raw());
    }
}

/// Tells the parent `errno` and ends the child.
#[allow(unsafe_code)]
fn fail(args: &ChildArgs<'_>, errno: c_int) -> ! {
    args.error.store(
        if errno == 0 { libc::EIO } else { errno },
        Ordering::Release,
    );
    // SAFETY: _exit(2) ends the child at once, without running this process's exit handlers or flushing
    // its buffers (which are the parent's).
    unsafe { libc::_exit(EXEC_FAILED) }
}

/// Reaps a child that failed before `exec`.
fn reap(pid: Pid) {
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(Errno::EINTR) => {}
            _ => return,
        }
    }
}

/// The paths `execvp` would try for `program` with `path` as `PATH`.
fn candidates(program: &CString, path: Option<&OsString>) -> io::Result<Vec<CString>> {
    let name = program.as_bytes();
    if name.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if name.contains(&b'/') {
        return Ok(vec![program.clone()]);
    }
    let path = path.map_or(DEFAULT_PATH, |path| path.as_bytes());
    path.split(|&b| b == b':')
        .map(|dir| {
            // An empty entry is the working directory.
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(name);
            c_string(full)
        })
        .collect()
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A descriptor to copy onto 0, 1 or 2: the caller's if it is above them, else a copy above them.
enum Source<'a> {
    Borrowed(BorrowedFd<'a>),
    Moved(OwnedFd),
}

impl Source<'_> {
    fn raw(&self) -> RawFd {
        match self {
            Source::Borrowed(fd) => fd.as_raw_fd(),
            Source::Moved(fd) => fd.as_raw_fd(),
        }
    }
}

fn above_stdio(fd: BorrowedFd<'_>) -> io::Result<Source<'_>> {
    if fd.as_raw_fd() > 2 {
        return Ok(Source::Borrowed(fd));
    }
    let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    #[allow(unsafe_code)]
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(Source::Moved(unsafe {
        std::os::fd::FromRawFd::from_raw_fd(copy)
    }))
}

/// The child's stack: an anonymous mapping with a guard page at its low end.
struct Stack {
    base: *mut c_void,
}

impl Stack {
    #[allow(unsafe_code)]
    fn new() -> io::Result<Stack> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base };
        // SAFETY: the lowest page of the mapping made above; an overflow faults instead of writing below.
        if unsafe { libc::mprotect(base, page_size(), libc::PROT_NONE) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the mapping's end (page-aligned, so 16-byte aligned).
    fn top(&self) -> *mut c_void {
        self.base.wrapping_byte_add(STACK_BYTES)
    }
}

impl Drop for Stack {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer in use (the child has called exec or exited).
        unsafe {
            libc::munmap(self.base, STACK_BYTES);
        }
    }
}

#[allow(unsafe_code)]
fn page_size() -> usize {
    // SAFETY: sysconf(3) reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::os::fd::AsFd as _;

    use nix::sys::wait::{waitpid, WaitStatus};

    /// Runs `program args` with `env` and `cwd`, returning its stdout and exit code.
    fn run(
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&str>,
    ) -> io::Result<(String, i32)> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let pid = spawn(&Spec {
            program,
            args: &args,
            env: &env,
            cwd,
            stdout: write.as_fd(),
            stderr: write.as_fd(),
        })?;
        drop(write);
        let mut out = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut out)
            .expect("read");
        let code = match waitpid(pid, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        };
        Ok((out, code))
    }

    #[test]
    fn the_child_gets_its_arguments_environment_directory_and_exit_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cwd = dir.path().to_str().expect("utf-8");
        let (out, code) = run(
            "/bin/sh",
            &[
                "-c",
                "echo \"$1 $LEASECRON_TEST_VAR $(pwd)\"; exit 3",
                "sh",
                "first arg",
            ],
            &[("LEASECRON_TEST_VAR", "set")],
            Some(cwd),
        )
        .expect("spawn");
        let canonical = std::fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(out, format!("first arg set {}\n", canonical.display()));
        assert_eq!(code, 3);
    }

    #[test]
    fn a_name_is_looked_up_in_the_childs_path() {
        let (out, code) = run("sh", &["-c", "echo found"], &[], None).expect("spawn");
        assert_eq!((out.as_str(), code), ("found\n", 0));
        // The child's PATH decides, not this process's.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = format!("{}:/bin:/usr/bin", dir.path().display());
        // A link, not a script written here: a file open for writing while another test forks cannot be
        // executed (ETXTBSY).
        std::os::unix::fs::symlink("/bin/echo", dir.path().join("leasecron-spawn-probe"))
            .expect("symlink");
        let (out, _) = run(
            "leasecron-spawn-probe",
            &["probe"],
            &[("PATH", &path)],
            None,
        )
        .expect("spawn");
        assert_eq!(out, "probe\n");
    }

    #[test]
    fn failures_before_exec_are_errors_of_their_kind() {
        let missing = run("/nonexistent/leasecron-program", &[], &[], None).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let unknown = run("leasecron-no-such-program", &[], &[], None).expect_err("unknown");
        assert_eq!(unknown.kind(), io::ErrorKind::NotFound);
        let directory = run("/", &[], &[], None).expect_err("a directory");
        assert_eq!(directory.kind(), io::ErrorKind::PermissionDenied);
        let no_dir = run("/bin/true", &[], &[], Some("/nonexistent/dir")).expect_err("cwd");
        assert_eq!(no_dir.kind(), io::ErrorKind::NotFound);
        let nul = run("/bin/true", &["a\0b"], &[], None).expect_err("nul");
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_child_has_its_own_group_an_empty_mask_default_sigpipe_and_a_death_signal() {
        // Rust's test harness ignores SIGPIPE and may block signals on this thread: the child must not.
        let mut blocked = nix::sys::signal::SigSet::empty();
        blocked.add(nix::sys::signal::Signal::SIGUSR1);
        blocked.thread_block().expect("block");
        let (out, code) = run("/bin/cat", &["/proc/self/status"], &[], None).expect("spawn");
        blocked.thread_unblock().expect("unblock");
        assert_eq!(code, 0);
        let field = |name: &str| {
            out.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {name} in {out}"))
                .to_owned()
        };
        assert_eq!(u64::from_str_radix(&field("SigBlk:"), 16), Ok(0));
        let ignored = u64::from_str_radix(&field("SigIgn:"), 16).expect("hex");
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored");
        let (out, _) = run(
            "/bin/sh",
            &["-c", "cut -d' ' -f5 /proc/$$/stat; echo $$"],
            &[],
            None,
        )
        .expect("spawn");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], lines[1], "the group is the child's own: {out}");
    }

    #[test]
    fn sources_below_3_are_copied_above_the_standard_descriptors() {
        let stderr = std::io::stderr();
        let moved = above_stdio(stderr.as_fd()).expect("dup");
        assert!(matches!(moved, Source::Moved(_)));
        assert!(moved.raw() > 2);
        let (read, _write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let kept = above_stdio(read.as_fd()).expect("borrow");
        assert!(matches!(kept, Source::Borrowed(_)));
        assert_eq!(kept.raw(), read.as_raw_fd());
    }
}
