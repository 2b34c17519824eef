//! The Go types behind the served objects, as far as decoding a request body needs them: which fields
//! exist (others are dropped with a warning, as the API server's default `fieldValidation=Warn` does),
//! their JSON types (a wrong one is a 400 with Go's `json: cannot unmarshal` message), and which empty
//! values Go leaves out when it prints the object back (`omitempty` on a non-pointer field).

/// A struct: its Go type (`v1.LeaseSpec`) and its fields by JSON name.
#[derive(Debug)]
pub struct Schema {
    /// The Go type, package-qualified as Go prints it (`v1.LeaseSpec`).
    pub go_type: &'static str,
    /// The fields, by JSON name.
    pub fields: &'static [(&'static str, Ty)],
}

/// The type of one field.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    /// `string` with `omitempty`: `""` is not printed.
    Str,
    /// `*string` (or `string` without `omitempty`): `""` is kept.
    StrKeep,
    /// `int32` with `omitempty`: `0` is not printed.
    Int32,
    /// `*int32`: `0` is kept.
    Int32Keep,
    /// `int64` with `omitempty`.
    Int64,
    /// `*int64`.
    Int64Keep,
    /// `*bool`.
    Bool,
    /// `metav1.MicroTime`.
    MicroTime,
    /// `metav1.Time`.
    Time,
    /// `map[string]string` with `omitempty`.
    MapStr,
    /// `map[string][]byte` (base64 strings) with `omitempty`.
    MapBytes,
    /// Anything (`fieldsV1`).
    Any,
    /// A struct.
    Obj(&'static Schema),
    /// A slice with `omitempty`.
    List(&'static Ty),
}

// === impl Ty ===

impl Ty {
    /// The Go type as Go's JSON errors print it.
    pub fn go_type(self) -> String {
        match self {
            Ty::Str | Ty::StrKeep | Ty::MicroTime | Ty::Time => "string".to_owned(),
            Ty::Int32 | Ty::Int32Keep => "int32".to_owned(),
            Ty::Int64 | Ty::Int64Keep => "int64".to_owned(),
            Ty::Bool => "bool".to_owned(),
            Ty::MapStr => "map[string]string".to_owned(),
            Ty::MapBytes => "map[string][]uint8".to_owned(),
            Ty::Any => "v1.FieldsV1".to_owned(),
            Ty::Obj(schema) => schema.go_type.to_owned(),
            Ty::List(item) => format!("[]{}", item.go_type()),
        }
    }
}

// === impl Schema ===

impl Schema {
    /// The type of field `name`, if the struct has one.
    pub fn field(&self, name: &str) -> Option<Ty> {
        self.fields
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, ty)| *ty)
    }

    /// The Go type without its package (`LeaseSpec`), as Go's JSON errors name the struct.
    pub fn short_name(&self) -> &'static str {
        self.go_type
            .rsplit_once('.')
            .map_or(self.go_type, |(_, name)| name)
    }
}

pub static OWNER_REFERENCE: Schema = Schema {
    go_type: "v1.OwnerReference",
    fields: &[
        ("apiVersion", Ty::StrKeep),
        ("kind", Ty::StrKeep),
        ("name", Ty::StrKeep),
        ("uid", Ty::StrKeep),
        ("controller", Ty::Bool),
        ("blockOwnerDeletion", Ty::Bool),
    ],
};

pub static MANAGED_FIELDS_ENTRY: Schema = Schema {
    go_type: "v1.ManagedFieldsEntry",
    fields: &[
        ("manager", Ty::Str),
        ("operation", Ty::Str),
        ("apiVersion", Ty::Str),
        ("time", Ty::Time),
        ("fieldsType", Ty::Str),
        ("fieldsV1", Ty::Any),
        ("subresource", Ty::Str),
    ],
};

pub static OBJECT_META: Schema = Schema {
    go_type: "v1.ObjectMeta",
    fields: &[
        ("name", Ty::Str),
        ("generateName", Ty::Str),
        ("namespace", Ty::Str),
        ("selfLink", Ty::Str),
        ("uid", Ty::Str),
        ("resourceVersion", Ty::Str),
        ("generation", Ty::Int64),
        ("creationTimestamp", Ty::Time),
        ("deletionTimestamp", Ty::Time),
        ("deletionGracePeriodSeconds", Ty::Int64Keep),
        ("labels", Ty::MapStr),
        ("annotations", Ty::MapStr),
        ("ownerReferences", Ty::List(&Ty::Obj(&OWNER_REFERENCE))),
        ("finalizers", Ty::List(&Ty::Str)),
        ("managedFields", Ty::List(&Ty::Obj(&MANAGED_FIELDS_ENTRY))),
    ],
};

