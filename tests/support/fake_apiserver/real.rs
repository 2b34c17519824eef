//! The real kube-apiserver of `tools/kube-testenv` (an embedded etcd and kube-apiserver built from
//! `k8s.io/kubernetes`), started once per test process on first use and stopped when the process exits
//! (the harness stops when its standard input closes).
//!
//! [`shared`] builds the harness if needed (`tools/kube-testenv/build`, which skips an unchanged build)
//! and starts it. Where Go is missing or the build fails, the tests that need it say that they were
//! skipped and why, and pass — unless `LEASECRON_REAL_APISERVER=require` (set by `.ci/run`), which
//! makes that a failure. `LEASECRON_REAL_APISERVER=skip` skips them on purpose.
//!
//! Every test takes a namespace of its own ([`RealApiServer::create_namespace`]): nothing is ever
//! deleted (no namespace controller runs, so a deleted namespace would never finish terminating).
//! Users are client certificates from the harness's CA ([`RealApiServer::user_kubeconfig`]); the admin
//! is in `system:masters`; ServiceAccount tokens come from `TokenRequest`
//! ([`RealApiServer::service_account_token`]).

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Deserialize;
use serde_json::{json, Value};

/// The environment variable that says what to do without a real API server: `require` (CI) fails,
/// `skip` skips without trying, anything else tries and skips with a message if it cannot.
pub const MODE_VAR: &str = "LEASECRON_REAL_APISERVER";

/// What `kube-testenv` prints when it is ready (see tools/kube-testenv/main.go).
#[derive(Clone, Debug, Deserialize)]
pub struct Ready {
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// The admin's kubeconfig (group `system:masters`).
    pub kubeconfig: PathBuf,
    /// The harness's state directory.
    pub dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// kube-apiserver's own log.
    pub apiserver_log: PathBuf,
    /// The Kubernetes release (`v1.37.2`).
    pub release: String,
    /// Milliseconds from start to ready.
    pub startup_ms: u64,
    /// Whether etcd fsyncs (it does unless started with `-etcd-unsafe-no-fsync`).
    pub etcd_fsync: bool,
}

/// A running kube-testenv.
#[derive(Debug)]
pub struct RealApiServer {
    ready: Ready,
    bin: PathBuf,
    child: Mutex<Child>,
    users: Mutex<HashMap<(String, Vec<String>), PathBuf>>,
    namespaces: AtomicUsize,
}

/// Why there is no real API server here.
#[derive(Clone, Debug)]
pub struct Unavailable(pub String);

static SHARED: OnceLock<Result<Arc<RealApiServer>, Unavailable>> = OnceLock::new();

/// This process's real API server, started on first use; `None` (after saying why on stderr) if it
/// cannot be had and is not required. Panics if it is required (`LEASECRON_REAL_APISERVER=require`)
/// and cannot be had.
pub fn shared() -> Option<Arc<RealApiServer>> {
    let outcome = SHARED.get_or_init(|| {
        if std::env::var(MODE_VAR).as_deref() == Ok("skip") {
            return Err(Unavailable(format!("{MODE_VAR}=skip")));
        }
        RealApiServer::start(&[]).map(Arc::new)
    });
    match outcome {
        Ok(server) => Some(Arc::clone(server)),
        Err(Unavailable(why)) => {
            if std::env::var(MODE_VAR).as_deref() == Ok("require") {
                panic!(
                    "the real API server is required ({MODE_VAR}=require) but unavailable: {why}"
                );
            }
            eprintln!("SKIPPED on the real API server: {why}");
            None
        }
    }
}

