//! The manifests of `deploy/` agree with leasecron and with each other: the jobs file is the generated
//! ConfigMap, mounted where `--jobs` reads it and never through `subPath`; the example jobs fit the
//! Deployment's lease timings, and its termination grace period covers a clean shutdown under them; the Role
//! names the Lease, the run state, the controls and the jobs ConfigMap the Deployment uses; the controls
//! ConfigMap is shipped without data; the selectors select the pods.
//!
//! `.ci/manifests` validates the same files against the Kubernetes schemas; this checks what no schema can.

use crate::support::repo::{path, yaml};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;
use std::time::Duration;

use leasecron::controls::CONFIG_MAP_SUFFIX;
use leasecron::election::Config;
use leasecron::kubernetes::run_state::STATE_SUFFIX;
use leasecron::runner::OUTPUT_DRAIN_TIMEOUT;
use serde_json::Value;

/// `run`'s default `--lease-name`.
const DEFAULT_LEASE_NAME: &str = "leasecron";
/// The port of `run`'s default `--http-addr` (0.0.0.0:9090).
const DEFAULT_HTTP_PORT: u64 = 9090;
/// How long `run` gives its last Kubernetes Events at shutdown (`app::EVENTS_FLUSH_TIMEOUT`).
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The Deployment's one container.
fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container: leasecron");
    &containers[0]
}

/// The value after `flag` in the container's args.
fn flag<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect();
    let at = args.iter().position(|a| *a == flag)?;
    Some(
        args.get(at + 1)
            .unwrap_or_else(|| panic!("{flag} without a value")),
    )
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// True if `selector` (matchLabels) is not empty and every one of its labels is in `target`.
fn selects(selector: &Value, target: &BTreeMap<String, String>) -> bool {
    let selector = labels(selector);
    !selector.is_empty() && selector.iter().all(|(k, v)| target.get(k) == Some(v))
}

/// The Deployment's lease timings, as `run` would read its args.
fn timings(container: &Value) -> Config {
    let duration = |name, default| {
        flag(container, name).map_or(default, |text| {
            humantime::parse_duration(text).unwrap_or_else(|e| panic!("{name} {text}: {e}"))
        })
    };
    let mut config = Config::with_identity("test");
    config.lease_duration = duration("--lease-duration", config.lease_duration);
    config.renew_deadline = duration("--renew-deadline", config.renew_deadline);
    config.retry_period = duration("--retry-period", config.retry_period);
    config
}

