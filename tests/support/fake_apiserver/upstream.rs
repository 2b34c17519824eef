//! Proxy mode: the fake in front of the real API server ([`super::real`]), keeping only its fault
//! injection, its request log and its watch breaker. Every other request is forwarded, and the real
//! server's answer (status, headers, streamed body) goes back unchanged.
//!
//! Clients still authenticate to the proxy with a bearer token, as to the fake. Each token is a real
//! user of that name (a client certificate from the harness's CA, not in any group), and the proxy
//! makes its requests as that user. In the proxy's namespace a user may by default do everything to
//! what the fake serves (leases, configmaps, core and events.k8s.io events), through a Role and
//! RoleBinding `fake-user-TOKEN`; [`Upstream::deny`] and [`Upstream::grant`] rewrite that Role, so RBAC
//! is the real authorizer's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{header, request::Parts, HeaderName, Request};
use axum::response::Response;
use futures_util::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule as RbacRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::faults::{lock, Verb};
use super::rbac::{verb_name, PolicyRule, ALL_VERBS};
use super::real::{client_from, dns_label, RealApiServer};
use super::resource::Resource;
use super::status::ApiError;

/// The largest request body forwarded (the API server's own limit is 3 MiB).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const RESOURCES: [Resource; 4] = [
    Resource::Leases,
    Resource::ConfigMaps,
    Resource::CoreEvents,
    Resource::Events,
];

/// The real server behind the proxy, the namespace of this proxy's test, and one client per token.
pub struct Upstream {
    pub real: Arc<RealApiServer>,
    pub namespace: String,
    clients: AsyncMutex<HashMap<String, kube::Client>>,
    /// Per token, what `deny` took away so far.
    denied: std::sync::Mutex<HashMap<String, BTreeMap<Resource, BTreeSet<&'static str>>>>,
    /// Per token, the rules `grant` limited it to (its Role's rules from then on).
    granted: std::sync::Mutex<HashMap<String, Vec<RbacRule>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("server", &self.real.server())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(real: Arc<RealApiServer>, namespace: String) -> Upstream {
        Upstream {
            real,
            namespace,
            clients: AsyncMutex::new(HashMap::new()),
            denied: std::sync::Mutex::new(HashMap::new()),
            granted: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Forwards one request as the user `token`, ending a watch's stream when `breaker` fires.
    pub async fn forward(
        &self,
        token: &str,
        parts: Parts,
        body: Body,
        watch: bool,
        breaker: CancellationToken,
    ) -> Response {
        let client = match self.client(token).await {
            Ok(client) => client,
            Err(message) => return injected_failure(&message),
        };
        let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
            Ok(bytes) => bytes,
            Err(error) => return injected_failure(&format!("reading the request body: {error}")),
        };
        let uri = parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        );
        let mut request = Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            if forwarded(name) {
                request = request.header(name, value);
            }
        }
        let request = match request.body(kube::client::Body::from(bytes.to_vec())) {
            Ok(request) => request,
            Err(error) => return injected_failure(&format!("building the request: {error}")),
        };
        let response = match client.send(request).await {
            Ok(response) => response,
            Err(error) => {
                return injected_failure(&format!("the real API server did not answer: {error}"))
            }
        };
        let (parts, body) = response.into_parts();
        let body = Body::new(body);
        let body = if watch {
            Body::from_stream(
                body.into_data_stream()
                    .take_until(breaker.cancelled_owned()),
            )
        } else {
            body
        };
        Response::from_parts(parts, body)
    }

    /// The client of the user `token`, made (with its default Role) on first use.
    async fn client(&self, token: &str) -> Result<kube::Client, String> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(token) {
            return Ok(client.clone());
        }
        let real = Arc::clone(&self.real);
        let user = token.to_string();
        let kubeconfig = tokio::task::spawn_blocking(move || real.user_kubeconfig(&user, &[]))
            .await
            .map_err(|e| format!("making user {token}: {e}"))?;
        let rules = self.rules(token);
        let admin = self.real.admin_client(&self.namespace).await;
        apply_role(&admin, &self.namespace, token, rules, None).await;
        let client = client_from(&kubeconfig, Some(&self.namespace)).await;
        clients.insert(token.to_string(), client.clone());
        Ok(client)
    }

    /// The rules of `token`'s Role: what `grant` gave it, or everything on the fake's resources but
    /// what `deny` took away.
    fn rules(&self, token: &str) -> Vec<RbacRule> {
        if let Some(granted) = lock(&self.granted).get(token) {
            return granted.clone();
        }
        let denied = lock(&self.denied);
        let denied = denied.get(token);
        RESOURCES
            .iter()
            .filter_map(|&resource| {
                let taken = denied.and_then(|d| d.get(&resource));
                let verbs: Vec<String> = ALL_VERBS
                    .iter()
                    .map(|&verb| verb_name(verb))
                    .filter(|verb| !taken.is_some_and(|t| t.contains(verb)))
                    .map(str::to_string)
                    .collect();
                (!verbs.is_empty()).then(|| RbacRule {
                    api_groups: Some(vec![resource.group().to_string()]),
                    resources: Some(vec![resource.plural().to_string()]),
                    verbs,
                    ..RbacRule::default()
                })
            })
            .collect()
    }

    /// Takes `verbs` on `resource` away from `token`, and waits until the authorizer says so.
    pub fn deny(&self, token: &str, resource: Resource, verbs: &[Verb]) {
        {
            let mut denied = lock(&self.denied);
            let taken = denied
                .entry(token.to_string())
                .or_default()
                .entry(resource)
                .or_default();
            taken.extend(verbs.iter().map(|&verb| verb_name(verb)));
        }
        let rules = self.rules(token);
        let probe = verbs.first().map(|&verb| Probe {
            group: resource.group().to_string(),
            resource: resource.plural().to_string(),
            verb: verb_name(verb).to_string(),
            name: None,
            allowed: false,
        });
        self.apply_blocking(token, rules, probe);
    }

    /// Limits `token` to `rules` (a Role's) from now on, and waits until the authorizer says so.
    pub fn grant(&self, token: &str, rules: Vec<PolicyRule>) {
        let probe = rules.first().and_then(|rule| {
            Some(Probe {
                group: rule.api_groups.first()?.replace('*', ""),
                resource: rule.resources.first()?.replace('*', "leases"),
                verb: rule.verbs.first()?.replace('*', "get"),
                name: rule.resource_names.first().cloned(),
                allowed: true,
            })
        });
        let rules = rules
            .into_iter()
            .map(|rule| RbacRule {
                api_groups: Some(rule.api_groups),
                resources: Some(rule.resources),
                verbs: rule.verbs,
                resource_names: (!rule.resource_names.is_empty()).then_some(rule.resource_names),
                ..RbacRule::default()
            })
            .collect::<Vec<_>>();
        lock(&self.granted).insert(token.to_string(), rules.clone());
        self.apply_blocking(token, rules, probe);
    }

    fn apply_blocking(&self, token: &str, rules: Vec<RbacRule>, probe: Option<Probe>) {
        let namespace = self.namespace.clone();
        let token = token.to_string();
        self.real.with_admin(move |admin| async move {
            apply_role(&admin, &namespace, &token, rules, probe).await;
        });
    }
}