/// The directory of the harness's programs (`kube-testenv`, `kube-apiserver`, `kubectl`,
/// `leader-election`), built if needed.
pub fn bin_dir() -> Result<PathBuf, Unavailable> {
    static BIN: OnceLock<Result<PathBuf, Unavailable>> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/kube-testenv/build");
        let output = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Unavailable(format!("cannot run {}: {e}", script.display())))?;
        match output.status.code() {
            Some(0) => Ok(PathBuf::from(
                String::from_utf8_lossy(&output.stdout).trim().to_string(),
            )),
            Some(3) => Err(Unavailable(
                "no `go` on PATH (Go 1.26 builds tools/kube-testenv)".into(),
            )),
            _ => Err(Unavailable(format!(
                "{} failed ({}); see its output above",
                script.display(),
                output.status
            ))),
        }
    })
    .clone()
}

/// Runs `f` with a fresh admin client on a thread and runtime of its own, and waits for it: for the
/// synchronous helpers, which are called from within tests' runtimes.
fn on_side_runtime<T, F, Fut>(admin: PathBuf, f: F) -> T
where
    T: Send,
    F: FnOnce(kube::Client) -> Fut + Send,
    Fut: Future<Output = T>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the real API server's admin requests");
                runtime.block_on(async move {
                    let client = client_from(&admin, None).await;
                    f(client).await
                })
            })
            .join()
            .expect("the admin request thread")
    })
}

/// A client from the kubeconfig at `path`, its namespace `namespace` if given; kube's retry layer
/// off, as leasecron's own clients.
pub async fn client_from(path: &Path, namespace: Option<&str>) -> kube::Client {
    kube::Client::try_from(config_from(path, namespace).await).expect("a kube client")
}

/// The `kube::Config` of the kubeconfig at `path` (retry layer off), namespace `namespace` if given.
pub async fn config_from(path: &Path, namespace: Option<&str>) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("a readable kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("a kube config");
    config.default_retry = false;
    if let Some(namespace) = namespace {
        config.default_namespace = namespace.to_string();
    }
    config
}

impl RealApiServer {
    /// Builds (if needed) and starts a kube-testenv of this test's own, with extra `args` (for
    /// example `-etcd-unsafe-no-fsync`); it stops when dropped.
    pub fn start(args: &[&str]) -> Result<RealApiServer, Unavailable> {
        let bin = bin_dir()?;
        let mut child = Command::new(bin.join("kube-testenv"))
            .arg("-stop-on-stdin-eof")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Unavailable(format!("cannot start kube-testenv: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        if read.is_err() || line.trim().is_empty() {
            let status = child.wait();
            return Err(Unavailable(format!(
                "kube-testenv exited before it was ready ({status:?}); see its output above"
            )));
        }
        let ready: Ready = serde_json::from_str(line.trim())
            .map_err(|e| Unavailable(format!("kube-testenv's ready line {line:?}: {e}")))?;
        Ok(RealApiServer {
            ready,
            bin,
            child: Mutex::new(child),
            users: Mutex::new(HashMap::new()),
            namespaces: AtomicUsize::new(0),
        })
    }

    /// What the harness printed when ready.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.ready.server
    }

