//! The object store: objects keyed by (resource, namespace, name), one global resourceVersion counter (as
//! etcd's revision), a bounded history of changes for watches, and a broadcast of new changes.
//!
//! Writes follow the generic registry's order (kube-apiserver v1.37.2): for an update the body's `uid`
//! is a storage precondition (409), then a missing resourceVersion (422, except for events, whose
//! strategy allows unconditional updates), then a stale one (409), then the strategy's preparation and
//! validation (422); a create validates (422) before etcd refuses a set resourceVersion (500) or an
//! existing name (409).

use std::collections::{BTreeMap, VecDeque};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::resource::Resource;
use super::status::{ApiError, FieldError};
use super::validate::{
    decode_value, fill_defaults, prepare_for_create, prepare_for_update, validate_create,
    validate_update, Decoded,
};

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
    /// The object before the change (none for a create), for watches whose selector it may leave.
    pub previous: Option<Value>,
}

/// What a patch request carries.
#[derive(Clone, Debug)]
pub enum PatchBody {
    /// A JSON merge patch (RFC 7386); a strategic merge patch of these objects is one too.
    Merge(Value),
    /// A JSON patch (RFC 6902).
    Json(Value),
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

    /// Reads one object.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// The objects of `resource` in `namespace` (in name order) that `keep` selects, with the current
    /// version.
    pub fn list(
        &self,
        resource: Resource,
        namespace: &str,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|((r, ns, _), object)| *r == resource && ns == namespace && keep(object))
            .map(|(_, object)| object.clone())
            .collect();
        (items, self.rv)
    }

    /// The objects of `resource` in `namespace` (in name order) that `keep` selects as they were at
    /// resourceVersion `at` (etcd's snapshot read), undoing the later changes from the history; `None`
    /// if the history no longer reaches back to `at` (compacted).
    pub fn list_at(
        &self,
        resource: Resource,
        namespace: &str,
        at: u64,
        keep: impl Fn(&Value) -> bool,
    ) -> Option<Vec<Value>> {
        if at < self.floor {
            return None;
        }
        let mut state: BTreeMap<String, Value> = self
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && ns == namespace)
            .map(|((_, _, name), object)| (name.clone(), object.clone()))
            .collect();
        for change in self.history.iter().rev().take_while(|c| c.rv > at) {
            if change.resource != resource || change.namespace != namespace {
                continue;
            }
            match &change.previous {
                Some(previous) => state.insert(change.name.clone(), previous.clone()),
                None => state.remove(&change.name),
            };
        }
        Some(state.into_values().filter(|object| keep(object)).collect())
    }

    /// Creates an object (POST) from a decoded body.
    pub fn create(
        &mut self,
        resource: Resource,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        check_namespace(&mut object, namespace)?;
        self.generate_name(&mut object);
        prepare_for_create(resource, &mut object);
        validate_create(resource, &object)?;
        if !object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created".to_owned(),
            ));
        }
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

    /// Replaces an object (PUT) with a decoded body. Returns the stored object and whether the update
    /// created it.
    pub fn update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<(Value, bool), ApiError> {
        let body_name = object["metadata"]["name"].as_str().unwrap_or_default();
        if body_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name} based on URL) was undeterminable: name must be provided"
            )));
        }
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        check_namespace(&mut object, namespace)?;
        let Some(old) = self.objects.get(&key(resource, namespace, name)).cloned() else {
            return self.create_on_update(resource, namespace, name, object);
        };
        let old_uid = old["metadata"]["uid"].as_str().unwrap_or_default();
        let sent_uid = object["metadata"]["uid"].as_str().unwrap_or_default();
        if !sent_uid.is_empty() && sent_uid != old_uid {
            return Err(ApiError::uid_precondition(
                resource, namespace, name, sent_uid, old_uid,
            ));
        }
        let current = old["metadata"]["resourceVersion"].clone();
        match parse_resource_version(&object["metadata"]["resourceVersion"])? {
            0 if allow_unconditional_update(resource) => {
                object["metadata"]["resourceVersion"] = current.clone();
            }
            0 => {
                let error = FieldError::invalid(
                    "metadata.resourceVersion",
                    0,
                    "must be specified for an update",
                );
                return Err(ApiError::invalid(
                    resource,
                    &resource.qualified_resource(),
                    name,
                    vec![error],
                ));
            }
            sent if Some(sent) != current.as_str().and_then(|rv| rv.parse().ok()) => {
                return Err(ApiError::conflict(resource, name));
            }
            _ => {}
        }
        carry_over_metadata(&old, &mut object);
        strip_server_fields(&mut object);
        prepare_for_update(resource, &mut object, &old);
        validate_update(resource, &object, &old)?;
        fill_defaults(resource, &mut object);
        if object == old {
            // etcd skips a write whose bytes are unchanged: no new resourceVersion, no watch event.
            return Ok((old, false));
        }
        Ok((
            self.write(resource, namespace, name, EventType::Modified, object),
            false,
        ))
    }

    /// Patches an existing object. A `metadata.resourceVersion` in the result is a precondition, as
    /// on the real server; without one the patch applies to the current version.
    pub fn patch(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch: &PatchBody,
    ) -> Result<Decoded, ApiError> {
        let mut object = self.get(resource, namespace, name)?;
        let current = object["metadata"]["resourceVersion"].clone();
        match patch {
            PatchBody::Merge(patch) => apply_merge_patch(&mut object, patch),
            PatchBody::Json(operations) => apply_json_patch(&mut object, operations)?,
        }
        let wanted = object["metadata"]["resourceVersion"].clone();
        if !wanted.is_null() && wanted != current {
            return Err(ApiError::conflict(resource, name));
        }
        let mut decoded = decode_value(resource, object)?;
        decoded.object["metadata"]["resourceVersion"] = current;
        let (stored, _) = self.update(resource, namespace, name, decoded.object)?;
        decoded.object = stored;
        Ok(decoded)
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
        for (field, label, consequence) in [
            ("uid", "UID", "deleted and then recreated"),
            ("resourceVersion", "ResourceVersion", "modified"),
        ] {
            let wanted = &options["preconditions"][field];
            let actual = old["metadata"][field].as_str().unwrap_or_default();
            if let Some(wanted) = wanted.as_str().filter(|wanted| wanted != &actual) {
                let cause = format!(
                    "the {label} in the precondition ({wanted}) does not match the {label} in record \
                     ({actual}). The object might have been {consequence}"
                );
                return Err(ApiError::delete_precondition(resource, name, &cause));
            }
        }
        self.write(resource, namespace, name, EventType::Deleted, old.clone());
        let uid = old["metadata"]["uid"].clone();
        let mut details = super::status::details(resource.group(), resource.plural(), name);
        details["uid"] = uid;
        Ok(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details,
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
            Some(rv) if rv < self.floor => {
                return Err(if resource.watch_cached() {
                    ApiError::gone(rv, self.floor)
                } else {
                    ApiError::watch_compacted()
                })
            }
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
        let (items, _) = self.list(resource, namespace, |_| true);
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
                previous: None,
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
        prepare_for_create(resource, &mut object);
        validate_create(resource, &object)?;
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
        strip_server_fields(object);
        self.uids += 1;
        object["kind"] = json!(resource.kind());
        object["apiVersion"] = json!(resource.api_version());
        object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uids));
        object["metadata"]["creationTimestamp"] =
            json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
        fill_defaults(resource, object);
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
        let previous = if event == EventType::Deleted {
            self.objects.remove(&key)
        } else {
            self.objects.insert(key, object.clone())
        };
        let change = Change {
            rv: self.rv,
            resource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            event,
            object,
            previous,
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

/// `AllowUnconditionalUpdate`: only the event strategy allows an update without a resourceVersion.
fn allow_unconditional_update(resource: Resource) -> bool {
    matches!(resource, Resource::CoreEvents | Resource::Events)
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

/// What `rest.BeforeUpdate` does: type meta, uid and creationTimestamp come from the stored object.
fn carry_over_metadata(old: &Value, object: &mut Value) {
    for field in ["kind", "apiVersion"] {
        object[field] = old[field].clone();
    }
    for field in ["uid", "creationTimestamp"] {
        object["metadata"][field] = old["metadata"][field].clone();
    }
}

/// Fields the server keeps to itself: the fake keeps no field ownership (`managedFields`), and a client's
/// copy of them is not stored either; `selfLink` is no longer set.
fn strip_server_fields(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("managedFields");
        meta.remove("selfLink");
    }
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

/// Applies a JSON patch (RFC 6902) as the API server's json-patch library does; any failed operation
/// is the real server's 422 with its generic message.
fn apply_json_patch(target: &mut Value, operations: &Value) -> Result<(), ApiError> {
    let rejected = || ApiError {
        code: 422,
        reason: "Invalid",
        message: "the server rejected our request due to an error in our request".to_owned(),
        details: Some(json!({})),
    };
    let operations = operations.as_array().ok_or_else(|| {
        ApiError::bad_request(
            "error decoding patch: json: cannot unmarshal object into Go value of type \
             []handlers.jsonPatchOp"
                .to_owned(),
        )
    })?;
    for operation in operations {
        let text = |field: &str| operation[field].as_str();
        let path = text("path").ok_or_else(rejected)?;
        match text("op").unwrap_or_default() {
            "add" => json_add(target, path, operation["value"].clone()).ok_or_else(rejected)?,
            "remove" => {
                json_remove(target, path).ok_or_else(rejected)?;
            }
            "replace" => {
                json_replace(target, path, operation["value"].clone()).ok_or_else(rejected)?
            }
            "move" => {
                let from = text("from").ok_or_else(rejected)?;
                let value = json_remove(target, from).ok_or_else(rejected)?;
                json_add(target, path, value).ok_or_else(rejected)?;
            }
            "copy" => {
                let from = text("from").ok_or_else(rejected)?;
                let value = target.pointer(from).cloned().ok_or_else(rejected)?;
                json_add(target, path, value).ok_or_else(rejected)?;
            }
            "test" => {
                if target.pointer(path) != Some(&operation["value"]) {
                    return Err(rejected());
                }
            }
            _ => return Err(rejected()),
        }
    }
    Ok(())
}

/// The parent of a JSON pointer and its last token (unescaped).
fn split_pointer(path: &str) -> Option<(&str, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn json_add(target: &mut Value, path: &str, value: Value) -> Option<()> {
    if path.is_empty() {
        *target = value;
        return Some(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent)? {
        Value::Object(fields) => {
            fields.insert(last, value);
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse().ok().filter(|i| *i <= items.len())?
            };
            items.insert(index, value);
        }
        _ => return None,
    }
    Some(())
}

fn json_remove(target: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent)? {
        Value::Object(fields) => fields.remove(&last),
        Value::Array(items) => {
            let index: usize = last.parse().ok().filter(|i| *i < items.len())?;
            Some(items.remove(index))
        }
        _ => None,
    }
}

fn json_replace(target: &mut Value, path: &str, value: Value) -> Option<()> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent)? {
        // The API server's library replaces a missing key of an object as if it were there.
        Value::Object(fields) => {
            fields.insert(last, value);
        }
        Value::Array(items) => {
            let index: usize = last.parse().ok().filter(|i| *i < items.len())?;
            items[index] = value;
        }
        _ => return None,
    }
    Some(())
}