pub static LEASE_SPEC: Schema = Schema {
    go_type: "v1.LeaseSpec",
    fields: &[
        ("holderIdentity", Ty::StrKeep),
        ("leaseDurationSeconds", Ty::Int32Keep),
        ("acquireTime", Ty::MicroTime),
        ("renewTime", Ty::MicroTime),
        ("leaseTransitions", Ty::Int32Keep),
        ("strategy", Ty::StrKeep),
        ("preferredHolder", Ty::StrKeep),
    ],
};

pub static LEASE: Schema = Schema {
    go_type: "v1.Lease",
    fields: &[
        ("kind", Ty::Str),
        ("apiVersion", Ty::Str),
        ("metadata", Ty::Obj(&OBJECT_META)),
        ("spec", Ty::Obj(&LEASE_SPEC)),
    ],
};

pub static CONFIG_MAP: Schema = Schema {
    go_type: "v1.ConfigMap",
    fields: &[
        ("kind", Ty::Str),
        ("apiVersion", Ty::Str),
        ("metadata", Ty::Obj(&OBJECT_META)),
        ("immutable", Ty::Bool),
        ("data", Ty::MapStr),
        ("binaryData", Ty::MapBytes),
    ],
};

pub static OBJECT_REFERENCE: Schema = Schema {
    go_type: "v1.ObjectReference",
    fields: &[
        ("kind", Ty::Str),
        ("namespace", Ty::Str),
        ("name", Ty::Str),
        ("uid", Ty::Str),
        ("apiVersion", Ty::Str),
        ("resourceVersion", Ty::Str),
        ("fieldPath", Ty::Str),
    ],
};

pub static EVENT_SOURCE: Schema = Schema {
    go_type: "v1.EventSource",
    fields: &[("component", Ty::Str), ("host", Ty::Str)],
};

pub static CORE_EVENT_SERIES: Schema = Schema {
    go_type: "v1.EventSeries",
    fields: &[("count", Ty::Int32), ("lastObservedTime", Ty::MicroTime)],
};

pub static CORE_EVENT: Schema = Schema {
    go_type: "v1.Event",
    fields: &[
        ("kind", Ty::Str),
        ("apiVersion", Ty::Str),
        ("metadata", Ty::Obj(&OBJECT_META)),
        ("involvedObject", Ty::Obj(&OBJECT_REFERENCE)),
        ("reason", Ty::Str),
        ("message", Ty::Str),
        ("source", Ty::Obj(&EVENT_SOURCE)),
        ("firstTimestamp", Ty::Time),
        ("lastTimestamp", Ty::Time),
        ("count", Ty::Int32),
        ("type", Ty::Str),
        ("eventTime", Ty::MicroTime),
        ("series", Ty::Obj(&CORE_EVENT_SERIES)),
        ("action", Ty::Str),
        ("related", Ty::Obj(&OBJECT_REFERENCE)),
        ("reportingComponent", Ty::StrKeep),
        ("reportingInstance", Ty::StrKeep),
    ],
};

pub static EVENT_SERIES: Schema = Schema {
    go_type: "v1.EventSeries",
    fields: &[
        ("count", Ty::Int32Keep),
        ("lastObservedTime", Ty::MicroTime),
    ],
};

pub static EVENT: Schema = Schema {
    go_type: "v1.Event",
    fields: &[
        ("kind", Ty::Str),
        ("apiVersion", Ty::Str),
        ("metadata", Ty::Obj(&OBJECT_META)),
        ("eventTime", Ty::MicroTime),
        ("series", Ty::Obj(&EVENT_SERIES)),
        ("reportingController", Ty::Str),
        ("reportingInstance", Ty::Str),
        ("action", Ty::Str),
        ("reason", Ty::Str),
        ("regarding", Ty::Obj(&OBJECT_REFERENCE)),
        ("related", Ty::Obj(&OBJECT_REFERENCE)),
        ("note", Ty::Str),
        ("type", Ty::Str),
        ("deprecatedSource", Ty::Obj(&EVENT_SOURCE)),
        ("deprecatedFirstTimestamp", Ty::Time),
        ("deprecatedLastTimestamp", Ty::Time),
        ("deprecatedCount", Ty::Int32),
    ],
};
