//! `deploy/core` on a real kube-apiserver (tools/kube-testenv), and the Role it ships against what
//! `leasecron run` really asks of the API server.
//!
//! `kubectl apply --server-side -k deploy/core -n NS` into a fresh namespace: every object is accepted
//! (the Deployment too; no pod runs, there is no kubelet), and the RoleBinding binds the Role to the
//! ServiceAccount of that namespace. Then three `leasecron run` processes authenticate as that
//! ServiceAccount with tokens from `TokenRequest`, straight to kube-apiserver (no proxy), so the Role and
//! the real RBAC authorizer are all that limits them. They use the lease timings of the applied
//! Deployment. r1 reads the jobs from a file, as the Deployment's mounted ConfigMap; r2 and r3 read
//! the shipped ConfigMap through the API (`--jobs-configmap`). They go through an election, runs that
//! write the run state, Events, a live edit of the ConfigMap, a handover (SIGTERM to the leader) and a
//! shutdown. Then, from the API server's audit log (every request by the ServiceAccount, with the
//! authorizer's decision and reason):
//!
//! - no request was refused, and each was allowed by the shipped RoleBinding and Role (the start-up
//!   `SelfSubjectAccessReview`s excepted: the default `system:basic-user` binding allows those);
//! - every grant of the Role, on every name it grants it for, was used: a grant nothing uses fails here,
//!   to be removed from `deploy/core/role.yaml` and from the docs that list the rules.
//!
//! And each rule is needed: without any one of them, `run` refuses to start and names it (Events
//! excepted: without them `run` warns and carries on). And README.md lists the Role's rules as they are.
//! And what operators write into the shipped controls ConfigMap survives a new apply of `deploy/core`.

use crate::support::fake_apiserver::real as real_apiserver;
use crate::support::replica;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use real_apiserver::RealApiServer;
use replica::{wait_for, Replica};
use serde_json::{json, Value};

/// The kustomization under test.
const CORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/core");
const ROLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/core/role.yaml");
/// The ServiceAccount the Deployment runs as (checked against the applied Deployment).
const ACCOUNT: &str = "leasecron";
/// How long a step may take: the shipped jobs' first run (every 10 s) included.
const WAIT: Duration = Duration::from_secs(60);

/// One request, or one grant, as RBAC decides on it: (API group, plural resource, verb, object name).
type Access = (String, String, String, Option<String>);

/// `deploy/core` (or a copy of it) applied into a namespace of its own on the real API server.
struct Installation {
    real: Arc<RealApiServer>,
    namespace: String,
}

impl Installation {
    /// `kubectl apply --server-side -k KUSTOMIZATION -n NS` into a fresh namespace, and waits until
    /// the authorizer knows the RoleBinding (the ServiceAccount may `probe`, a `kubectl auth can-i`
    /// verb and resource).
    fn apply(
        real: Arc<RealApiServer>,
        kustomization: &Path,
        prefix: &str,
        probe: [&str; 2],
    ) -> Installation {
        let namespace = real.create_namespace_blocking(prefix);
        let installation = Installation { real, namespace };
        let applied = installation.kubectl_ok(&[
            "apply",
            "--server-side",
            "-k",
            kustomization.to_str().expect("a UTF-8 path"),
        ]);
        eprintln!(
            "kubectl apply --server-side -k {}:\n{applied}",
            kustomization.display()
        );
        let subject = installation.username();
        wait_for(WAIT, || {
            let output =
                installation.kubectl(&["auth", "can-i", probe[0], probe[1], "--as", &subject]);
            output.status.success().then_some(())
        })
        .unwrap_or_else(|| panic!("{subject} never got {probe:?} from the applied RoleBinding"));
        installation
    }

