//! The object store: objects keyed by (resource, namespace, name), one global resourceVersion counter (as
//! etcd's revision), a bounded history of changes for watches, and a broadcast of new changes.

use std::collections::{BTreeMap, VecDeque};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::resource::Resource;
use super::status::{ApiError, FieldError};
use super::validate::{check_decoded, validate};

/// The first resourceVersion handed out: well above 0, which clients treat specially.
const FIRST_RESOURCE_VERSION: u64 = 1000;
/// How many unread changes a slow watcher may fall behind before its watch is ended.
const BROADCAST_CAPACITY: usize = 1024;

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

/// One change to the store, as replayed and broadcast to watches.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// The resource type of the object.
    pub resource: Resource,
    /// The namespace of the object.
    pub namespace: String,
    /// The name of the object.
    pub name: String,
    /// What happened.
    pub event: EventType,
    /// The object after the change (for deletes: the last state, with the delete's resourceVersion).
    pub object: Value,
}

/// The stored state of the fake API server.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<(Resource, String, String), Value>,
    history: VecDeque<Change>,
    history_limit: usize,
    /// Every change with a resourceVersion above this is still in `history`.
    floor: u64,
    changes: broadcast::Sender<Change>,
    uids: u64,
}

// === impl EventType ===

impl EventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

// === impl Store ===

impl Store {
    /// An empty store that keeps the last `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Store {
        Store {
            rv: FIRST_RESOURCE_VERSION,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            floor: FIRST_RESOURCE_VERSION,
            changes: broadcast::channel(BROADCAST_CAPACITY).0,
            uids: 0,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may still start from.
    pub fn oldest_watchable(&self) -> u64 {
        self.floor
    }

    /// Reads one object.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Lists the objects of `resource` in `namespace` (optionally only `name`), with the current version.
    pub fn list(
        &self,
        resource: Resource,
        namespace: &str,
        name: Option<&str>,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|((r, ns, n), _)| {
                *r == resource && ns == namespace && name.is_none_or(|name| name == n)
            })
            .map(|(_, object)| object.clone())
            .collect();
        (items, self.rv)
    }

    /// Creates an object (POST).
    pub fn create(
        &mut self,
        resource: Resource,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        check_namespace(&mut object, namespace)?;
        if !object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created".to_owned(),
            ));
        }
        self.generate_name(&mut object);
        validate(resource, &object)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self.objects.contains_key(&key(resource, namespace, &name)) {
            return Err(ApiError::already_exists(resource, &name));
        }
        self.stamp_new(resource, &mut object);
        Ok(self.write(resource, namespace, &name, EventType::Added, object))
    }

    /// Replaces an object (PUT). Returns the stored object and whether the update created it.
    pub fn update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<(Value, bool), ApiError> {
        let body_name = object["metadata"]["name"].as_str().unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        check_namespace(&mut object, namespace)?;
        let Some(old) = self.objects.get(&key(resource, namespace, name)).cloned() else {
            return self.create_on_update(resource, namespace, name, object);
        };
        let sent = parse_resource_version(&object["metadata"]["resourceVersion"])?;
        if sent == 0 {
            let error = FieldError::invalid(
                "metadata.resourceVersion",
                "0x0",
                "must be specified for an update",
            );
            return Err(ApiError::invalid(
                resource,
                &resource.qualified_resource(),
                name,
                vec![error],
            ));
        }
        if Some(sent)
            != old["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
        {
            return Err(ApiError::conflict(resource, name));
        }
        carry_over_metadata(resource, &old, &mut object, name)?;
        validate(resource, &object)?;
        if object == old {
            // etcd skips a write whose bytes are unchanged: no new resourceVersion, no watch event.
            return Ok((old, false));
        }
        Ok((
            self.write(resource, namespace, name, EventType::Modified, object),
            false,
        ))
    }

    /// Applies a JSON merge patch (RFC 7386) to an existing object. A `metadata.resourceVersion` in the
    /// patch is a precondition, as on the real server.
    pub fn merge_patch(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let mut object = self.get(resource, namespace, name)?;
        let current = object["metadata"]["resourceVersion"].clone();
        let wanted = &patch["metadata"]["resourceVersion"];
        if !wanted.is_null() && *wanted != current {
            return Err(ApiError::conflict(resource, name));
        }
        apply_merge_patch(&mut object, patch);
        check_decoded(resource, &object)?;
        object["metadata"]["resourceVersion"] = current;
        self.update(resource, namespace, name, object)
            .map(|(object, _)| object)
    }

    /// Deletes an object (DELETE), honouring `DeleteOptions.preconditions` (uid, resourceVersion).
    pub fn delete(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let old = self.get(resource, namespace, name)?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let wanted = &options["preconditions"][field];
            let actual = &old["metadata"][field];
            if !wanted.is_null() && wanted != actual {
                let cause = format!(
                    "Precondition failed: {label} in precondition: {}, {label} in object meta: {}",
                    wanted.as_str().unwrap_or_default(),
                    actual.as_str().unwrap_or_default()
                );
                return Err(ApiError::precondition(resource, name, &cause));
            }
        }
        self.write(resource, namespace, name, EventType::Deleted, old.clone());
        let uid = old["metadata"]["uid"].clone();
        Ok(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": { "name": name, "group": resource.group(), "kind": resource.plural(), "uid": uid },
        }))
    }

    /// Forgets the whole history: a watch from any resourceVersion before now gets 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// Starts a watch of `resource` in `namespace`: the changes to replay and a receiver for the new ones,
    /// taken together so that nothing falls between them. `from = None` replays the current objects as
    /// `ADDED` (the real server's behaviour for an unset or `"0"` resourceVersion).
    pub fn watch_from(
        &self,
        resource: Resource,
        namespace: &str,
        from: Option<u64>,
    ) -> Result<(Vec<Change>, broadcast::Receiver<Change>), ApiError> {
        let relevant = |c: &&Change| c.resource == resource && c.namespace == namespace;
        let replay = match from {
            Some(rv) if rv < self.floor => return Err(ApiError::gone(rv, self.floor)),
            Some(rv) => self
                .history
                .iter()
                .filter(|c| c.rv > rv)
                .filter(relevant)
                .cloned()
                .collect(),
            None => self.current_as_added(resource, namespace),
        };
        Ok((replay, self.changes.subscribe()))
    }

    fn current_as_added(&self, resource: Resource, namespace: &str) -> Vec<Change> {
        let (items, _) = self.list(resource, namespace, None);
        items
            .into_iter()
            .map(|object| Change {
                rv: object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0),
                resource,
                namespace: namespace.to_owned(),
                name: object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                event: EventType::Added,
                object,
            })
            .collect()
    }

    fn create_on_update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<(Value, bool), ApiError> {
        if !allow_create_on_update(resource) {
            return Err(ApiError::not_found(resource, name));
        }
        validate(resource, &object)?;
        self.stamp_new(resource, &mut object);
        Ok((
            self.write(resource, namespace, name, EventType::Added, object),
            true,
        ))
    }

    fn generate_name(&mut self, object: &mut Value) {
        let prefix = object["metadata"]["generateName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
            && !prefix.is_empty()
        {
            object["metadata"]["name"] = json!(format!("{prefix}{:05x}", self.rv + 1));
        }
    }

    fn stamp_new(&mut self, resource: Resource, object: &mut Value) {
        self.uids += 1;
        object["kind"] = json!(resource.kind());
        object["apiVersion"] = json!(resource.api_version());
        object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uids));
        object["metadata"]["creationTimestamp"] =
            json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
    }

    /// Commits one change: a new resourceVersion, the object stored (or removed), history and broadcast.
    fn write(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        event: EventType,
        mut object: Value,
    ) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = key(resource, namespace, name);
        if event == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        let change = Change {
            rv: self.rv,
            resource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            event,
            object,
        };
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(evicted) = self.history.pop_front() {
                self.floor = evicted.rv;
            }
        }
        // No receiver means no open watch: nothing to deliver.
        let _ = self.changes.send(change.clone());
        change.object
    }
}

