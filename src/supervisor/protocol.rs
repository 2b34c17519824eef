//! The messages between leasecron and its supervisor, one per `SOCK_SEQPACKET` datagram, JSON-encoded, with
//! the run's stdout and stderr pipes passed as `SCM_RIGHTS` beside a spawn request.
//!
//! A datagram socket keeps message boundaries (no framing to get wrong) and delivers the descriptors with
//! the message they belong to. Both ends are `CLOEXEC`: no job ever inherits one, so the supervisor sees
//! end-of-file exactly when every copy of leasecron's end is closed, that is when leasecron is gone.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// The largest message either side sends or accepts (a spawn request carries the job's argv and env).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Errors of the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on the socket failed.
    #[error("{op} on the supervisor socket: {source}")]
    Io {
        /// `sendmsg` or `recvmsg`.
        op: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// A message could not be encoded or decoded.
    #[error("a supervisor message is malformed: {0}")]
    Json(#[from] serde_json::Error),
    /// A message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("a supervisor message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// A message arrived with the wrong number of descriptors.
    #[error("a supervisor message carried {got} descriptors, {expected} expected")]
    Descriptors {
        /// How many it carried.
        got: usize,
        /// How many its kind carries.
        expected: usize,
    },
}

/// What leasecron asks of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Start a run's process: in its own process group, stdin from `/dev/null`, stdout and stderr to the
    /// two descriptors that come with the message, the supervisor's environment (leasecron's) plus `env`.
    Spawn {
        /// Echoed in the reply.
        id: u64,
        /// The program (a path, or a name looked up in `PATH`).
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// Variables added to the environment.
        env: Vec<(String, String)>,
        /// The working directory, if not the supervisor's (leasecron's).
        cwd: Option<String>,
        /// `CLOCK_MONOTONIC` in nanoseconds after which the process must not be started: the term's
        /// deadline (docs/design.md §2, rule 5), checked by the process that forks.
        not_after_ns: u64,
        /// The job's termination grace in milliseconds: if leasecron dies, the process gets SIGTERM, then
        /// SIGKILL after this long.
        grace_ms: u64,
    },
    /// leasecron sent SIGTERM to process `pid`'s group and will SIGKILL it at `kill_at_ns`
    /// (`CLOCK_MONOTONIC`). Should leasecron die meanwhile, the supervisor keeps that instant rather than
    /// granting a whole grace again: a run never outlives `s + RD + G` (docs/design.md §2).
    Terminating {
        /// The run's process.
        pid: i32,
        /// When its grace ends.
        kill_at_ns: u64,
    },
}

/// What the supervisor answers, and reports unasked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// The process of request `id` runs as `pid` (its process group id too).
    Spawned {
        /// The request.
        id: u64,
        /// The process.
        pid: i32,
    },
    /// The operating system refused to start the process of request `id`.
    Failed {
        /// The request.
        id: u64,
        /// The `errno`, if there was one.
        errno: Option<i32>,
        /// The error's text.
        message: String,
    },
    /// The process of request `id` was not started: its deadline had passed when its turn came.
    TooLate {
        /// The request.
        id: u64,
    },
    /// Process `pid` exited (`code`) or was killed (`signal`), and the rest of its group was SIGKILLed.
    Exited {
        /// The process.
        pid: i32,
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// It dumped core.
        core: bool,
        /// How many processes of its group were still alive when it ended (SIGKILLed with the group).
        #[serde(default)]
        left_in_group: u32,
    },
}

/// Sends `message` with `fds` attached. `nonblocking`: fail with `EAGAIN` rather than wait for room.
pub fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> Result<(), Error> {
    let bytes = serde_json::to_vec(message)?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge(bytes.len()));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    let flags = if nonblocking {
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL
    } else {
        MsgFlags::MSG_NOSIGNAL
    };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            flags,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "sendmsg",
                    source,
                })
            }
        }
    }
}

/// Receives one message into `buf` and the descriptors that came with it. `Ok(None)`: the other end is
/// closed.
pub fn recv<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<Option<(T, Vec<OwnedFd>)>, Error> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (len, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(raw) = cmsg {
                            fds.extend(raw.into_iter().map(owned));
                        }
                    }
                }
                let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
                break (msg.bytes, fds, truncated);
            }
            Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "recvmsg",
                    source,
                })
            }
        }
    };
    if truncated {
        return Err(Error::TooLarge(len));
    }
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((serde_json::from_slice(&buf[..len])?, fds)))
}

/// Takes ownership of a descriptor the kernel passed us.
#[allow(unsafe_code)]
fn owned(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was installed in this process by `recvmsg` (SCM_RIGHTS) a moment ago and is owned by
    // nothing else; wrapping it makes sure it is closed exactly once.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsFd as _;

    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair")
    }

    #[test]
    fn a_spawn_request_arrives_whole_with_its_pipes() {
        let (a, b) = pair();
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let request = Request::Spawn {
            id: 7,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo 'hi there'".into()],
            env: vec![("LEASECRON_JOB".into(), "x".into())],
            cwd: None,
            not_after_ns: 42,
            grace_ms: 3000,
        };
        send(a.as_fd(), &request, &[write.as_fd(), write.as_fd()], false).expect("send");
        drop(write);
        let mut buf = vec![0; MAX_MESSAGE_BYTES];
        let (got, fds): (Request, _) = recv(b.as_fd(), &mut buf).expect("recv").expect("a message");
        assert_eq!(got, request);
        assert_eq!(fds.len(), 2);
        let mut passed = std::fs::File::from(fds.into_iter().next().expect("a descriptor"));
        passed.write_all(b"through").expect("write the passed pipe");
        drop(passed);
        let mut text = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut text)
            .expect("read the pipe");
        assert_eq!(text, "through");
    }

    #[test]
    fn a_closed_peer_reads_as_none_and_replies_round_trip() {
        let (a, b) = pair();
        let reply = Reply::Exited {
            pid: 12,
            code: None,
            signal: Some(9),
            core: false,
            left_in_group: 2,
        };
        send(a.as_fd(), &reply, &[], true).expect("send");
        drop(a);
        let mut buf = vec![0; 1024];
        let got: Option<(Reply, _)> = recv(b.as_fd(), &mut buf).expect("recv");
        assert_eq!(got.map(|(r, _)| r), Some(reply));
        let end: Option<(Reply, Vec<OwnedFd>)> = recv(b.as_fd(), &mut buf).expect("recv at end");
        assert!(end.is_none());
    }

    #[test]
    fn an_oversized_message_is_refused_before_sending() {
        let (a, _b) = pair();
        let request = Request::Spawn {
            id: 1,
            program: "x".repeat(MAX_MESSAGE_BYTES),
            args: vec![],
            env: vec![],
            cwd: None,
            not_after_ns: 0,
            grace_ms: 0,
        };
        assert!(matches!(
            send(a.as_fd(), &request, &[], true),
            Err(Error::TooLarge(_))
        ));
    }
}