/// What to ask the authorizer after a Role changed, and the answer to wait for.
struct Probe {
    group: String,
    resource: String,
    verb: String,
    name: Option<String>,
    allowed: bool,
}

/// Writes the Role and RoleBinding `fake-user-TOKEN` in `namespace` (server-side apply), then waits
/// until a SubjectAccessReview for `probe` gives the expected answer (RBAC reads Roles through an
/// informer, so a change takes a moment to apply).
async fn apply_role(
    admin: &kube::Client,
    namespace: &str,
    token: &str,
    rules: Vec<RbacRule>,
    probe: Option<Probe>,
) {
    let name = format!("fake-user-{}", dns_label(token));
    let params = PatchParams::apply("leasecron-tests").force();
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        rules: Some(rules),
    };
    Api::<Role>::namespaced(admin.clone(), namespace)
        .patch(&name, &params, &Patch::Apply(&role))
        .await
        .expect("apply a test user's Role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: token.to_string(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .patch(&name, &params, &Patch::Apply(&binding))
        .await
        .expect("apply a test user's RoleBinding");
    let Some(probe) = probe else { return };
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(token.to_string()),
            groups: Some(vec!["system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(probe.group),
                resource: Some(probe.resource),
                verb: Some(probe.verb),
                namespace: Some(namespace.to_string()),
                name: probe.name,
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    for _ in 0..200 {
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("a SubjectAccessReview");
        if answer.status.is_some_and(|s| s.allowed == probe.allowed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("RBAC for {token} in {namespace} did not take effect within 5 s");
}

/// The headers passed on: not the proxy's own credentials or hop-by-hop headers.
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION | header::HOST | header::CONNECTION | header::CONTENT_LENGTH
    ) && name.as_str() != "keep-alive"
}

/// A request the proxy itself could not complete: a 500 Status, as the fake's injected failures.
fn injected_failure(message: &str) -> Response {
    eprintln!("fake_apiserver proxy: {message}");
    super::http::json_response(500, &ApiError::injected(500).body())
}
