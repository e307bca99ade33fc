//! RBAC authorization (rbac.authorization.k8s.io/v1), as kube-apiserver's RBAC authorizer.
//!
//! An in-memory index of Roles, ClusterRoles and their bindings answers every request; it is
//! rebuilt from storage whenever an RBAC object changes (they are few, and reads vastly
//! outnumber their writes). The group `system:masters` is allowed everything, as in Kubernetes.
//!
//! # Guarantees
//! - Deny by default: a request is allowed only if some rule bound to the user, one of its
//!   groups, or its service account allows exactly this verb on this resource (and name).
//! - Escalation prevention: creating or updating a Role or ClusterRole requires holding every
//!   permission it grants (or `escalate` on it); binding one requires holding its permissions
//!   (or `bind` on it).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::tls::Identity;

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
pub const SUPERUSER_GROUP: &str = "system:masters";

/// One RBAC rule.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Binding {
    subjects: Vec<Subject>,
    role_ref: RoleRef,
}

/// What a request asks to do.
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    pub verb: String,
    /// For resource requests.
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// For non-resource requests (`/apis`, `/version`, ...): the path; empty otherwise.
    pub path: String,
}

impl Attributes {
    pub fn is_resource(&self) -> bool {
        self.path.is_empty()
    }

    /// `configmaps` or `pods/log`.
    pub fn resource_with_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The reason kube-apiserver gives when this is denied.
    pub fn denial(&self, user: &str) -> String {
        if !self.is_resource() {
            return format!(
                "User \"{user}\" cannot {} path \"{}\"",
                self.verb, self.path
            );
        }
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", self.namespace)
        };
        format!(
            "User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            self.verb,
            self.resource_with_sub(),
            self.group
        )
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl Rule {
    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.is_resource() {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !has(&self.api_groups, &a.group) {
            return false;
        }
        let wanted = a.resource_with_sub();
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == wanted
                || (a.subresource.is_empty() && *r == a.resource)
                || (!a.subresource.is_empty()
                    && (*r == format!("*/{}", a.subresource) || *r == format!("{}/*", a.resource)))
        });
        resource_ok
            && (self.resource_names.is_empty()
                || (!a.name.is_empty() && self.resource_names.contains(&a.name)))
    }

    /// Whether this rule grants at least what `other` grants (for escalation checks): every
    /// combination `other` names is allowed here; a wildcard in `other` needs one here.
    pub fn covers(&self, other: &Rule) -> bool {
        let covers_list = |mine: &[String], theirs: &[String]| {
            theirs
                .iter()
                .all(|t| mine.iter().any(|m| m == "*" || m == t))
        };
        if !covers_list(&self.verbs, &other.verbs) {
            return false;
        }
        if !other.non_resource_urls.is_empty() {
            return other.non_resource_urls.iter().all(|u| {
                self.non_resource_urls.iter().any(|m| {
                    m == "*"
                        || m == u
                        || m.strip_suffix('*')
                            .is_some_and(|p| u.starts_with(p) && !u.ends_with('*'))
                })
            });
        }
        covers_list(&self.api_groups, &other.api_groups)
            && covers_list(&self.resources, &other.resources)
            && (self.resource_names.is_empty()
                || (!other.resource_names.is_empty()
                    && covers_list(&self.resource_names, &other.resource_names)))
    }
}

/// A binding with its role's rules resolved (the index is rebuilt whenever either changes).
struct Resolved {
    subjects: Vec<Subject>,
    rules: Arc<Vec<Rule>>,
}

/// Who a subject is, as the index keys it: a user or a group (a service account is the user
/// `system:serviceaccount:<namespace>:<name>`, its namespace defaulting to the binding's).
enum SubjectKey {
    User(String),
    Group(String),
}

fn subject_key(s: &Subject, binding_ns: &str) -> Option<SubjectKey> {
    match s.kind.as_str() {
        "User" => Some(SubjectKey::User(s.name.clone())),
        "Group" => Some(SubjectKey::Group(s.name.clone())),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            Some(SubjectKey::User(format!(
                "system:serviceaccount:{ns}:{}",
                s.name
            )))
        }
        _ => None,
    }
}