    /// The admin's kubeconfig (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.ready.kubeconfig
    }

    /// One of the harness's programs: `kubectl`, `leader-election`, `kube-apiserver`, `kube-testenv`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// `kubectl` as the admin, in `namespace`, with `args`.
    pub fn kubectl_command(&self, namespace: &str, args: &[&str]) -> Command {
        let mut command = Command::new(self.program("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(["-n", namespace])
            .args(args);
        command
    }

    /// Runs [`RealApiServer::kubectl_command`]; panics with its stderr unless it succeeds.
    pub fn kubectl(&self, namespace: &str, args: &[&str]) {
        let output = self
            .kubectl_command(namespace, args)
            .output()
            .expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// An admin client, default namespace `namespace`.
    pub async fn admin_client(&self, namespace: &str) -> kube::Client {
        client_from(self.admin_kubeconfig(), Some(namespace)).await
    }

    /// The kubeconfig of a client-certificate user `name` in `groups` (made once per process).
    pub fn user_kubeconfig(&self, name: &str, groups: &[&str]) -> PathBuf {
        let key = (
            name.to_string(),
            groups.iter().map(|g| (*g).to_string()).collect::<Vec<_>>(),
        );
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = users.get(&key) {
            return path.clone();
        }
        let mut command = Command::new(self.program("kube-testenv"));
        command.args(["user", "-dir"]).arg(&self.ready.dir);
        command.args(["-name", name]);
        for group in groups {
            command.args(["-group", group]);
        }
        let output = command.output().expect("run kube-testenv user");
        assert!(
            output.status.success(),
            "kube-testenv user {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim().to_string());
        users.insert(key, path.clone());
        path
    }

    /// `kubeconfig` (a path) rewritten into `dir/name` with `namespace` as its context's namespace.
    pub fn kubeconfig_in_namespace(
        &self,
        kubeconfig: &Path,
        dir: &Path,
        name: &str,
        namespace: &str,
    ) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).expect("read a kubeconfig");
        let text = text.replace("namespace: default", &format!("namespace: {namespace}"));
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a kubeconfig");
        path
    }

    /// A kubeconfig at `dir/name` that authenticates with the bearer `token` (a ServiceAccount's),
    /// trusting the harness's CA, namespace `namespace`.
    pub fn token_kubeconfig(
        &self,
        dir: &Path,
        name: &str,
        token: &str,
        namespace: &str,
    ) -> PathBuf {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "kube-testenv", "cluster": {
                "server": self.server(),
                "certificate-authority": self.ready.ca,
            }}],
            "users": [{ "name": "token", "user": { "token": token } }],
            "contexts": [{ "name": "kube-testenv", "context": {
                "cluster": "kube-testenv", "user": "token", "namespace": namespace,
            }}],
            "current-context": "kube-testenv",
        });
        let path = dir.join(name);
        std::fs::write(&path, config.to_string()).expect("write a kubeconfig");
        path
    }

    /// Creates a namespace of its own for one test: `PREFIX-N-PID`, within 63 characters.
    pub async fn create_namespace(&self, prefix: &str) -> String {
        self.create_namespace_as(&self.admin_client("default").await, prefix)
            .await
    }

    /// [`RealApiServer::create_namespace`] from synchronous code.
    pub fn create_namespace_blocking(&self, prefix: &str) -> String {
        self.with_admin(|admin| async move { self.create_namespace_as(&admin, prefix).await })
    }

    async fn create_namespace_as(&self, admin: &kube::Client, prefix: &str) -> String {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let mut prefix = dns_label(prefix);
        prefix.truncate(40);
        let name = format!("{}-{n}-{}", prefix.trim_matches('-'), std::process::id());
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create a test namespace");
        name
    }

    /// A real ServiceAccount token (`TokenRequest`, one hour) for `namespace/name`, creating the
    /// ServiceAccount if needed.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let accounts: Api<ServiceAccount> =
            Api::namespaced(self.admin_client(namespace).await, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("create ServiceAccount {namespace}/{name}: {error}"),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                bound_object_ref: None,
            },
            ..TokenRequest::default()
        };
        let issued: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .expect("TokenRequest");
        issued
            .status
            .map(|status| status.token)
            .expect("a token in the TokenRequest's status")
    }

    /// Runs `f` with an admin client on a thread of its own and waits (for synchronous helpers).
    pub fn with_admin<T, F, Fut>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce(kube::Client) -> Fut + Send,
        Fut: Future<Output = T>,
    {
        on_side_runtime(self.admin_kubeconfig().to_path_buf(), f)
    }

    /// Every audit event so far (the harness logs, at the Metadata level, requests on leases,
    /// configmaps, events, jobs, tokens and access reviews; one line per stage after the request was
    /// received).
    pub fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.ready.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for RealApiServer {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        // Closing its standard input stops it (kube-apiserver first, then etcd).
        drop(child.stdin.take());
        for _ in 0..600 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `text` as a DNS label's characters: lower-case alphanumerics, anything else `-`.
pub fn dns_label(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}