    /// `kubectl ARGS -n NS` as the administrator.
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.real.program("kubectl"))
            .arg("--kubeconfig")
            .arg(self.real.admin_kubeconfig())
            .args(["-n", &self.namespace])
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// [`Installation::kubectl`], which must succeed; its standard output.
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// `kubectl get ARGS -o json`, parsed.
    fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).expect("kubectl's JSON")
    }

    /// The ServiceAccount's user name, as the audit log and RBAC know it.
    fn username(&self) -> String {
        format!("system:serviceaccount:{}:{ACCOUNT}", self.namespace)
    }

    /// A kubeconfig at `dir/NAME.kubeconfig` with a token of its own (`TokenRequest`) for the
    /// ServiceAccount: direct TLS to kube-apiserver, as a pod's projected token.
    fn token_kubeconfig(&self, dir: &Path, name: &str) -> PathBuf {
        let real = Arc::clone(&self.real);
        let namespace = self.namespace.clone();
        let token = self
            .real
            .with_admin(|_| async move { real.service_account_token(&namespace, ACCOUNT).await });
        self.real
            .token_kubeconfig(dir, &format!("{name}.kubeconfig"), &token, &self.namespace)
    }

    /// Every request the ServiceAccount made so far, one per audit ID (its last stage).
    fn requests(&self) -> Vec<AuditedRequest> {
        let user = self.username();
        let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
        for event in self.real.audit_events() {
            if event["user"]["username"] == user.as_str() {
                let id = event["auditID"].as_str().expect("an auditID").to_owned();
                by_id.insert(id, event);
            }
        }
        by_id.into_values().map(AuditedRequest::of).collect()
    }

    /// The Lease's holder (`""` once released).
    fn holder(&self, lease: &str) -> Option<String> {
        let lease = self.get(&["lease", lease]);
        lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
    }
}

/// One request of the audit log.
#[derive(Debug)]
struct AuditedRequest {
    access: Access,
    namespace: Option<String>,
    code: Option<u64>,
    decision: Option<String>,
    reason: Option<String>,
    /// Shown in failure messages.
    #[allow(dead_code)]
    uri: String,
}

impl AuditedRequest {
    fn of(event: Value) -> AuditedRequest {
        let object = &event["objectRef"];
        let text = |value: &Value| value.as_str().map(str::to_owned);
        AuditedRequest {
            access: (
                text(&object["apiGroup"]).unwrap_or_default(),
                text(&object["resource"]).unwrap_or_default(),
                text(&event["verb"]).unwrap_or_default(),
                text(&object["name"]),
            ),
            namespace: text(&object["namespace"]),
            code: event["responseStatus"]["code"].as_u64(),
            decision: text(&event["annotations"]["authorization.k8s.io/decision"]),
            reason: text(&event["annotations"]["authorization.k8s.io/reason"]),
            uri: text(&event["requestURI"]).unwrap_or_default(),
        }
    }

    /// A `SelfSubjectAccessReview`: `run`'s start-up checks, which every authenticated user may make.
    fn is_access_review(&self) -> bool {
        self.access.0 == "authorization.k8s.io" && self.access.1 == "selfsubjectaccessreviews"
    }
}