/// Rules by the user or group they are granted to.
#[derive(Default)]
struct BySubject {
    users: HashMap<String, Vec<Arc<Rule>>>,
    groups: HashMap<String, Vec<Arc<Rule>>>,
}

impl BySubject {
    fn add(&mut self, key: &SubjectKey, rule: &Arc<Rule>) {
        let (map, name) = match key {
            SubjectKey::User(n) => (&mut self.users, n),
            SubjectKey::Group(n) => (&mut self.groups, n),
        };
        map.entry(name.clone()).or_default().push(rule.clone());
    }

    /// The rule lists granted to `who`'s user and groups (no allocation: this is per request).
    fn of<'a>(&'a self, who: &'a Identity) -> impl Iterator<Item = &'a Vec<Arc<Rule>>> + 'a {
        self.users
            .get(&who.user)
            .into_iter()
            .chain(who.groups.iter().filter_map(|g| self.groups.get(g)))
    }
}

/// Grants bucketed by (namespace, API group, resource) and then by subject, so a request
/// looks only at the rules granted to its user and groups that could allow it, however many
/// bindings exist (a hub holds a few for each of thousands of clusters).
#[derive(Default)]
struct Grants {
    /// namespace -> API group -> resource (without subresource) -> subject -> rules.
    by_resource: HashMap<String, HashMap<String, HashMap<String, BySubject>>>,
    non_resource: BySubject,
}

impl Grants {
    fn add(&mut self, namespace: &str, subjects: &[Subject], rules: &[Rule]) {
        let keys: Vec<SubjectKey> = subjects
            .iter()
            .filter_map(|s| subject_key(s, namespace))
            .collect();
        for rule in rules {
            let rule = Arc::new(rule.clone());
            if !rule.non_resource_urls.is_empty() {
                for k in &keys {
                    self.non_resource.add(k, &rule);
                }
                continue;
            }
            for g in &rule.api_groups {
                for r in &rule.resources {
                    let base = r.split('/').next().unwrap_or(r).to_string();
                    let bucket = self
                        .by_resource
                        .entry(namespace.to_string())
                        .or_default()
                        .entry(g.clone())
                        .or_default()
                        .entry(base)
                        .or_default();
                    for k in &keys {
                        bucket.add(k, &rule);
                    }
                }
            }
        }
    }

    fn allowed(&self, who: &Identity, a: &Attributes) -> bool {
        let ok = |by: &BySubject| by.of(who).any(|rules| rules.iter().any(|r| r.allows(a)));
        if !a.is_resource() {
            return ok(&self.non_resource);
        }
        let namespaces: &[&str] = if a.namespace.is_empty() {
            &[""]
        } else {
            &["", &a.namespace]
        };
        for ns in namespaces {
            let Some(groups) = self.by_resource.get(*ns) else {
                continue;
            };
            for g in [a.group.as_str(), "*"] {
                let Some(resources) = groups.get(g) else {
                    continue;
                };
                for r in [a.resource.as_str(), "*"] {
                    if resources.get(r).is_some_and(ok) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// The RBAC objects, indexed for answering requests.
#[derive(Default)]
struct Index {
    grants: Grants,
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    /// namespace -> name -> rules.
    roles: HashMap<String, HashMap<String, Arc<Vec<Rule>>>>,
    cluster_role_bindings: Vec<Resolved>,
    /// namespace -> bindings.
    role_bindings: HashMap<String, Vec<Resolved>>,
}

fn applies(s: &Subject, who: &Identity, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == who.user,
        "Group" => who.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            who.user
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(n, name)| n == ns && name == s.name)
        }
        _ => false,
    }
}

impl Index {
    /// The rule sets that apply to `who` in `namespace` ("" = cluster scope only).
    fn rule_sets<'a>(
        &'a self,
        who: &'a Identity,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Vec<Rule>>> + 'a {
        let cluster = self
            .cluster_role_bindings
            .iter()
            .filter(move |b| b.subjects.iter().any(|s| applies(s, who, "")))
            .map(|b| &b.rules);
        let local = (!namespace.is_empty())
            .then(|| self.role_bindings.get(namespace))
            .flatten()
            .into_iter()
            .flatten()
            .filter(move |b| b.subjects.iter().any(|s| applies(s, who, namespace)))
            .map(|b| &b.rules);
        cluster.chain(local)
    }

    fn rules_for<'a>(&'a self, who: &'a Identity, namespace: &'a str) -> Vec<&'a Rule> {
        self.rule_sets(who, namespace)
            .flat_map(|r| r.iter())
            .collect()
    }
}

