//! What benches/real_apiserver.rs needs to run the peers beside leasecron and to cut a member off:
//!
//! - [`lease_manager_elector_if_asked`]: the bench binary, run again as
//!   `BENCH lease-manager-elector ID NAMESPACE LEASE DURATION GRACE`, is one member of the
//!   kube-lease-manager set: a `LeaseManager::watch()` on the Lease, with kube's default client
//!   (`Client::try_default()`, as the crate's documentation does), that prints one JSON line per change
//!   of its own belief, as the client-go elector does (`{"event":"started_leading","id":..,"at":..}`);
//!   SIGTERM closes the channel, which releases the Lease, as an application shutting down would;
//! - [`Relay`]: a TCP relay between one member and the API server (TLS goes through it untouched) that
//!   can be cut: from [`Relay::cut`] on, nothing more passes either way and new connections are accepted
//!   but never answered: every request of the member hangs, as behind a network partition;
//! - [`beliefs`]: when a member believed it led, read from its log.

#![allow(dead_code)] // the bench uses some of it in each part

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The first argument that makes the bench binary a kube-lease-manager elector.
pub const LEASE_MANAGER_ELECTOR: &str = "lease-manager-elector";

/// Runs a kube-lease-manager elector if the arguments ask for one (then returns true, when it ended).
pub fn lease_manager_elector_if_asked() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(LEASE_MANAGER_ELECTOR) {
        return false;
    }
    let [id, namespace, lease, duration, grace] = &args[2..] else {
        eprintln!("usage: BENCH {LEASE_MANAGER_ELECTOR} ID NAMESPACE LEASE DURATION GRACE");
        std::process::exit(2);
    };
    let (Ok(duration), Ok(grace)) = (duration.parse::<u64>(), grace.parse::<u64>()) else {
        eprintln!("{LEASE_MANAGER_ELECTOR}: DURATION and GRACE are whole seconds");
        std::process::exit(2);
    };
    // One thread, as a small application would give it; kube-lease-manager needs only tokio's time and
    // sync.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(elect(id, namespace, lease, duration, grace));
    std::process::exit(code);
}

fn emit(event: &str, id: &str) {
    let line = serde_json::json!({
        "event": event,
        "id": id,
        "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    println!("{line}");
}

async fn elect(id: &str, namespace: &str, lease: &str, duration: u64, grace: u64) -> i32 {
    use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
    use tokio::signal::unix::{signal, SignalKind};

    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{LEASE_MANAGER_ELECTOR}: no client: {error}");
            return 1;
        }
    };
    emit("started", id);
    let manager = match LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_parameters(LeaseParams::new(id, duration, grace))
        .build()
        .await
    {
        Ok(manager) => manager,
        Err(error) => {
            eprintln!("{LEASE_MANAGER_ELECTOR}: {error}");
            return 1;
        }
    };
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let (mut channel, task) = manager.watch().await;
    let mut leading = false;
    loop {
        tokio::select! {
            changed = channel.changed() => {
                if changed.is_err() {
                    eprintln!("{LEASE_MANAGER_ELECTOR}: the manager's task ended");
                    break;
                }
                let now = *channel.borrow_and_update();
                if now != leading {
                    leading = now;
                    emit(if now { "started_leading" } else { "stopped_leading" }, id);
                }
            }
            _ = term.recv() => {
                // The application stops its work first, then lets the manager release the Lease.
                if leading {
                    emit("stopped_leading", id);
                }
                break;
            }
        }
    }
    drop(channel);
    let code = match task.await {
        Ok(Ok(_)) => 0,
        Ok(Err(error)) => {
            eprintln!("{LEASE_MANAGER_ELECTOR}: {error}");
            1
        }
        Err(error) => {
            eprintln!("{LEASE_MANAGER_ELECTOR}: {error}");
            1
        }
    };
    emit("exited", id);
    code
}

// === the relay ===

/// A TCP relay to `upstream` on a loopback port of its own, which [`Relay::cut`] turns into a black hole.
pub struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    stop: CancellationToken,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a relay");
        let addr = listener.local_addr().expect("the relay's address");
        let (cut, cut_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let _ = inbound.set_nodelay(true);
                let cut_rx = cut_rx.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = relay(inbound, upstream, cut_rx) => {}
                    }
                });
            }
        });
        Relay { addr, cut, stop }
    }

    /// The address the member connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing passes: requests hang (no reset, no refusal), as behind a partition.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn relay(inbound: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        // Accepted (the kernel did), never answered.
        return hang(inbound).await;
    }
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let mut cut_up = cut.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                _ = cut_off(&mut cut_up) => return std::future::pending::<()>().await,
                n = in_read.read(&mut buf) => n,
            };
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if *cut_up.borrow() || out_write.write_all(&buf[..n]).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                }
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                _ = cut_off(&mut cut) => return std::future::pending::<()>().await,
                n = out_read.read(&mut buf) => n,
            };
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if *cut.borrow() || in_write.write_all(&buf[..n]).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                }
            }
        }
    };
    // Either side closing ends the connection; a cut keeps both open and silent.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Returns once the relay is cut (or never, if its sender is gone).
async fn cut_off(cut: &mut watch::Receiver<bool>) {
    if cut.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn hang(_inbound: TcpStream) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

// === beliefs, from the logs ===

/// A change of a member's belief that it leads, from its log.
#[derive(Debug, Clone)]
pub struct Belief {
    pub at: DateTime<Utc>,
    pub leading: bool,
}

/// The changes of belief in the log at `path`: the JSON lines of the elector and of
/// [`lease_manager_elector_if_asked`] (`started_leading`, `stopped_leading`), or leasecron's JSON log
/// (`acquired…` starts a term; `lost leadership…` and `shutting down: ending the term…` end it).
pub fn beliefs(path: &Path) -> Vec<Belief> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let time = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        if let Some(event) = v.get("event").and_then(Value::as_str) {
            let leading = match event {
                "started_leading" => true,
                "stopped_leading" => false,
                _ => continue,
            };
            if let Some(at) = time("at") {
                out.push(Belief { at, leading });
            }
        } else if let Some(message) = v.get("message").and_then(Value::as_str) {
            let leading = if message.starts_with("acquired") && v.get("cause").is_some() {
                true
            } else if message.starts_with("lost leadership")
                || message.starts_with("shutting down: ending the term")
            {
                false
            } else {
                continue;
            };
            if let Some(at) = time("timestamp") {
                out.push(Belief { at, leading });
            }
        }
    }
    out
}
