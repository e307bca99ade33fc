//! RBAC authorization (rbac.authorization.k8s.io/v1), as kube-apiserver's RBAC authorizer.
//!
//! An in-memory index of Roles, ClusterRoles and their bindings answers every request; each
//! change to a stored RBAC object updates just the grants it touches, so it takes effect for
//! the next request. The group `system:masters` is allowed everything, as in Kubernetes.
//!
//! # Guarantees
//! - Deny by default: a request is allowed only if some rule bound to the user, one of its
//!   groups, or its service account allows exactly this verb on this resource (and name).
//! - Escalation prevention: creating or updating a Role or ClusterRole requires holding every
//!   permission it grants (or `escalate` on it); binding one requires holding its permissions
//!   (or `bind` on it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::object::meta_str;
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

/// A stored binding and the rules it grants now.
struct Bound {
    /// Tells its grants apart from those of other bindings in the same buckets.
    id: u64,
    binding: Binding,
    /// Its role's rules; `None` while the role is missing (it grants nothing until it exists).
    rules: Option<Arc<Vec<Rule>>>,
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

/// Rules granted to one user or group, each with the binding that grants it. Rules limited to
/// `resourceNames` are found by name: one identity (a shared bootstrap token) may hold a
/// read grant for each of thousands of clusters' CSRs, and a request looks only at its name's.
#[derive(Default)]
struct RuleSet {
    any_name: Vec<(u64, Arc<Rule>)>,
    by_name: HashMap<String, Vec<(u64, Arc<Rule>)>>,
}

impl RuleSet {
    fn add(&mut self, binding: u64, rule: &Arc<Rule>) {
        if rule.resource_names.is_empty() {
            self.any_name.push((binding, rule.clone()));
        }
        for n in &rule.resource_names {
            self.by_name
                .entry(n.clone())
                .or_default()
                .push((binding, rule.clone()));
        }
    }