/// The authorizer: an index swapped atomically when RBAC objects change.
#[derive(Default)]
pub struct Authorizer {
    index: RwLock<Arc<Index>>,
}

impl Authorizer {
    fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_superuser(who: &Identity) -> bool {
        who.groups.iter().any(|g| g == SUPERUSER_GROUP)
    }

    pub fn allowed(&self, who: &Identity, a: &Attributes) -> bool {
        if Self::is_superuser(who) {
            return true;
        }
        self.index().grants.allowed(who, a)
    }

    /// The rules that apply to `who` in `namespace` (SelfSubjectRulesReview, escalation).
    pub fn rules(&self, who: &Identity, namespace: &str) -> Vec<Rule> {
        if Self::is_superuser(who) {
            return vec![Rule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                non_resource_urls: vec!["*".into()],
                ..Default::default()
            }];
        }
        self.index()
            .rules_for(who, namespace)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The rules of a role a binding refers to (`namespace` for Roles).
    pub fn role_rules(&self, kind: &str, name: &str, namespace: &str) -> Option<Vec<Rule>> {
        let index = self.index();
        let rules = match kind {
            "ClusterRole" => index.cluster_roles.get(name),
            "Role" => index.roles.get(namespace).and_then(|r| r.get(name)),
            _ => None,
        };
        rules.map(|r| r.as_ref().clone())
    }

    /// Rebuild the index from RBAC objects parsed beforehand (the RBAC loop keeps them parsed,
    /// so a change costs one parse, not one per stored object).
    pub fn rebuild<'a>(&self, objects: impl IntoIterator<Item = &'a RbacObject>) {
        let mut index = Index::default();
        let mut bindings: Vec<(&str, &Binding)> = Vec::new();
        for o in objects {
            match o {
                RbacObject::ClusterRole { name, rules } => {
                    index.cluster_roles.insert(name.clone(), rules.clone());
                }
                RbacObject::Role {
                    namespace,
                    name,
                    rules,
                } => {
                    index
                        .roles
                        .entry(namespace.clone())
                        .or_default()
                        .insert(name.clone(), rules.clone());
                }
                RbacObject::Binding { namespace, binding } => bindings.push((namespace, binding)),
            }
        }
        for (ns, b) in bindings {
            let rules = match b.role_ref.kind.as_str() {
                "ClusterRole" => index.cluster_roles.get(&b.role_ref.name).cloned(),
                "Role" if !ns.is_empty() => index
                    .roles
                    .get(ns)
                    .and_then(|r| r.get(&b.role_ref.name))
                    .cloned(),
                _ => None,
            };
            // A binding to a missing role grants nothing (until the role appears).
            let Some(rules) = rules else { continue };
            index.grants.add(ns, &b.subjects, &rules);
            let resolved = Resolved {
                subjects: b.subjects.clone(),
                rules,
            };
            if ns.is_empty() {
                index.cluster_role_bindings.push(resolved);
            } else {
                index
                    .role_bindings
                    .entry(ns.to_string())
                    .or_default()
                    .push(resolved);
            }
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
    }
}

/// One stored RBAC object as the index needs it.
#[derive(Clone, Debug)]
pub enum RbacObject {
    ClusterRole {
        name: String,
        rules: Arc<Vec<Rule>>,
    },
    Role {
        namespace: String,
        name: String,
        rules: Arc<Vec<Rule>>,
    },
    /// A RoleBinding (`namespace` set) or ClusterRoleBinding (`namespace` empty).
    Binding {
        namespace: String,
        binding: Binding,
    },
}