/// Create-on-update as each resource's registry strategy declares it (`AllowCreateOnUpdate`): leases and
/// events allow it, configmaps do not.
fn allow_create_on_update(resource: Resource) -> bool {
    matches!(
        resource,
        Resource::Leases | Resource::CoreEvents | Resource::Events
    )
}

fn key(resource: Resource, namespace: &str, name: &str) -> (Resource, String, String) {
    (resource, namespace.to_owned(), name.to_owned())
}

/// An empty namespace in the body is filled from the URL; a different one is a 400.
fn check_namespace(object: &mut Value, namespace: &str) -> Result<(), ApiError> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match object["metadata"]["namespace"].as_str().unwrap_or_default() {
        "" => object["metadata"]["namespace"] = json!(namespace),
        found if found == namespace => {}
        _ => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .to_owned(),
        )),
    }
    Ok(())
}

fn parse_resource_version(value: &Value) -> Result<u64, ApiError> {
    match value {
        Value::Null => Ok(0),
        Value::String(text) if text.is_empty() => Ok(0),
        Value::String(text) => text.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resource version {text:?}: not an unsigned integer"
            ))
        }),
        other => Err(ApiError::bad_request(format!(
            "metadata.resourceVersion: expected a string, found {other}"
        ))),
    }
}

/// What `rest.BeforeUpdate` does: type meta and creationTimestamp come from the stored object, an empty uid
/// is filled in, a different uid is invalid (immutable field).
fn carry_over_metadata(
    resource: Resource,
    old: &Value,
    object: &mut Value,
    name: &str,
) -> Result<(), ApiError> {
    let old_uid = &old["metadata"]["uid"];
    match &object["metadata"]["uid"] {
        Value::Null => object["metadata"]["uid"] = old_uid.clone(),
        Value::String(uid) if uid.is_empty() => object["metadata"]["uid"] = old_uid.clone(),
        uid if uid == old_uid => {}
        uid => {
            let error = FieldError::invalid("metadata.uid", uid, "field is immutable");
            return Err(ApiError::invalid(
                resource,
                &resource.qualified_kind(),
                name,
                vec![error],
            ));
        }
    }
    object["kind"] = json!(resource.kind());
    object["apiVersion"] = json!(resource.api_version());
    object["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
    Ok(())
}

fn apply_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (field, value) in fields {
            if value.is_null() {
                target.remove(field);
            } else {
                apply_merge_patch(target.entry(field.clone()).or_insert(Value::Null), value);
            }
        }
    }
}
