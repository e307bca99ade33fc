//! The set of resources the server serves: built-in kinds and the kinds of established CRDs.
//!
//! One generic REST machinery serves every entry; what is specific to a kind is its
//! [`Strategy`] (validation, canonical form, field selectors, printer columns). The registry is
//! an immutable snapshot swapped whenever a CRD changes, so requests never wait on it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::error::Cause;
use crate::table::Column;
use crate::validation::NameRule;

/// What is specific to one kind. Built-ins get theirs from `kinds.rs`, CRDs from their schema.
pub trait Strategy: Send + Sync {
    /// Type-check the object and bring it to canonical form (unknown fields pruned, defaults
    /// applied). An error here is a decoding error (400) with a message.
    fn normalize(&self, obj: &Value) -> Result<Value, NormalizeError>;

    /// Kind-specific validation after metadata checks; `old` is set on update.
    fn validate(&self, _obj: &Value, _old: Option<&Value>, _causes: &mut Vec<Cause>) {}

    /// The value of a kind-specific field selector (`spec.nodeName`, `type`, ...).
    fn field(&self, _obj: &Value, _field: &str) -> Option<String> {
        None
    }

    /// The extra field selectors this kind supports, beyond `metadata.name`/`metadata.namespace`.
    fn fields(&self) -> Vec<String> {
        Vec::new()
    }

    /// Columns after NAME for `kubectl get` (Table output).
    fn columns(&self) -> Vec<Column> {
        Vec::new()
    }

    /// The kind's OpenAPI v3 schema (for `kubectl explain`), if the strategy knows it.
    fn openapi_schema(&self) -> Option<Value> {
        None
    }
}

#[derive(Debug)]
pub enum NormalizeError {
    /// The body cannot be decoded as this kind (400).
    Decode(String),
    /// The body decodes but breaks the schema (422).
    Invalid(Vec<Cause>),
}

/// How a `scale` subresource maps onto the object.
#[derive(Clone, Debug)]
pub struct ScalePaths {
    /// JSON pointers, e.g. `/spec/replicas`.
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One served group/version/resource.
pub struct ResourceType {
    pub group: String,
    pub version: String,
    /// The version objects are stored in (CRDs with several versions, conversion `None`).
    pub storage_version: String,
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    pub scale: Option<ScalePaths>,
    pub name_rule: NameRule,
    pub strategy: Arc<dyn Strategy>,
    /// The OpenAPI v3 schema of the kind, where known (CRDs).
    pub schema: Option<Value>,
    /// Set for kinds served from a CRD: its name.
    pub crd: Option<String>,
    /// A create-only review (access reviews, `whoami`): answered, never stored.
    pub review: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn group_version(&self) -> String {
        self.api_version()
    }

    /// Storage key prefix of the resource, across every version and namespace.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("/{group}/{}/", self.resource)
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.review {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// The `APIResource` entry for legacy discovery.
    pub fn api_resource(&self) -> Value {
        let mut r = json!({
            "name": self.resource,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            r["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            r["categories"] = json!(self.categories);
        }
        r
    }
}

/// A group/version/resource triple.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// One immutable view of everything served.
#[derive(Default)]
pub struct Snapshot {
    pub resources: BTreeMap<Gvr, Arc<ResourceType>>,
    /// Groups in discovery order, each with its versions in preference order.
    pub groups: Vec<(String, Vec<String>)>,
}

impl Snapshot {
    pub fn get(&self, group: &str, version: &str, resource: &str) -> Option<&Arc<ResourceType>> {
        self.resources.get(&Gvr {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
        })
    }

    /// The resources of one group/version, in name order.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<&Arc<ResourceType>> {
        self.resources
            .values()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }

    /// The preferred (first) version of a group.
    pub fn preferred_version(&self, group: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(g, _)| g == group)
            .and_then(|(_, vs)| vs.first().map(String::as_str))
    }

    /// Every served version of the group/resource (for the storage-wide view of a resource).
    pub fn by_group_resource(&self, group: &str, resource: &str) -> Vec<&Arc<ResourceType>> {
        self.resources
            .values()
            .filter(|r| r.group == group && r.resource == resource)
            .collect()
    }
}

/// The live registry: built-ins fixed at start, CRD kinds replaced as CRDs change.
pub struct Registry {
    builtin: Vec<Arc<ResourceType>>,
    current: RwLock<Arc<Snapshot>>,
}

impl Registry {
    pub fn new(builtin: Vec<Arc<ResourceType>>) -> Registry {
        let registry = Registry {
            builtin,
            current: RwLock::new(Arc::new(Snapshot::default())),
        };
        registry.set_crd_kinds(Vec::new());
        registry
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replace every CRD-served kind; `crd_kinds` lists each CRD's versions in priority order.
    pub fn set_crd_kinds(&self, crd_kinds: Vec<Arc<ResourceType>>) {
        let mut snap = Snapshot::default();
        for r in self.builtin.iter().chain(crd_kinds.iter()) {
            let gvr = Gvr {
                group: r.group.clone(),
                version: r.version.clone(),
                resource: r.resource.clone(),
            };
            // A CRD may not replace a built-in kind.
            if snap.resources.contains_key(&gvr) {
                continue;
            }
            match snap.groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => snap.groups.push((r.group.clone(), vec![r.version.clone()])),
            }
            snap.resources.insert(gvr, r.clone());
        }
        for (_, versions) in &mut snap.groups {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
    }
}

/// Kubernetes version priority: GA > beta > alpha, then by numbers (v2 > v1, v1beta2 > v1beta1).
pub fn version_priority(v: &str) -> (u8, u32, u32, std::cmp::Reverse<String>) {
    let parse = |s: &str| -> Option<(u8, u32, u32)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        for (name, rank) in [("beta", 2u8), ("alpha", 1u8)] {
            if let Some(n) = tail.strip_prefix(name) {
                return Some((rank, major, n.parse().ok()?));
            }
        }
        None
    };
    match parse(v) {
        Some((rank, major, minor)) => (rank, major, minor, std::cmp::Reverse(String::new())),
        None => (0, 0, 0, std::cmp::Reverse(v.to_string())),
    }
}