impl RbacObject {
    /// Parse a stored object of `resource` (`clusterroles`, `roles`, `clusterrolebindings`,
    /// `rolebindings`).
    pub fn parse(resource: &str, obj: &Value) -> Option<RbacObject> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rules = || -> Arc<Vec<Rule>> {
            Arc::new(
                obj.get("rules")
                    .map(|r| serde_json::from_value(r.clone()).unwrap_or_default())
                    .unwrap_or_default(),
            )
        };
        match resource {
            "clusterroles" => Some(RbacObject::ClusterRole {
                name,
                rules: rules(),
            }),
            "roles" => Some(RbacObject::Role {
                namespace,
                name,
                rules: rules(),
            }),
            "clusterrolebindings" | "rolebindings" => {
                let binding = serde_json::from_value::<Binding>(obj.clone()).ok()?;
                Some(RbacObject::Binding {
                    namespace: if resource == "rolebindings" {
                        namespace
                    } else {
                        String::new()
                    },
                    binding,
                })
            }
            _ => None,
        }
    }
}

/// The selectors of a ClusterRole's `aggregationRule`; `None` if it has none.
pub fn aggregation_selectors(role: &Value) -> Option<Vec<crate::selector::LabelSelector>> {
    Some(
        role.pointer("/aggregationRule/clusterRoleSelectors")?
            .as_array()?
            .iter()
            .filter_map(|s| crate::selector::LabelSelector::from_json(s).ok())
            .collect(),
    )
}

