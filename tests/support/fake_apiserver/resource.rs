//! The resources the fake serves and how their URLs map onto them.

/// A resource type the fake API server stores (all namespaced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `coordination.k8s.io/v1` leases.
    Leases,
    /// `v1` configmaps.
    ConfigMaps,
    /// `v1` (core) events.
    CoreEvents,
    /// `events.k8s.io/v1` events.
    Events,
}

/// A parsed request path: the resource, its namespace and, for single-object routes, the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The resource type.
    pub resource: Resource,
    /// The namespace in the URL.
    pub namespace: String,
    /// The object name, absent for collection routes (list, watch, create).
    pub name: Option<String>,
}

// === impl Resource ===

impl Resource {
    /// The resource with this API group and plural name, if the fake serves it.
    pub fn from_group_and_plural(group: &str, plural: &str) -> Option<Resource> {
        [
            Resource::Leases,
            Resource::ConfigMaps,
            Resource::CoreEvents,
            Resource::Events,
        ]
        .into_iter()
        .find(|r| r.group() == group && r.plural() == plural)
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Resource::Leases => "coordination.k8s.io",
            Resource::ConfigMaps | Resource::CoreEvents => "",
            Resource::Events => "events.k8s.io",
        }
    }

    /// The `apiVersion` of the objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Leases => "coordination.k8s.io/v1",
            Resource::ConfigMaps | Resource::CoreEvents => "v1",
            Resource::Events => "events.k8s.io/v1",
        }
    }

    /// The `kind` of the objects.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Leases => "Lease",
            Resource::ConfigMaps => "ConfigMap",
            Resource::CoreEvents | Resource::Events => "Event",
        }
    }

    /// The plural name used in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Leases => "leases",
            Resource::ConfigMaps => "configmaps",
            Resource::CoreEvents | Resource::Events => "events",
        }
    }

    /// The URL path of one object.
    pub fn object_path(self, namespace: &str, name: &str) -> String {
        let prefix = match self.group() {
            "" => "/api/v1".to_string(),
            group => format!("/apis/{group}/v1"),
        };
        format!("{prefix}/namespaces/{namespace}/{}/{name}", self.plural())
    }

    /// `plural.group` as the API server prints it in messages (`leases.coordination.k8s.io`, `configmaps`).
    pub fn qualified_resource(self) -> String {
        qualify(self.plural(), self.group())
    }

    /// `Kind.group` as the API server prints it in validation messages (`Lease.coordination.k8s.io`).
    pub fn qualified_kind(self) -> String {
        qualify(self.kind(), self.group())
    }

    /// `Kind.group` of the internal type, as validation errors name it: events of either API are the
    /// internal core `Event`.
    pub fn qualified_internal_kind(self) -> String {
        match self {
            Resource::CoreEvents | Resource::Events => "Event".to_owned(),
            other => other.qualified_kind(),
        }
    }

    /// Whether the real API server watches this resource through its watch cache (events have none:
    /// `DefaultWatchCacheSizes` turns it off), which decides how a too old resourceVersion is refused.
    pub fn watch_cached(self) -> bool {
        matches!(self, Resource::Leases | Resource::ConfigMaps)
    }

    fn from_route(group: &str, version: &str, plural: &str) -> Option<Resource> {
        match (group, version, plural) {
            ("coordination.k8s.io", "v1", "leases") => Some(Resource::Leases),
            ("", "v1", "configmaps") => Some(Resource::ConfigMaps),
            ("", "v1", "events") => Some(Resource::CoreEvents),
            ("events.k8s.io", "v1", "events") => Some(Resource::Events),
            _ => None,
        }
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_owned()
    } else {
        format!("{name}.{group}")
    }
}

/// Parses `/api/v1/namespaces/{ns}/{plural}[/{name}]` and
/// `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]`; anything else is `None`.
pub fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", rest @ ..] => ("", rest),
        ["apis", group, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (version, namespace, plural, name) = match rest {
        [version, "namespaces", ns, plural] => (*version, *ns, *plural, None),
        [version, "namespaces", ns, plural, name] => (*version, *ns, *plural, Some(*name)),
        _ => return None,
    };
    if namespace.is_empty() || name == Some("") {
        return None;
    }
    Some(Target {
        resource: Resource::from_route(group, version, plural)?,
        namespace: namespace.to_owned(),
        name: name.map(str::to_owned),
    })
}
