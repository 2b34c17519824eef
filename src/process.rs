//! What leasecron does to the processes it starts, wherever it starts them (the runner in-process, or the
//! run supervisor): the set-up a child gets before `exec` so that it never outlives its starter, and the
//! signalling of a run's process group. A leaf: the runner and the supervisor both build on it.

pub(crate) mod spawn;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{killpg, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{getppid, Pid};

/// Set by [`keep_huge_pages_off`] if it turned transparent huge pages off where they were on: the
/// processes this one starts then get them back.
static GIVE_BACK_HUGE_PAGES: AtomicBool = AtomicBool::new(false);

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), remembering how it found
/// them so that the processes it starts get that back (`die_with_parent`).
///
/// An idle replica touches a few MiB here and there in mimalloc's 1 GiB arena; with huge pages each touch
/// can make a whole 2 MiB page resident, which took a 10-job replica from 17 to 29 MiB of RSS
/// (docs/decisions.md). The mimalloc build already leaves out its own `MADV_HUGEPAGE` (feature `no_thp`),
/// which is what a kernel in `madvise` mode needs; this covers kernels in `always` mode. The flag only
/// matters when a page is faulted in, so what was faulted before `main` stays as it is.
pub fn keep_huge_pages_off() -> nix::Result<()> {
    let was_off = prctl::get_thp_disable()?;
    prctl::set_thp_disable(true)?;
    GIVE_BACK_HUGE_PAGES.store(!was_off, Ordering::Relaxed);
    Ok(())
}

/// True if the processes this one starts get transparent huge pages back ([`keep_huge_pages_off`]).
pub(crate) fn gives_back_huge_pages() -> bool {
    GIVE_BACK_HUGE_PAGES.load(Ordering::Relaxed)
}

/// Gives the child back transparent huge pages as this process found them, if [`keep_huge_pages_off`]
/// turned them off (the flag survives `exec`, and a job's own program may want them). Part of
/// [`die_with_parent`]; on its own for the run supervisor, which records the setting leasecron was
/// started with and gives that to the runs.
#[allow(unsafe_code)]
pub(crate) fn give_back_huge_pages(command: &mut std::process::Command) {
    if !gives_back_huge_pages() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and makes one prctl(2) call, which is
    // async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, || {
            prctl::set_thp_disable(false).map_err(io::Error::from)
        });
    }
}

/// Makes the child die with SIGKILL when its parent goes away, so no run's process outlives the process
/// that started it; gives it an empty signal mask (the run supervisor blocks the signals it reads from a
/// signalfd, and a mask survives `exec`); and gives it `open_files` (soft, hard) as its open file limits if
/// set (leasecron raises its own, see `spawner`); and gives it back transparent huge pages as this process
/// found them ([`give_back_huge_pages`]). Used by the in-process runner; the run supervisor starts its
/// children with [`spawn`], which does the same in its own child.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut std::process::Command, open_files: Option<(u64, u64)>) {
    let parent = Pid::this();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe calls are
    // allowed. It makes at most four system calls (prctl(2), getppid(2), sigprocmask(2), setrlimit(2)),
    // all async-signal-safe; it allocates nothing
    // and takes no lock; the error it may return is built from a raw errno, without allocation.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, move || {
            die_with(parent)?;
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(io::Error::from)?;
            if let Some((soft, hard)) = open_files {
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    give_back_huge_pages(command);
}

/// In a child before `exec`: SIGKILL when `parent` goes away. If the parent died before the signal was set,
/// the signal will never come: ESRCH, and the child gives up. Two async-signal-safe system calls
/// (prctl(2), getppid(2)); nothing allocated.
pub(crate) fn die_with(parent: Pid) -> Result<(), Errno> {
    prctl::set_pdeathsig(Signal::SIGKILL)?;
    if getppid() != parent {
        return Err(Errno::ESRCH);
    }
    Ok(())
}

/// Sends `signal` to process group `pgid`. A group that no longer exists is not an error.
pub(crate) fn signal_group(pgid: i32, signal: Signal) {
    // killpg(0) would signal our own group and killpg(1) init's; neither is ever a job's group.
    if pgid <= 1 {
        return;
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pgid, %signal, %error, "signalling a process group failed"),
    }
}