/// The rules an aggregated ClusterRole should have: the union, in name order and without
/// duplicates, of the rules of every other ClusterRole its selectors match. `None` if `role`
/// has no aggregation rule.
pub fn aggregate(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = aggregation_selectors(role)?;
    let name = role
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut sources: Vec<&Value> = all
        .iter()
        .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) != Some(name))
        .filter(|r| {
            let labels = crate::object::labels_of(r);
            !selectors.is_empty()
                && selectors
                    .iter()
                    .any(|s| !s.0.is_empty() && s.matches(&labels))
        })
        .collect();
    sources.sort_by_key(|r| {
        r.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    });
    let mut rules: Vec<Value> = Vec::new();
    for r in sources {
        for rule in r
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

/// Whether `held` (the rules a user has) covers every rule in `wanted`.
pub fn covers_all(held: &[Rule], wanted: &[Rule]) -> bool {
    wanted.iter().all(|w| {
        split(w)
            .iter()
            .all(|part| held.iter().any(|h| h.covers(part)))
    })
}

/// A rule split into one rule per verb/group/resource/name, so that several held rules can
/// together cover one wanted rule.
fn split(r: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    if !r.non_resource_urls.is_empty() {
        for v in &r.verbs {
            for u in &r.non_resource_urls {
                out.push(Rule {
                    verbs: vec![v.clone()],
                    non_resource_urls: vec![u.clone()],
                    ..Default::default()
                });
            }
        }
        return out;
    }
    let names: Vec<Vec<String>> = if r.resource_names.is_empty() {
        vec![vec![]]
    } else {
        r.resource_names.iter().map(|n| vec![n.clone()]).collect()
    };
    for v in &r.verbs {
        for g in &r.api_groups {
            for res in &r.resources {
                for n in &names {
                    out.push(Rule {
                        verbs: vec![v.clone()],
                        api_groups: vec![g.clone()],
                        resources: vec![res.clone()],
                        resource_names: n.clone(),
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

/// The roles and bindings every cluster starts with (kube-apiserver's bootstrap policy, the
/// parts Atoll serves). Re-created at start when missing; never overwritten.
pub fn bootstrap_policy() -> Vec<(&'static str, Value)> {
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str]| json!({"verbs": verbs, "apiGroups": groups, "resources": resources});
    let read = ["get", "list", "watch"];
    let write = ["create", "delete", "deletecollection", "patch", "update"];
    let all_rw: Vec<&str> = read.iter().chain(write.iter()).copied().collect();
    let core_ns = [
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "services",
        "services/status",
        "serviceaccounts",
        "events",
        "endpoints",
    ];
    let view_rules = vec![
        rule(
            &read,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "services/status",
                "serviceaccounts",
                "events",
                "namespaces",
                "namespaces/status",
            ],
        ),
        rule(
            &read,
            &["apps"],
            &[
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(&read, &["discovery.k8s.io"], &["endpointslices"]),
        rule(&read, &["events.k8s.io"], &["events"]),
    ];
    let edit_rules = vec![
        rule(&all_rw, &[""], &core_ns),
        rule(&all_rw, &[""], &["secrets"]),
        rule(&read, &[""], &["namespaces", "namespaces/status"]),
        rule(
            &all_rw,
            &["apps"],
            &[
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(&all_rw, &["discovery.k8s.io"], &["endpointslices"]),
        rule(&all_rw, &["events.k8s.io"], &["events"]),
        rule(&all_rw, &["coordination.k8s.io"], &["leases"]),
    ];
    let admin_rules = vec![
        rule(&all_rw, &[RBAC_GROUP], &["roles", "rolebindings"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
    ];
    let cluster_role = |name: &str, rules: Vec<Value>| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules})
    };
    let label = |to: &str| format!("rbac.authorization.k8s.io/aggregate-to-{to}");
    let aggregated = |name: &str, selects: &str, feeds: &[&str]| {
        let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        for f in feeds {
            labels[label(f)] = json!("true");
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": labels},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {label(selects): "true"}}]},
               "rules": []})
    };
    let aggregate_to = |name: &str, to: &str, rules: Vec<Value>| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", label(to): "true"}},
               "rules": rules})
    };
    let binding = |name: &str, role: &str, group: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
               "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}]})
    };
    let user_binding = |name: &str, role: &str, user: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
               "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user}]})
    };
    let events = || {
        vec![
            rule(&["create", "patch", "update"], &[""], &["events"]),
            rule(
                &["create", "patch", "update"],
                &["events.k8s.io"],
                &["events"],
            ),
        ]
    };
    // The node agent: its Node and lease, the pods bound to it and what they read. (Kubernetes
    // narrows each node further to its own objects with the Node authorizer; Atoll does not yet.)
    let mut node_rules = vec![
        rule(
            &["get", "list", "watch", "create", "update", "patch"],
            &[""],
            &["nodes"],
        ),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&read, &[""], &["configmaps", "secrets", "services"]),
        rule(
            &["get", "create", "update", "patch"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
    ];
    node_rules.extend(events());
    let mut scheduler_rules = vec![
        rule(&read, &[""], &["pods", "nodes", "namespaces"]),
        rule(&["create"], &[""], &["pods/binding"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
    ];
    scheduler_rules.extend(events());
    let mut controller_rules = vec![
        rule(&all_rw, &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&read, &[""], &["services", "namespaces"]),
        rule(
            &["get", "list", "watch", "create"],
            &[""],
            &["serviceaccounts"],
        ),
        rule(
            &["get", "list", "watch", "update", "patch"],
            &[""],
            &["nodes", "nodes/status"],
        ),
        rule(&all_rw, &["apps"], &["replicasets", "deployments"]),
        rule(
            &["update", "patch"],
            &["apps"],
            &["replicasets/status", "deployments/status"],
        ),
        rule(&all_rw, &["discovery.k8s.io"], &["endpointslices"]),
        rule(&read, &["coordination.k8s.io"], &["leases"]),
    ];
    controller_rules.extend(events());
    vec![
        ("clusterroles", cluster_role("system:node", node_rules)),
        (
            "clusterrolebindings",
            binding("system:node", "system:node", "system:nodes"),
        ),
        (
            "clusterroles",
            cluster_role("system:kube-scheduler", scheduler_rules),
        ),
        (
            "clusterrolebindings",
            user_binding(
                "system:kube-scheduler",
                "system:kube-scheduler",
                "system:kube-scheduler",
            ),
        ),
        (
            "clusterroles",
            cluster_role("system:kube-controller-manager", controller_rules),
        ),
        (
            "clusterrolebindings",
            user_binding(
                "system:kube-controller-manager",
                "system:kube-controller-manager",
                "system:kube-controller-manager",
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "cluster-admin",
                vec![
                    json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                    json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
                ],
            ),
        ),
        // admin, edit and view are aggregated, as in Kubernetes: their rules come from the
        // ClusterRoles labelled aggregate-to-{admin,edit,view}, so CRD authors extend them.
        ("clusterroles", aggregated("admin", "admin", &[])),
        ("clusterroles", aggregated("edit", "edit", &["admin"])),
        ("clusterroles", aggregated("view", "view", &["edit"])),
        (
            "clusterroles",
            aggregate_to("system:aggregate-to-admin", "admin", admin_rules),
        ),
        (
            "clusterroles",
            aggregate_to("system:aggregate-to-edit", "edit", edit_rules),
        ),
        (
            "clusterroles",
            aggregate_to("system:aggregate-to-view", "view", view_rules),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:discovery",
                vec![
                    json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*", "/version", "/version/"]}),
                ],
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:basic-user",
                vec![
                    rule(
                        &["create"],
                        &["authorization.k8s.io"],
                        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    ),
                    rule(
                        &["create"],
                        &["authentication.k8s.io"],
                        &["selfsubjectreviews"],
                    ),
                ],
            ),
        ),
        (
            "clusterroles",
            cluster_role(
                "system:public-info-viewer",
                vec![
                    json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]}),
                ],
            ),
        ),
        (
            "clusterrolebindings",
            binding("cluster-admin", "cluster-admin", SUPERUSER_GROUP),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:discovery",
                "system:discovery",
                "system:authenticated",
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:basic-user",
                "system:basic-user",
                "system:authenticated",
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                "system:public-info-viewer",
                "system:authenticated",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn rule(v: &[&str], g: &[&str], r: &[&str], n: &[&str]) -> Rule {
        let s = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Rule {
            verbs: s(v),
            api_groups: s(g),
            resources: s(r),
            resource_names: s(n),
            non_resource_urls: vec![],
        }
    }

    #[test]
    fn rules_match_verbs_resources_subresources_and_names() {
        let r = rule(&["get", "list"], &[""], &["pods", "pods/log"], &[]);
        assert!(r.allows(&attrs("get", "", "pods", "", "ns", "p")));
        assert!(r.allows(&attrs("get", "", "pods", "log", "ns", "p")));
        assert!(!r.allows(&attrs("get", "", "pods", "exec", "ns", "p")));
        assert!(!r.allows(&attrs("delete", "", "pods", "", "ns", "p")));
        assert!(!r.allows(&attrs("get", "apps", "pods", "", "ns", "p")));
        let named = rule(
            &["update"],
            &["cluster.atoll.io"],
            &["managedclusters/status"],
            &["a"],
        );
        assert!(named.allows(&attrs(
            "update",
            "cluster.atoll.io",
            "managedclusters",
            "status",
            "",
            "a"
        )));
        assert!(!named.allows(&attrs(
            "update",
            "cluster.atoll.io",
            "managedclusters",
            "status",
            "",
            "b"
        )));
        assert!(!named.allows(&attrs(
            "update",
            "cluster.atoll.io",
            "managedclusters",
            "",
            "",
            "a"
        )));
        let wild = rule(&["*"], &["*"], &["*/status"], &[]);
        assert!(wild.allows(&attrs("patch", "x", "things", "status", "", "n")));
        assert!(!wild.allows(&attrs("patch", "x", "things", "", "", "n")));
        let nr = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/apis/*".into()],
            ..Default::default()
        };
        assert!(nr.allows(&Attributes {
            verb: "get".into(),
            path: "/apis/apps".into(),
            ..Default::default()
        }));
        assert!(!nr.allows(&Attributes {
            verb: "get".into(),
            path: "/api".into(),
            ..Default::default()
        }));
    }

    #[test]
    fn escalation_needs_every_permission() {
        let held = vec![
            rule(&["get", "list"], &[""], &["pods"], &[]),
            rule(&["create"], &[""], &["pods"], &[]),
        ];
        assert!(covers_all(
            &held,
            &[rule(&["get", "create"], &[""], &["pods"], &[])]
        ));
        assert!(!covers_all(
            &held,
            &[rule(&["delete"], &[""], &["pods"], &[])]
        ));
        assert!(
            !covers_all(&held, &[rule(&["get"], &["*"], &["pods"], &[])]),
            "a wildcard needs a wildcard"
        );
        assert!(covers_all(
            &[rule(&["*"], &["*"], &["*"], &[])],
            &[rule(&["get"], &["*"], &["*"], &[])]
        ));
        let named = vec![rule(&["get"], &[""], &["secrets"], &["one"])];
        assert!(covers_all(
            &named,
            &[rule(&["get"], &[""], &["secrets"], &["one"])]
        ));
        assert!(
            !covers_all(&named, &[rule(&["get"], &[""], &["secrets"], &[])]),
            "a name does not cover all names"
        );
    }
}