fn read_yaml(path: &str) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// The rules of `deploy/core/role.yaml`.
fn role_rules() -> Vec<Value> {
    let role = read_yaml(ROLE);
    assert_eq!(role["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert_eq!(
        role["kind"], "Role",
        "namespaced: a Role, not a ClusterRole"
    );
    role["rules"].as_array().expect("the Role's rules").clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every (group, resource, verb, name) a rule grants, `None` standing for "any name".
fn grants(rules: &[Value]) -> BTreeSet<Access> {
    let mut grants = BTreeSet::new();
    for rule in rules {
        let names: Vec<Option<String>> = match strings(&rule["resourceNames"]) {
            names if names.is_empty() => vec![None],
            names => names.into_iter().map(Some).collect(),
        };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for name in &names {
                        grants.insert((
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

/// `verb resource.group[/name]`, as a message shows an access.
fn shown((group, resource, verb, name): &Access) -> String {
    let name = name
        .as_ref()
        .map(|name| format!("/{name}"))
        .unwrap_or_default();
    match group.as_str() {
        "" => format!("{verb} {resource}{name}"),
        group => format!("{verb} {resource}.{group}{name}"),
    }
}

/// Whether `request` is an instance of `grant`.
fn uses(request: &Access, grant: &Access) -> bool {
    request.0 == grant.0
        && request.1 == grant.1
        && request.2 == grant.2
        && (grant.3.is_none() || request.3 == grant.3)
}

/// What the applied Deployment's container runs with: its `run` arguments and the jobs ConfigMap it
/// mounts.
struct Deployed {
    args: Vec<String>,
    jobs_config_map: String,
}

impl Deployed {
    fn of(deployment: &Value) -> Deployed {
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            pod["serviceAccountName"], ACCOUNT,
            "the pods run as {ACCOUNT}"
        );
        let args = strings(&pod["containers"][0]["args"]);
        assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
        let jobs_config_map = pod["volumes"]
            .as_array()
            .expect("the pod has volumes")
            .iter()
            .find_map(|volume| volume["configMap"]["name"].as_str())
            .expect("a ConfigMap volume")
            .to_owned();
        Deployed {
            args,
            jobs_config_map,
        }
    }

    fn flag(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|arg| arg == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }

    fn lease_name(&self) -> &str {
        self.flag("--lease-name").unwrap_or("leasecron")
    }

    /// The election flags the Deployment passes (the lease timings and name).
    fn election_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for flag in [
            "--lease-name",
            "--lease-duration",
            "--renew-deadline",
            "--retry-period",
        ] {
            if let Some(value) = self.flag(flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        args
    }
}

/// Starts a replica as the ServiceAccount (a token of its own), in the installation's namespace, with
/// the Deployment's election flags and the jobs from `source`.
fn start_replica(
    installation: &Installation,
    deployed: &Deployed,
    dir: &Path,
    identity: &str,
    source: &[&str],
) -> Replica {
    let kubeconfig = installation.token_kubeconfig(dir, identity);
    let mut extra = vec![
        "--lease-namespace".to_owned(),
        installation.namespace.clone(),
    ];
    extra.extend(deployed.election_args());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Replica::start_on_kube_with(dir, identity, source, &kubeconfig, &extra)
}

/// The jobs of `/status`, by name.
fn job_names(status: &Value) -> BTreeSet<String> {
    status["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter_map(|job| job["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `replica` leads and has finished a run of job `job` itself (not one the run state records).
fn ran(replica: &Replica, job: &str) -> bool {
    replica.status().is_some_and(|s| {
        s["leading"] == true
            && s["jobs"].as_array().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j["name"] == job && j["last_run"]["source"] == "this_replica")
            })
    })
}

/// A job firing every second, appended to the shipped jobs by the live edit.
const TICK: &str = "  - name: tick\n    schedule: \"* * * * * *\"\n    command: [\"true\"]\n";

#[test]
fn deploy_core_applies_and_three_replicas_use_every_grant_of_its_role_and_nothing_else() {
    let Some(real) = real_apiserver::shared() else {
        return;
    };
    let installation = Installation::apply(
        real,
        Path::new(CORE),
        "real-rbac",
        ["get", "leases.coordination.k8s.io/leasecron"],
    );
    let ns = installation.namespace.clone();

    // What the apply created: every object of the kustomization, in the namespace.
    let applied = installation.get(&["-k", CORE]);
    let objects: BTreeSet<(String, String)> = applied["items"]
        .as_array()
        .expect("kubectl get -k lists the objects")
        .iter()
        .map(|object| {
            assert_eq!(object["metadata"]["namespace"], ns.as_str(), "{object}");
            (
                object["kind"].as_str().expect("a kind").to_owned(),
                object["metadata"]["name"]
                    .as_str()
                    .expect("a name")
                    .to_owned(),
            )
        })
        .collect();
    for expected in [
        ("ServiceAccount", ACCOUNT),
        ("Role", "leasecron"),
        ("RoleBinding", "leasecron"),
        ("ConfigMap", "leasecron-jobs"),
        ("ConfigMap", "leasecron-controls"),
        ("Deployment", "leasecron"),
    ] {
        assert!(
            objects.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not created by the apply: {objects:?}"
        );
    }
    let role = installation.get(&["role", "leasecron"]);
    assert_eq!(
        role["rules"],
        Value::Array(role_rules()),
        "the server holds the Role of {ROLE}"
    );
    let rules = role_rules();
    let deployed = Deployed::of(&installation.get(&["deployment", "leasecron"]));
    let lease = deployed.lease_name().to_owned();
    let shipped_jobs = installation.get(&["configmap", &deployed.jobs_config_map])["data"]
        ["jobs.yaml"]
        .as_str()
        .expect("the shipped ConfigMap has jobs.yaml")
        .to_owned();

    // r1 reads the jobs from a file, as the Deployment's pods do from the mounted ConfigMap.
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs_file = dir.path().join("jobs.yaml");
    fs::write(&jobs_file, &shipped_jobs).expect("write the jobs file");
    let jobs_file = jobs_file.to_str().expect("a UTF-8 path").to_owned();
    let mut r1 = start_replica(
        &installation,
        &deployed,
        dir.path(),
        "r1",
        &["--jobs", &jobs_file],
    );
    wait_for(WAIT, || ran(&r1, "heartbeat").then_some(()))
        .unwrap_or_else(|| panic!("r1 never led and ran heartbeat: {}", r1.log_text()));
    let shipped_names = job_names(&r1.status().expect("r1's status"));

    // r2 and r3 read the shipped ConfigMap through the API, and follow r1.
    let source = ["--jobs-configmap", deployed.jobs_config_map.as_str()];
    let mut followers: Vec<Replica> = ["r2", "r3"]
        .into_iter()
        .map(|identity| start_replica(&installation, &deployed, dir.path(), identity, &source))
        .collect();
    for follower in &followers {
        wait_for(WAIT, || {
            follower.status().filter(|s| {
                s["holder"] == "r1" && s["leading"] == false && job_names(s) == shipped_names
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{} never followed r1: {}",
                follower.identity,
                follower.log_text()
            )
        });
    }

    // A live edit of the ConfigMap reaches r2 and r3 through their watches.
    let edited = format!("{}\n{TICK}", shipped_jobs.trim_end());
    installation.kubectl_ok(&[
        "patch",
        "configmap",
        &deployed.jobs_config_map,
        "--type",
        "merge",
        "-p",
        &json!({ "data": { "jobs.yaml": edited } }).to_string(),
    ]);
    for follower in &followers {
        wait_for(WAIT, || {
            follower.status().filter(|s| {
                job_names(s).contains("tick") && job_names(s).len() == shipped_names.len() + 1
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{} never applied the edit: {}",
                follower.identity,
                follower.log_text()
            )
        });
    }

    // The handover: SIGTERM to the leader; r2 or r3 takes over and runs the edited jobs.
    r1.stop_cleanly();
    let leader =
        wait_for(WAIT, || followers.iter().position(|f| ran(f, "tick"))).unwrap_or_else(|| {
            panic!(
                "neither follower took over and ran tick: {}\n{}",
                followers[0].log_text(),
                followers[1].log_text()
            )
        });
    let mut leader = followers.remove(leader);
    let mut follower = followers.pop().expect("the other follower");
    assert_eq!(
        installation.holder(&lease).as_deref(),
        Some(leader.identity.as_str())
    );
    wait_for(WAIT, || {
        follower
            .status()
            .filter(|s| s["holder"] == leader.identity.as_str() && s["leading"] == false)
    })
    .unwrap_or_else(|| {
        panic!(
            "{} never followed the new leader: {}",
            follower.identity,
            follower.log_text()
        )
    });

    // The run state records both terms' runs; Events record both leaderships.
    let state = installation.get(&["configmap", &format!("{lease}-state")]);
    let state: Value = serde_json::from_str(
        state["data"]["state.json"]
            .as_str()
            .expect("the run state's state.json"),
    )
    .expect("the run state's JSON");
    assert_eq!(
        state["jobs"]["tick"]["lastStarted"]["identity"],
        leader.identity.as_str(),
        "{state}"
    );
    assert!(
        state["jobs"]["heartbeat"]["lastStarted"].is_object(),
        "{state}"
    );
    let notes: Vec<String> = installation.get(&["events.events.k8s.io"])["items"]
        .as_array()
        .expect("the Events")
        .iter()
        .filter(|event| event["reason"] == "LeaderElection")
        .filter_map(|event| event["note"].as_str().map(str::to_owned))
        .collect();
    for identity in ["r1", leader.identity.as_str()] {
        assert!(
            notes
                .iter()
                .any(|note| note.starts_with(&format!("{identity} became leader"))),
            "no LeaderElection Event for {identity}: {notes:?}"
        );
    }

    // Shutdown: the follower, then the leader, which releases the Lease.
    follower.stop_cleanly();
    leader.stop_cleanly();
    assert_eq!(
        installation.holder(&lease).as_deref(),
        Some(""),
        "the Lease was released at shutdown"
    );

    // The audit log: every request of the ServiceAccount, allowed by the shipped Role.
    let requests = installation.requests();
    let mut counts: BTreeMap<(String, Option<u64>), usize> = BTreeMap::new();
    for request in &requests {
        let (group, resource, verb, name) = &request.access;
        // A created object's name is in the body: RBAC decides without it.
        let name = if verb == "create" { None } else { name.clone() };
        let access = shown(&(group.clone(), resource.clone(), verb.clone(), name));
        *counts.entry((access, request.code)).or_default() += 1;
    }
    eprintln!(
        "requests by {} (audit log), by verb, resource and name, and response code:",
        installation.username()
    );
    for ((access, code), count) in &counts {
        let code = code.map(|code| code.to_string()).unwrap_or_default();
        eprintln!("  {count:5}  {access} -> {code}");
    }
    assert!(
        !requests.is_empty(),
        "no request by {} in the audit log",
        installation.username()
    );
    let refused: Vec<&AuditedRequest> = requests
        .iter()
        .filter(|r| matches!(r.code, Some(401 | 403)) || r.decision.as_deref() != Some("allow"))
        .collect();
    assert!(refused.is_empty(), "refused requests: {refused:#?}");
    let by_role = format!(
        "RBAC: allowed by RoleBinding \"leasecron/{ns}\" of Role \"leasecron\" to ServiceAccount \"{ACCOUNT}/{ns}\""
    );
    let by_basic_user = "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \
                         \"system:basic-user\" to Group \"system:authenticated\"";
    for request in &requests {
        if request.is_access_review() {
            assert_eq!(
                request.reason.as_deref(),
                Some(by_basic_user),
                "{request:#?}"
            );
        } else {
            assert_eq!(
                request.namespace.as_deref(),
                Some(ns.as_str()),
                "{request:#?}"
            );
            assert_eq!(
                request.reason.as_deref(),
                Some(by_role.as_str()),
                "a request not allowed by the shipped Role: {request:#?}"
            );
        }
    }
    let used: BTreeSet<Access> = requests
        .iter()
        .filter(|r| !r.is_access_review())
        .map(|r| r.access.clone())
        .collect();
    let granted = grants(&rules);
    for request in &used {
        assert!(
            granted.iter().any(|grant| uses(request, grant)),
            "{request:?} is used but not granted by {ROLE}"
        );
    }
    let unused: Vec<String> = granted
        .iter()
        .filter(|grant| !used.iter().any(|request| uses(request, grant)))
        .map(shown)
        .collect();
    let used_shown: BTreeSet<String> = used
        .iter()
        .map(|(group, resource, verb, name)| {
            // A created object's name is in the body: RBAC decides without it.
            let name = if verb == "create" { None } else { name.clone() };
            shown(&(group.clone(), resource.clone(), verb.clone(), name))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "grants of {ROLE} that three replicas never used through election, runs, Events, a live edit, \
         a handover and shutdown: {unused:?}. Remove them from the Role (and from the rules listed in \
         README.md and docs/operations.md), or make this scenario use them if leasecron needs them. \
         Used: {used_shown:?}"
    );
    for name in [
        lease.clone(),
        format!("{lease}-state"),
        format!("{lease}-controls"),
        deployed.jobs_config_map.clone(),
    ] {
        assert!(
            used.iter()
                .any(|access| access.3.as_deref() == Some(name.as_str())),
            "{name} was never accessed by name"
        );
    }

    // The controls ConfigMap ships without data: what operators write there survives the next
    // `kubectl apply` of deploy/core.
    let controls = format!("{lease}-controls");
    let written = json!({
        "format": 1,
        "suspended": {"heartbeat": {"note": "maintenance", "by": "alice",
                                    "at": "2027-01-15T08:00:00Z", "request": "r0"}},
    })
    .to_string();
    installation.kubectl_ok(&[
        "patch",
        "configmap",
        &controls,
        "--type",
        "merge",
        "-p",
        &json!({ "data": { "controls.json": written } }).to_string(),
    ]);
    // Forced, as a pipeline would (the live edit of the jobs above is taken back): a field no manifest
    // names is still left alone.
    installation.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-k", CORE]);
    assert_eq!(
        installation.get(&["configmap", &controls])["data"]["controls.json"],
        written.as_str(),
        "a new apply of deploy/core kept the operators' controls"
    );
}

/// A copy of `deploy/core` in `dir` whose Role has `rules`.
fn core_with_rules(dir: &Path, rules: &[Value]) -> PathBuf {
    let copy = dir.join("core");
    fs::create_dir(&copy).expect("mkdir");
    for entry in fs::read_dir(CORE).expect("read deploy/core") {
        let entry = entry.expect("an entry");
        fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy deploy/core");
    }
    let mut role = read_yaml(ROLE);
    role["rules"] = Value::Array(rules.to_vec());
    // JSON is YAML: kustomize reads it as it is.
    fs::write(copy.join("role.yaml"), role.to_string()).expect("write the Role");
    copy
}

#[test]
fn without_any_one_rule_run_refuses_to_start_naming_it_or_warns_for_events() {
    let Some(real) = real_apiserver::shared() else {
        return;
    };
    let rules = role_rules();
    for (at, rule) in rules.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rest = rules.clone();
        rest.remove(at);
        // The authorizer knows the Role once it allows one of the remaining rules.
        let probe_rule = &rest[0];
        let resource = match strings(&probe_rule["apiGroups"])[0].as_str() {
            "" => strings(&probe_rule["resources"])[0].clone(),
            group => format!("{}.{group}", strings(&probe_rule["resources"])[0]),
        };
        let resource = match strings(&probe_rule["resourceNames"]).first() {
            Some(name) => format!("{resource}/{name}"),
            None => resource,
        };
        let verb = strings(&probe_rule["verbs"])[0].clone();
        let installation = Installation::apply(
            Arc::clone(&real),
            &core_with_rules(dir.path(), &rest),
            &format!("real-rbac-without-{at}"),
            [&verb, &resource],
        );
        let deployed = Deployed::of(&installation.get(&["deployment", "leasecron"]));
        let source = ["--jobs-configmap", deployed.jobs_config_map.as_str()];
        let mut replica = start_replica(&installation, &deployed, dir.path(), "r", &source);
        if strings(&rule["apiGroups"])
            .iter()
            .any(|group| group == "events.k8s.io")
        {
            wait_for(WAIT, || {
                (replica.log_text().contains("Kubernetes Events disabled")
                    && replica.status().is_some_and(|s| s["leading"] == true))
                .then_some(())
            })
            .unwrap_or_else(|| {
                panic!("no lead and warning without {rule}: {}", replica.log_text())
            });
            replica.stop_cleanly();
            continue;
        }
        let status = replica
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("still running without {rule}: {}", replica.log_text()));
        let log = replica.log_text();
        assert_eq!(status.code(), Some(2), "without {rule}: {log}");
        let resource = strings(&rule["resources"])[0].clone();
        let verb = strings(&rule["verbs"])[0].clone();
        let names_verb =
            log.contains(&format!("may not {verb}")) || log.contains(&format!("\"{verb}\""));
        assert!(
            names_verb && log.contains(&resource),
            "without {rule} the message names the verb and the resource: {log}"
        );
        let lease_writes: Vec<AuditedRequest> = installation
            .requests()
            .into_iter()
            .filter(|r| {
                r.access.1 == "leases" && matches!(r.access.2.as_str(), "create" | "update")
            })
            .collect();
        assert!(
            lease_writes.is_empty(),
            "without {rule}, it tried to take the Lease: {lease_writes:#?}"
        );
    }
}

/// The rules README.md lists are the Role's.
#[test]
fn the_readme_lists_the_rules_of_the_role() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let after = readme
        .split_once("The service account needs these rules")
        .expect("README.md lists the Role's rules")
        .1;
    let block = after
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a yaml block after it")
        .0;
    let listed: Value = serde_saphyr::from_str(block).expect("the README's rules parse");
    assert_eq!(
        listed,
        Value::Array(role_rules()),
        "README.md's rules differ from {ROLE}"
    );
}