#[test]
fn jobs_are_the_generated_configmap_mounted_as_a_directory() {
    let kustomization = yaml("deploy/core/kustomization.yaml");
    let generator = &kustomization["configMapGenerator"][0];
    let name = generator["name"].as_str().expect("generator name");
    assert_eq!(
        generator["options"]["disableNameSuffixHash"], true,
        "a hashed name turns every jobs edit into a rolling restart"
    );
    let (key, _) = generator["files"][0]
        .as_str()
        .and_then(|f| f.split_once('='))
        .expect("files: [KEY=FILE]");

    let deployment = yaml("deploy/core/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == name)
        .unwrap_or_else(|| panic!("no volume of ConfigMap {name}"));
    let mounts = container(&deployment)["volumeMounts"]
        .as_array()
        .expect("volumeMounts");
    for mount in mounts {
        assert!(
            mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
            "the kubelet never updates a subPath mount: {mount}"
        );
    }
    let mount = mounts
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the jobs volume is mounted");
    let dir = mount["mountPath"].as_str().expect("mountPath");
    assert_eq!(
        flag(container(&deployment), "--jobs"),
        Some(format!("{dir}/{key}").as_str())
    );
}

#[test]
fn the_kustomizations_jobs_file_is_a_copy_of_the_example_at_the_root() {
    // kustomize refuses a file outside the kustomization's directory, a symlink to one included: the
    // example lives at the root, and deploy/core holds a copy of it.
    let root = fs::read(path("jobs.example.yaml")).expect("jobs.example.yaml at the root");
    let copy = fs::read(path("deploy/core/jobs.example.yaml")).expect("the kustomization's copy");
    assert!(
        root == copy,
        "deploy/core/jobs.example.yaml differs from jobs.example.yaml: edit the root one and copy it \
         over (cp jobs.example.yaml deploy/core/)"
    );
}

#[test]
fn the_example_jobs_fit_the_deployments_lease_timings() {
    let deployment = yaml("deploy/core/deployment.yaml");
    let container = container(&deployment);
    let mut args = vec!["validate".to_owned()];
    for name in ["--lease-duration", "--renew-deadline", "--retry-period"] {
        if let Some(value) = flag(container, name) {
            args.extend([name.to_owned(), value.to_owned()]);
        }
    }
    args.push(path("deploy/core/jobs.example.yaml").display().to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_leasecron"))
        .args(&args)
        .output()
        .expect("run leasecron");
    assert!(
        out.status.success(),
        "leasecron {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_termination_grace_period_covers_a_clean_shutdown() {
    let deployment = yaml("deploy/core/deployment.yaml");
    let config = timings(container(&deployment));
    config
        .validate()
        .expect("the Deployment's timings are valid");
    // docs/operations.md "Sizing terminationGracePeriodSeconds": the runs' grace (the largest the timings
    // allow: a live reload may raise a job's grace that far), their output pipes drained, a slot claim in
    // flight and the release (each request bounded by RP), the last Events.
    let shutdown = config.grace_bound()
        + OUTPUT_DRAIN_TIMEOUT
        + 2 * config.retry_period
        + EVENTS_FLUSH_TIMEOUT;
    let period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(period) >= shutdown,
        "terminationGracePeriodSeconds {period} < {shutdown:?}, what a clean shutdown may take"
    );
}

#[test]
fn the_role_names_what_the_deployment_uses() {
    let deployment = yaml("deploy/core/deployment.yaml");
    let lease = flag(container(&deployment), "--lease-name").unwrap_or(DEFAULT_LEASE_NAME);
    let state = format!("{lease}{STATE_SUFFIX}");
    let controls = format!("{lease}{CONFIG_MAP_SUFFIX}");
    let kustomization = yaml("deploy/core/kustomization.yaml");
    let jobs = kustomization["configMapGenerator"][0]["name"]
        .as_str()
        .expect("generator name");
    let role = yaml("deploy/core/role.yaml");
    // Every name the Role grants a resource by.
    let named = |resource: &str| -> BTreeSet<String> {
        let rules = role["rules"].as_array().expect("rules");
        rules
            .iter()
            .filter(|r| r["resources"][0] == resource)
            .flat_map(|r| r["resourceNames"].as_array().cloned().unwrap_or_default())
            .map(|name| name.as_str().expect("a name").to_owned())
            .collect()
    };
    assert_eq!(named("leases"), BTreeSet::from([lease.to_owned()]));
    assert_eq!(
        named("configmaps"),
        BTreeSet::from([state, controls, jobs.to_owned()])
    );

    // The Deployment runs as the ServiceAccount the RoleBinding grants the Role to.
    let account = yaml("deploy/core/serviceaccount.yaml")["metadata"]["name"].clone();
    let binding = yaml("deploy/core/rolebinding.yaml");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        account
    );
    assert_eq!(binding["subjects"][0]["name"], account);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
}

#[test]
fn the_controls_configmap_is_shipped_without_data_under_the_leases_name() {
    let deployment = yaml("deploy/core/deployment.yaml");
    let lease = flag(container(&deployment), "--lease-name").unwrap_or(DEFAULT_LEASE_NAME);
    let kustomization = yaml("deploy/core/kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file"))
        .collect();
    assert!(resources.contains(&"controls.yaml"), "{resources:?}");
    let controls = yaml("deploy/core/controls.yaml");
    assert_eq!(controls["kind"], "ConfigMap");
    assert_eq!(
        controls["metadata"]["name"],
        format!("{lease}{CONFIG_MAP_SUFFIX}").as_str()
    );
    // `kubectl apply` leaves alone the fields a manifest does not name: what operators wrote stays.
    for field in ["data", "binaryData", "immutable"] {
        assert!(controls.get(field).is_none(), "controls.yaml sets {field}");
    }
}

#[test]
fn selectors_select_the_pods_and_the_metrics_port() {
    let deployment = yaml("deploy/core/deployment.yaml");
    let pods = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    let pdb = yaml("deploy/core/pdb.yaml");
    let spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let mut selectors = vec![
        &deployment["spec"]["selector"]["matchLabels"],
        &pdb["spec"]["selector"]["matchLabels"],
    ];
    selectors.extend(spread.iter().map(|c| &c["labelSelector"]["matchLabels"]));
    for selector in selectors {
        assert!(
            selects(selector, &pods),
            "{selector} does not select {pods:?}"
        );
    }

    // Service → pods, on the container's named port, which is --http-addr's.
    let service = yaml("deploy/core/service.yaml");
    assert!(selects(&service["spec"]["selector"], &pods));
    let port = &container(&deployment)["ports"][0];
    assert_eq!(port["containerPort"], DEFAULT_HTTP_PORT);
    assert!(flag(container(&deployment), "--http-addr").is_none());
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(
            container(&deployment)[probe]["httpGet"]["port"],
            port["name"]
        );
    }

    // ServiceMonitor → Service (with the labels kustomize adds), on the Service's port name.
    let mut service_labels = labels(&service["metadata"]["labels"]);
    service_labels.extend(labels(
        &yaml("deploy/core/kustomization.yaml")["labels"][0]["pairs"],
    ));
    let monitor = yaml("deploy/monitoring/servicemonitor.yaml");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service_labels
    ));
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}