    /// Take out what `add` put in for `binding` and `rule`.
    fn remove(&mut self, binding: u64, rule: &Rule) {
        if rule.resource_names.is_empty() {
            self.any_name.retain(|(b, _)| *b != binding);
        }
        for n in &rule.resource_names {
            if let Some(rules) = self.by_name.get_mut(n) {
                rules.retain(|(b, _)| *b != binding);
                if rules.is_empty() {
                    self.by_name.remove(n);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.any_name.is_empty() && self.by_name.is_empty()
    }

    /// The rules that could allow a request for `name` ("" for none: named rules cannot).
    fn candidates<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Rule> + 'a {
        let named = (!name.is_empty()).then(|| self.by_name.get(name)).flatten();
        self.any_name
            .iter()
            .chain(named.into_iter().flatten())
            .map(|(_, r)| r.as_ref())
    }
}

/// Rules by the user or group they are granted to.
#[derive(Default)]
struct BySubject {
    users: HashMap<String, RuleSet>,
    groups: HashMap<String, RuleSet>,
}

impl BySubject {
    fn map<'a, 'k>(
        &'a mut self,
        key: &'k SubjectKey,
    ) -> (&'a mut HashMap<String, RuleSet>, &'k str) {
        match key {
            SubjectKey::User(n) => (&mut self.users, n),
            SubjectKey::Group(n) => (&mut self.groups, n),
        }
    }

    fn add(&mut self, key: &SubjectKey, binding: u64, rule: &Arc<Rule>) {
        let (map, name) = self.map(key);
        map.entry(name.to_string()).or_default().add(binding, rule);
    }

    fn remove(&mut self, key: &SubjectKey, binding: u64, rule: &Rule) {
        let (map, name) = self.map(key);
        if let Some(rules) = map.get_mut(name) {
            rules.remove(binding, rule);
            if rules.is_empty() {
                map.remove(name);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// The rules granted to `who`'s user and groups that could allow a request for object
    /// `name` (no allocation: this is per request).
    fn of<'a>(&'a self, who: &'a Identity, name: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.users
            .get(&who.user)
            .into_iter()
            .chain(who.groups.iter().filter_map(|g| self.groups.get(g)))
            .flat_map(move |set| set.candidates(name))
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

fn subject_keys(subjects: &[Subject], namespace: &str) -> Vec<SubjectKey> {
    subjects
        .iter()
        .filter_map(|s| subject_key(s, namespace))
        .collect()
}

/// The resource a rule's entry is bucketed under: `pods/log` is found with `pods`.
fn base_resource(r: &str) -> &str {
    r.split('/').next().unwrap_or(r)
}

impl Grants {
    fn add(&mut self, namespace: &str, subjects: &[Subject], rules: &[Rule], binding: u64) {
        let keys = subject_keys(subjects, namespace);
        for rule in rules {
            let rule = Arc::new(rule.clone());
            if !rule.non_resource_urls.is_empty() {
                for k in &keys {
                    self.non_resource.add(k, binding, &rule);
                }
                continue;
            }
            for g in &rule.api_groups {
                for r in &rule.resources {
                    let bucket = self
                        .by_resource
                        .entry(namespace.to_string())
                        .or_default()
                        .entry(g.clone())
                        .or_default()
                        .entry(base_resource(r).to_string())
                        .or_default();
                    for k in &keys {
                        bucket.add(k, binding, &rule);
                    }
                }
            }
        }
    }

    /// Take out what `add` put in for `binding` (the same subjects and rules), dropping the
    /// buckets left empty.
    fn remove(&mut self, namespace: &str, subjects: &[Subject], rules: &[Rule], binding: u64) {
        let keys = subject_keys(subjects, namespace);
        for rule in rules {
            if !rule.non_resource_urls.is_empty() {
                for k in &keys {
                    self.non_resource.remove(k, binding, rule);
                }
                continue;
            }
            let Some(groups) = self.by_resource.get_mut(namespace) else {
                continue;
            };
            for g in &rule.api_groups {
                let Some(resources) = groups.get_mut(g) else {
                    continue;
                };
                for r in &rule.resources {
                    let base = base_resource(r);
                    if let Some(bucket) = resources.get_mut(base) {
                        for k in &keys {
                            bucket.remove(k, binding, rule);
                        }
                        if bucket.is_empty() {
                            resources.remove(base);
                        }
                    }
                }
                if resources.is_empty() {
                    groups.remove(g);
                }
            }
            if groups.is_empty() {
                self.by_resource.remove(namespace);
            }
        }
    }

    fn allowed(&self, who: &Identity, a: &Attributes) -> bool {
        let ok = |by: &BySubject| by.of(who, &a.name).any(|r| r.allows(a));
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

/// A role as bindings refer to it: (namespace, name), namespace "" for a ClusterRole.
type RoleKey = (String, String);

/// The RBAC objects, indexed for answering requests and kept current one change at a time:
/// a change costs the grants it touches, not a rebuild of everything (a hub writes a few RBAC
/// objects for each of thousands of joining clusters, and each must take effect at once).
#[derive(Default)]
struct Index {
    grants: Grants,
    /// (namespace, name) -> rules; namespace "" for ClusterRoles.
    roles: HashMap<RoleKey, Arc<Vec<Rule>>>,
    /// namespace ("" for ClusterRoleBindings) -> name -> binding.
    bindings: HashMap<String, BTreeMap<String, Bound>>,
    /// Which bindings refer to a role: a role's change re-resolves just those.
    referrers: HashMap<RoleKey, BTreeSet<(String, String)>>,
    next_id: u64,
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

/// The role a binding in `namespace` refers to (a RoleBinding may refer to a ClusterRole).
fn role_key(namespace: &str, role_ref: &RoleRef) -> Option<RoleKey> {
    match role_ref.kind.as_str() {
        "ClusterRole" => Some((String::new(), role_ref.name.clone())),
        "Role" if !namespace.is_empty() => Some((namespace.to_string(), role_ref.name.clone())),
        _ => None,
    }
}

impl Index {
    fn apply(&mut self, change: RbacChange) {
        match change {
            RbacChange::Put(RbacObject::ClusterRole { name, rules }) => {
                self.put_role((String::new(), name), Some(rules))
            }
            RbacChange::Put(RbacObject::Role {
                namespace,
                name,
                rules,
            }) => self.put_role((namespace, name), Some(rules)),
            RbacChange::Put(RbacObject::Binding {
                namespace,
                name,
                binding,
            }) => self.put_binding(namespace, name, Some(binding)),
            RbacChange::Deleted {
                kind: RbacKind::Role,
                namespace,
                name,
            } => self.put_role((namespace, name), None),
            RbacChange::Deleted {
                kind: RbacKind::Binding,
                namespace,
                name,
            } => self.put_binding(namespace, name, None),
        }
    }

    /// Store (or with `None` remove) a role, and re-resolve the bindings that refer to it.
    fn put_role(&mut self, key: RoleKey, rules: Option<Arc<Vec<Rule>>>) {
        match rules {
            Some(r) => self.roles.insert(key.clone(), r),
            None => self.roles.remove(&key),
        };
        let referrers: Vec<(String, String)> = self
            .referrers
            .get(&key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (ns, name) in referrers {
            self.resolve(&ns, &name);
        }
    }

    /// Store (or with `None` remove) a binding, replacing what it granted before.
    fn put_binding(&mut self, namespace: String, name: String, binding: Option<Binding>) {
        if let Some(old) = self
            .bindings
            .get_mut(&namespace)
            .and_then(|m| m.remove(&name))
        {
            if let Some(rules) = &old.rules {
                self.grants
                    .remove(&namespace, &old.binding.subjects, rules, old.id);
            }
            if let Some(role) = role_key(&namespace, &old.binding.role_ref)
                && let Some(set) = self.referrers.get_mut(&role)
            {
                set.remove(&(namespace.clone(), name.clone()));
                if set.is_empty() {
                    self.referrers.remove(&role);
                }
            }
            if self
                .bindings
                .get(&namespace)
                .is_some_and(BTreeMap::is_empty)
            {
                self.bindings.remove(&namespace);
            }
        }
        let Some(binding) = binding else { return };
        if let Some(role) = role_key(&namespace, &binding.role_ref) {
            self.referrers
                .entry(role)
                .or_default()
                .insert((namespace.clone(), name.clone()));
        }
        self.next_id += 1;
        self.bindings.entry(namespace.clone()).or_default().insert(
            name.clone(),
            Bound {
                id: self.next_id,
                binding,
                rules: None,
            },
        );
        self.resolve(&namespace, &name);
    }

    /// Bring a binding's grants in line with its role as stored now.
    fn resolve(&mut self, namespace: &str, name: &str) {
        let Some(bound) = self
            .bindings
            .get_mut(namespace)
            .and_then(|m| m.get_mut(name))
        else {
            return;
        };
        let rules = role_key(namespace, &bound.binding.role_ref)
            .and_then(|k| self.roles.get(&k))
            .cloned();
        if let Some(old) = &bound.rules {
            if rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, old)) {
                return;
            }
            self.grants
                .remove(namespace, &bound.binding.subjects, old, bound.id);
        }
        if let Some(r) = &rules {
            self.grants
                .add(namespace, &bound.binding.subjects, r, bound.id);
        }
        bound.rules = rules;
    }

    /// The rules that apply to `who` in `namespace` ("" = cluster scope only).
    fn rules_for<'a>(&'a self, who: &'a Identity, namespace: &'a str) -> Vec<&'a Rule> {
        let scopes: &[&str] = if namespace.is_empty() {
            &[""]
        } else {
            &["", namespace]
        };
        scopes
            .iter()
            .filter_map(|ns| Some((*ns, self.bindings.get(*ns)?)))
            .flat_map(|(ns, bindings)| {
                bindings
                    .values()
                    .filter(move |b| b.binding.subjects.iter().any(|s| applies(s, who, ns)))
            })
            .filter_map(|b| b.rules.as_deref())
            .flatten()
            .collect()
    }
}

/// The authorizer: the index, changed in place as RBAC objects change.
#[derive(Default)]
pub struct Authorizer {
    index: RwLock<Index>,
}

impl Authorizer {
    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
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
        let key = match kind {
            "ClusterRole" => (String::new(), name.to_string()),
            "Role" => (namespace.to_string(), name.to_string()),
            _ => return None,
        };
        self.index().roles.get(&key).map(|r| r.as_ref().clone())
    }

    /// Replace the whole index with one made from `objects` (at start, or after a lost watch).
    pub fn rebuild(&self, objects: impl IntoIterator<Item = RbacObject>) {
        let mut index = Index::default();
        for o in objects {
            index.apply(RbacChange::Put(o));
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
    }

    /// Take in changes to stored RBAC objects; each takes effect for the next request.
    pub fn update(&self, changes: impl IntoIterator<Item = RbacChange>) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            index.apply(c);
        }
    }
}

/// A role or a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacKind {
    Role,
    Binding,
}

/// A change to a stored RBAC object.
#[derive(Clone, Debug)]
pub enum RbacChange {
    Put(RbacObject),
    /// `namespace` is "" for ClusterRoles and ClusterRoleBindings.
    Deleted {
        kind: RbacKind,
        namespace: String,
        name: String,
    },
}

impl RbacChange {
    /// The deletion of the object stored under `key`
    /// (`/rbac.authorization.k8s.io/<resource>/[<namespace>/]<name>`).
    pub fn deleted(key: &str) -> Option<RbacChange> {
        let mut parts = key.strip_prefix(&format!("/{RBAC_GROUP}/"))?.split('/');
        let resource = parts.next()?;
        let (kind, namespaced) = match resource {
            "clusterroles" => (RbacKind::Role, false),
            "roles" => (RbacKind::Role, true),
            "clusterrolebindings" => (RbacKind::Binding, false),
            "rolebindings" => (RbacKind::Binding, true),
            _ => return None,
        };
        let namespace = if namespaced { parts.next()? } else { "" };
        Some(RbacChange::Deleted {
            kind,
            namespace: namespace.to_string(),
            name: parts.next()?.to_string(),
        })
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
        name: String,
        binding: Binding,
    },
}

impl RbacObject {
    /// Parse a stored object of `resource` (`clusterroles`, `roles`, `clusterrolebindings`,
    /// `rolebindings`).
    pub fn parse(resource: &str, obj: &Value) -> Option<RbacObject> {
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let namespace = meta_str(obj, "namespace").unwrap_or_default().to_string();
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
                    name,
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
    let name = meta_str(role, "name").unwrap_or_default();
    let mut sources: Vec<&Value> = all
        .iter()
        .filter(|r| meta_str(r, "name") != Some(name))
        .filter(|r| {
            let labels = crate::object::labels_of(r);
            !selectors.is_empty()
                && selectors
                    .iter()
                    .any(|s| !s.0.is_empty() && s.matches(&labels))
        })
        .collect();
    sources.sort_by_key(|r| meta_str(r, "name").unwrap_or_default().to_string());
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
        "replicationcontrollers/status",
        "replicationcontrollers/scale",
        "services",
        "services/status",
        "serviceaccounts",
        "events",
        "endpoints",
    ];
    // The workload kinds view reads and edit writes.
    let apps = [
        "deployments",
        "deployments/status",
        "deployments/scale",
        "replicasets",
        "replicasets/status",
        "replicasets/scale",
        "daemonsets",
        "daemonsets/status",
        "statefulsets",
        "statefulsets/status",
        "statefulsets/scale",
    ];
    let batch = ["jobs", "jobs/status", "cronjobs", "cronjobs/status"];
    let view_rules = vec![
        rule(
            &read,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "services/status",
                "serviceaccounts",
                "events",
                "namespaces",
                "namespaces/status",
                "resourcequotas",
                "resourcequotas/status",
                "limitranges",
            ],
        ),
        rule(&read, &["apps"], &apps),
        rule(&read, &["batch"], &batch),
        rule(&read, &["discovery.k8s.io"], &["endpointslices"]),
        rule(&read, &["events.k8s.io"], &["events"]),
    ];
    let edit_rules = vec![
        rule(&all_rw, &[""], &core_ns),
        rule(&all_rw, &[""], &["secrets"]),
        rule(&read, &[""], &["namespaces", "namespaces/status"]),
        rule(&all_rw, &["apps"], &apps),
        rule(&all_rw, &["batch"], &batch),
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
    // The node agent: Nodes and leases, pods and what they read; `noderestriction` narrows
    // each node to its own Node and lease, the pods bound to it and what those use.
    let mut node_rules = vec![
        rule(
            &["get", "list", "watch", "create", "update", "patch"],
            &[""],
            &["nodes"],
        ),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(
            &read,
            &[""],
            &[
                "configmaps",
                "secrets",
                "services",
                "persistentvolumeclaims",
            ],
        ),
        // A pod's service account, for its automountServiceAccountToken.
        rule(&["get"], &[""], &["serviceaccounts"]),
        rule(
            &["get", "create", "update", "patch"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        // Projected service-account tokens, bound to the node's own pods (the TokenRequest
        // handler holds a node to those).
        rule(&["create"], &[""], &["serviceaccounts/token"]),
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
        // The Service proxy listens on imported multi-cluster services' ClusterSetIPs and
        // prefers the cluster's own endpoints (its id is a ClusterProperty).
        rule(&read, &["multicluster.x-k8s.io"], &["serviceimports"]),
        rule(&read, &["about.k8s.io"], &["clusterproperties"]),
        // ...and tunnels to other members' east-west gateways with the cluster's hub
        // identity, which the agent keeps in this Secret (that one alone).
        json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"],
               "resourceNames": [atoll_api::cluster::HUB_KUBECONFIG_SECRET]}),
        rule(
            &all_rw,
            &[""],
            &[
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "persistentvolumes",
                "persistentvolumes/status",
            ],
        ),
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
        rule(
            &all_rw,
            &["apps"],
            &["replicasets", "deployments", "daemonsets", "statefulsets"],
        ),
        rule(&all_rw, &[""], &["replicationcontrollers"]),
        // The root CA publisher's `kube-root-ca.crt` in every namespace.
        rule(
            &["get", "list", "watch", "create", "update", "patch"],
            &[""],
            &["configmaps"],
        ),
        rule(
            &["update", "patch"],
            &[""],
            &["replicationcontrollers/status"],
        ),
        rule(
            &["update", "patch"],
            &["apps"],
            &[
                "replicasets/status",
                "deployments/status",
                "daemonsets/status",
                "statefulsets/status",
            ],
        ),
        rule(&all_rw, &["batch"], &["jobs", "cronjobs"]),
        rule(
            &["update", "patch"],
            &["batch"],
            &["jobs/status", "cronjobs/status"],
        ),
        rule(&all_rw, &["discovery.k8s.io"], &["endpointslices"]),
        rule(&read, &["coordination.k8s.io"], &["leases"]),
    ];
    controller_rules.extend(events());
    // The cluster DNS reads what it answers from, nothing more (kube-apiserver's
    // system:kube-dns, with the EndpointSlices and Pods a DNS server of today watches).
    let dns_rules = vec![
        rule(
            &["list", "watch"],
            &[""],
            &["services", "endpoints", "pods"],
        ),
        rule(
            &["list", "watch"],
            &["discovery.k8s.io"],
            &["endpointslices"],
        ),
        // clusterset.local: the multi-cluster services imported here.
        rule(
            &["list", "watch"],
            &["multicluster.x-k8s.io"],
            &["serviceimports"],
        ),
    ];
    vec![
        ("clusterroles", cluster_role("system:kube-dns", dns_rules)),
        (
            "clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "system:kube-dns", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                   "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "system:kube-dns"},
                   "subjects": [{"kind": "ServiceAccount", "name": "kube-dns", "namespace": "kube-system"},
                                {"apiGroup": RBAC_GROUP, "kind": "User", "name": "system:kube-dns"}]}),
        ),
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

    fn put(resource: &str, obj: Value) -> RbacChange {
        RbacChange::Put(RbacObject::parse(resource, &obj).expect("an RBAC object"))
    }

    fn role(ns: &str, name: &str, resource: &str) -> RbacChange {
        let (kind, meta) = if ns.is_empty() {
            ("clusterroles", json!({"name": name}))
        } else {
            ("roles", json!({"name": name, "namespace": ns}))
        };
        put(
            kind,
            json!({"metadata": meta, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": [resource]}]}),
        )
    }

    fn binding(ns: &str, name: &str, role_kind: &str, role: &str, users: &[&str]) -> RbacChange {
        let subjects: Vec<Value> = users
            .iter()
            .map(|u| json!({"kind": "User", "name": u}))
            .collect();
        let (kind, meta) = if ns.is_empty() {
            ("clusterrolebindings", json!({"name": name}))
        } else {
            ("rolebindings", json!({"name": name, "namespace": ns}))
        };
        put(
            kind,
            json!({"metadata": meta, "subjects": subjects, "roleRef": {"kind": role_kind, "name": role}}),
        )
    }

    fn can(authz: &Authorizer, user: &str, ns: &str, resource: &str) -> bool {
        let who = Identity {
            user: user.into(),
            groups: vec![],
        };
        authz.allowed(&who, &attrs("get", "", resource, "", ns, "x"))
    }

    #[test]
    fn the_index_follows_each_change() {
        let authz = Authorizer::default();
        // A binding before its role grants nothing; the role's arrival completes it.
        authz.update([binding("a", "b", "Role", "r", &["u"])]);
        assert!(!can(&authz, "u", "a", "pods"));
        authz.update([role("a", "r", "pods")]);
        assert!(can(&authz, "u", "a", "pods"));
        assert!(
            !can(&authz, "u", "other", "pods"),
            "a Role grants in its namespace only"
        );
        // The role's rules change: the binding's grants follow.
        authz.update([role("a", "r", "secrets")]);
        assert!(!can(&authz, "u", "a", "pods"));
        assert!(can(&authz, "u", "a", "secrets"));
        // The binding's subjects change.
        authz.update([binding("a", "b", "Role", "r", &["v"])]);
        assert!(!can(&authz, "u", "a", "secrets"));
        assert!(can(&authz, "v", "a", "secrets"));
        // A second binding to the same role; deleting one leaves the other's grants.
        authz.update([binding("a", "c", "Role", "r", &["v", "w"])]);
        authz.update(RbacChange::deleted(
            "/rbac.authorization.k8s.io/rolebindings/a/b",
        ));
        assert!(can(&authz, "v", "a", "secrets"));
        assert!(can(&authz, "w", "a", "secrets"));
        // Deleting the role takes away what its bindings granted.
        authz.update(RbacChange::deleted("/rbac.authorization.k8s.io/roles/a/r"));
        assert!(!can(&authz, "v", "a", "secrets"));
        assert!(
            authz
                .rules(
                    &Identity {
                        user: "v".into(),
                        groups: vec![]
                    },
                    "a"
                )
                .is_empty()
        );
        // A ClusterRole bound cluster-wide and in one namespace.
        authz.update([
            role("", "cr", "nodes"),
            binding("", "crb", "ClusterRole", "cr", &["x"]),
            binding("a", "rb", "ClusterRole", "cr", &["y"]),
        ]);
        assert!(can(&authz, "x", "", "nodes"));
        assert!(can(&authz, "x", "a", "nodes"));
        assert!(can(&authz, "y", "a", "nodes"));
        assert!(!can(&authz, "y", "", "nodes"));
        authz.update(RbacChange::deleted(
            "/rbac.authorization.k8s.io/clusterrolebindings/crb",
        ));
        assert!(!can(&authz, "x", "", "nodes"));
        assert!(can(&authz, "y", "a", "nodes"));
        authz.update(RbacChange::deleted(
            "/rbac.authorization.k8s.io/clusterroles/cr",
        ));
        assert!(!can(&authz, "y", "a", "nodes"));
        // Nothing is left behind in the buckets once every grant is gone.
        authz.update(RbacChange::deleted(
            "/rbac.authorization.k8s.io/rolebindings/a/c",
        ));
        authz.update(RbacChange::deleted(
            "/rbac.authorization.k8s.io/rolebindings/a/rb",
        ));
        let index = authz.index();
        assert!(index.grants.by_resource.is_empty());
        assert!(index.bindings.is_empty() && index.referrers.is_empty());
    }

    #[test]
    fn named_grants_are_found_by_name() {
        let authz = Authorizer::default();
        let named = |names: &[&str]| {
            put(
                "clusterroles",
                json!({"metadata": {"name": "csr"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": names}]}),
            )
        };
        authz.update([
            named(&["x", "y"]),
            binding("", "b", "ClusterRole", "csr", &["u"]),
        ]);
        let who = Identity {
            user: "u".into(),
            groups: vec![],
        };
        let get = |name: &str| authz.allowed(&who, &attrs("get", "", "pods", "", "", name));
        assert!(get("x") && get("y"));
        assert!(!get("z"));
        assert!(
            !get(""),
            "a named grant does not allow a request without a name"
        );
        authz.update([named(&["z"])]);
        assert!(!get("x") && get("z"));
        authz.update(RbacChange::deleted(
            "/rbac.authorization.k8s.io/clusterroles/csr",
        ));
        assert!(!get("z"));
        assert!(authz.index().grants.by_resource.is_empty());
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
