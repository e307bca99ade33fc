//! Scheduling one Placement: pure functions, no I/O (Open Cluster Management's semantics, with
//! its formulas, unless noted).
//!
//! 1. Candidates: the non-terminating members of the eligible sets (the sets bound to the
//!    placement's namespace, intersected with `spec.clusterSets` when given).
//! 2. Filters: predicates (ORed; label, claim and CEL selectors ANDed inside each), then taints
//!    and tolerations (`NoSelect` needs a toleration, `NoSelectIfNew` is tolerated for clusters
//!    already decided, `PreferNoSelect` always; `tolerationSeconds` counted from `timeAdded`).
//! 3. Prioritizers, each scoring in [-100, 100], summed with their weights: `Balance`,
//!    `Steady`, `ResourceAllocatableCPU`, `ResourceAllocatableMemory` and (beyond OCM) `Spread`.
//! 4. Selection: the best by total score, then by name, up to `numberOfClusters`. Beyond OCM,
//!    `spreadPolicy` constraints choose greedily: a cluster that would take a topology more than
//!    `maxSkew` above the least-used one is never picked under `DoNotSchedule` and picked last
//!    under `ScheduleAnyway`; the `Spread` prioritizer prefers the least-used topology.
//! 5. Decision groups: named groups first (first match), the rest after, each at most
//!    `clustersPerDecisionGroup`, sorted by name; always at least one (maybe empty) group.
//!
//! A placement that cannot be evaluated (a bad toleration, an unknown prioritizer or mode, a
//! CEL expression that does not compile, a bad group size) is *misconfigured*: the message
//! names the field and says why, as `<plugin>:<message>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use atoll_api::cluster::{ClusterTaint, ManagedCluster};
use atoll_api::placement::{
    ClusterClaimSelector, ClusterSelector, GroupClusterSelector, PlacementSpec,
    SpreadConstraintsTerm, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::cel;

/// The highest score a prioritizer gives.
pub const MAX_SCORE: i64 = 100;

pub const BALANCE: &str = "Balance";
pub const STEADY: &str = "Steady";
pub const ALLOCATABLE_CPU: &str = "ResourceAllocatableCPU";
pub const ALLOCATABLE_MEMORY: &str = "ResourceAllocatableMemory";
pub const SPREAD: &str = "Spread";

/// A cluster as the scheduler sees it: the object and what it needs of it, worked out once per
/// change of the cluster (not once per placement).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub claims: BTreeMap<String, String>,
    pub taints: Vec<ClusterTaint>,
    pub terminating: bool,
    /// `status.allocatable` and `status.capacity` of cpu and memory, as numbers (a cluster
    /// lacking either gets no resource score, as in OCM).
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    /// The object as JSON, for CEL predicates.
    pub json: serde_json::Value,
}

impl Cluster {
    pub fn from_managed(mc: &ManagedCluster) -> Cluster {
        let status = mc.status.clone().unwrap_or_default();
        let resource = |name: &str| -> Option<f64> {
            let alloc = status.allocatable.get(name)?;
            status.capacity.get(name)?;
            atoll_runtime::quantity::approximate(alloc)
        };
        Cluster {
            name: mc.metadata.name.clone().unwrap_or_default(),
            labels: mc.metadata.labels.clone().unwrap_or_default(),
            claims: status
                .cluster_claims
                .iter()
                .map(|c| (c.name.clone(), c.value.clone()))
                .collect(),
            taints: mc.spec.taints.clone(),
            terminating: mc.metadata.deletion_timestamp.is_some(),
            cpu: resource("cpu"),
            memory: resource("memory"),
            json: serde_json::to_value(mc).unwrap_or_default(),
        }
    }

    /// The facts that decide scheduling, to tell whether an update matters.
    pub fn scheduling_facts(&self) -> impl PartialEq + '_ {
        (
            &self.labels,
            &self.claims,
            &self.taints,
            self.terminating,
            self.cpu.map(f64::to_bits),
            self.memory.map(f64::to_bits),
        )
    }
}

/// What else the scheduler needs to know besides the placement and its candidates.
pub struct Context<'a> {
    /// The clusters this placement decided last time (for `Steady` and `NoSelectIfNew`).
    pub current: &'a BTreeSet<String>,
    /// For each candidate, in the same order, how many *other* placements decided it (for
    /// `Balance`); see [`others_of`].
    pub others: &'a [u32],
    /// The most any cluster is decided by other placements (`Balance`'s `maxCount`).
    pub max_others: u32,
    pub now: Timestamp,
    pub cel: &'a cel::Cache,
    /// Also report why each candidate was filtered and every score (for `explain`); the
    /// controller needs only the decisions.
    pub explain: bool,
}

/// `Context::others` and `max_others` from the number of placements deciding each cluster
/// (`counts`) and this placement's own decisions.
pub fn others_of(
    candidates: &[&Cluster],
    counts: &HashMap<String, u32>,
    own: &BTreeSet<String>,
) -> (Vec<u32>, u32) {
    let other = |name: &str, n: u32| n - u32::from(own.contains(name));
    let per = candidates
        .iter()
        .map(|c| counts.get(&c.name).map_or(0, |n| other(&c.name, *n)))
        .collect();
    let max = counts
        .iter()
        .map(|(name, n)| other(name, *n))
        .max()
        .unwrap_or(0);
    (per, max)
}

/// The scores of one prioritizer.
#[derive(Debug, Clone, PartialEq)]
pub struct PrioritizerScores {
    pub name: String,
    pub weight: i32,
    pub scores: BTreeMap<String, i64>,
}

/// Why a candidate was not picked by a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    pub cluster: String,
    pub filter: &'static str,
    pub reason: String,
}

/// A decision group: its name (empty for unnamed ones) and clusters (sorted by name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    pub name: String,
    pub clusters: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Candidates that a filter removed, and why.
    pub filtered: Vec<Filtered>,
    /// Candidates that passed the filters, best first.
    pub feasible: Vec<String>,
    pub prioritizers: Vec<PrioritizerScores>,
    /// Total score by cluster (the `Spread` prioritizer's part as of when each was picked).
    pub total: BTreeMap<String, i64>,
    /// The clusters picked, in the order they were picked.
    pub decisions: Vec<String>,
    /// Feasible clusters not picked because a `DoNotSchedule` spread constraint forbade it.
    pub spread_refused: Vec<String>,
    /// `numberOfClusters` minus what was picked (0 without `numberOfClusters`).
    pub unscheduled: i64,
    pub groups: Vec<Group>,
    /// When a toleration of a picked cluster expires: schedule again then.
    pub requeue_after: Option<Duration>,
    /// The least and most allocatable CPU and memory among the feasible clusters, which the
    /// resource prioritizers score against.
    pub bounds: ResourceBounds,
}

/// Where the feasible clusters' allocatable CPU and memory lie.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceBounds {
    pub cpu: Option<Bounds>,
    pub memory: Option<Bounds>,
}

/// The least and most of a figure, and how many clusters have each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: f64,
    pub at_min: usize,
    pub max: f64,
    pub at_max: usize,
}

impl Bounds {
    fn of(values: impl Iterator<Item = f64> + Clone) -> Option<Bounds> {
        let min = values.clone().reduce(f64::min)?;
        let max = values.clone().reduce(f64::max)?;
        Some(Bounds {
            min,
            at_min: values.clone().filter(|v| *v == min).count(),
            max,
            at_max: values.filter(|v| *v == max).count(),
        })
    }

    /// Whether taking away a cluster with figure `v` changes the least or the most.
    pub fn moved_without(&self, v: f64) -> bool {
        v < self.min
            || v > self.max
            || (v == self.min && self.at_min <= 1)
            || (v == self.max && self.at_max <= 1)
    }
}

/// A misconfiguration: the plugin and why (OCM's `<plugin>:<message>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Misconfigured {
    pub plugin: &'static str,
    pub message: String,
}

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.plugin, self.message)
    }
}

fn misconfigured<T>(plugin: &'static str, message: impl Into<String>) -> Result<T, Misconfigured> {
    Err(Misconfigured {
        plugin,
        message: message.into(),
    })
}

/// The eligible sets: those bound to the namespace (`bound`, whose sets exist), intersected
/// with `spec.clusterSets` when it names any. Sorted.
pub fn eligible_sets(spec: &PlacementSpec, bound: &BTreeSet<String>) -> Vec<String> {
    if spec.cluster_sets.is_empty() {
        bound.iter().cloned().collect()
    } else {
        let wanted: BTreeSet<&String> = spec.cluster_sets.iter().collect();
        bound
            .iter()
            .filter(|s| wanted.contains(s))
            .cloned()
            .collect()
    }
}

/// Schedule `spec` over `candidates` (the members of its eligible sets, without duplicates).
pub fn schedule(
    spec: &PlacementSpec,
    candidates: &[&Cluster],
    ctx: &Context,
) -> Result<Outcome, Misconfigured> {
    let predicates = Predicates::new(spec, ctx.cel)?;
    check_tolerations(&spec.tolerations)?;
    let weights = weights(spec)?;
    let spread = &spec.spread_policy.spread_constraints;
    check_spread(spread, &weights)?;
    let per_group = group_length(spec)?;
    check_group_selectors(spec)?;

    let mut out = Outcome::default();
    // Indices into `candidates` of those that pass the filters.
    let mut feasible: Vec<usize> = Vec::with_capacity(candidates.len());
    for (i, c) in candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.terminating)
    {
        if let Err(reason) = predicates.admit(c, ctx.explain) {
            if ctx.explain {
                out.filtered.push(Filtered {
                    cluster: c.name.clone(),
                    filter: "Predicate",
                    reason,
                });
            }
            continue;
        }
        match tolerated(c, &spec.tolerations, ctx.current.contains(&c.name), ctx.now) {
            Tolerated::Yes(_) => feasible.push(i),
            Tolerated::No(reason) => {
                if ctx.explain {
                    out.filtered.push(Filtered {
                        cluster: c.name.clone(),
                        filter: "TaintToleration",
                        reason,
                    });
                }
            }
        }
    }
    let clusters: Vec<&Cluster> = feasible.iter().map(|i| candidates[*i]).collect();
    out.bounds = ResourceBounds {
        cpu: Bounds::of(clusters.iter().filter_map(|c| c.cpu)),
        memory: Bounds::of(clusters.iter().filter_map(|c| c.memory)),
    };

    // Static scores, by position in `clusters`.
    let mut total: Vec<i64> = vec![0; clusters.len()];
    for (name, weight) in &weights {
        if *weight == 0 || name == SPREAD {
            continue;
        }
        let scores: Vec<Option<i64>> = match name.as_str() {
            BALANCE => {
                let others: Vec<u32> = feasible
                    .iter()
                    .map(|i| ctx.others.get(*i).copied().unwrap_or(0))
                    .collect();
                balance(&others, ctx.max_others)
            }
            STEADY => steady(&clusters, ctx.current),
            ALLOCATABLE_CPU => allocatable(&clusters, |c| c.cpu),
            ALLOCATABLE_MEMORY => allocatable(&clusters, |c| c.memory),
            _ => return unreachable_prioritizer(name),
        };
        for (t, s) in total.iter_mut().zip(&scores) {
            *t += s.unwrap_or(0) * i64::from(*weight);
        }
        if ctx.explain {
            out.prioritizers.push(PrioritizerScores {
                name: name.clone(),
                weight: *weight,
                scores: named(&clusters, &scores),
            });
        }
    }
    // Best first: by total score, then by name.
    let mut order: Vec<usize> = (0..clusters.len()).collect();
    order.sort_by(|a, b| {
        total[*b]
            .cmp(&total[*a])
            .then(clusters[*a].name.cmp(&clusters[*b].name))
    });
    let wanted = spec
        .number_of_clusters
        .map_or(clusters.len(), |n| usize::try_from(n.max(0)).unwrap_or(0));
    let spread_weight = weights.get(SPREAD).copied().unwrap_or(0);
    let picked: Vec<usize> = if spread.is_empty() {
        order.iter().copied().take(wanted).collect()
    } else {
        let p = spread_select(&clusters, &order, spread, &total, spread_weight, wanted);
        if spread_weight != 0 {
            let mut scores = vec![None; clusters.len()];
            for (i, s) in &p.spread_scores {
                scores[*i] = Some(*s);
                total[*i] += s * i64::from(spread_weight);
            }
            if ctx.explain {
                out.prioritizers.push(PrioritizerScores {
                    name: SPREAD.into(),
                    weight: spread_weight,
                    scores: named(&clusters, &scores),
                });
            }
        }
        out.spread_refused = p
            .refused
            .iter()
            .map(|i| clusters[*i].name.clone())
            .collect();
        p.decisions
    };
    out.decisions = picked.iter().map(|i| clusters[*i].name.clone()).collect();
    if ctx.explain {
        out.feasible = order.iter().map(|i| clusters[*i].name.clone()).collect();
        out.total = clusters
            .iter()
            .zip(&total)
            .map(|(c, t)| (c.name.clone(), *t))
            .collect();
    }
    if let Some(n) = spec.number_of_clusters {
        out.unscheduled = i64::from(n) - out.decisions.len() as i64;
    }

    // Re-schedule when a picked cluster's toleration runs out.
    out.requeue_after = picked
        .iter()
        .filter_map(
            |i| match tolerated(clusters[*i], &spec.tolerations, true, ctx.now) {
                Tolerated::Yes(expiry) => expiry,
                Tolerated::No(_) => None,
            },
        )
        .min();
    let picked: Vec<&Cluster> = picked.iter().map(|i| clusters[*i]).collect();
    out.groups = decision_groups(spec, &picked, per_group);
    Ok(out)
}

/// Whether cluster `c`, not decided by the placement, passes its filters (a misconfigured
/// placement counts every cluster as feasible: rescheduling it reports what is wrong).
pub fn feasible(spec: &PlacementSpec, c: &Cluster, now: Timestamp, cel: &cel::Cache) -> bool {
    if c.terminating {
        return false;
    }
    let Ok(predicates) = Predicates::new(spec, cel) else {
        return true;
    };
    predicates.admit(c, false).is_ok()
        && matches!(
            tolerated(c, &spec.tolerations, false, now),
            Tolerated::Yes(_)
        )
}

/// Whether taking cluster `c` (feasible, not picked) out of the placement's feasible clusters
/// can change its picks: spread constraints count every topology the feasible clusters are
/// in; allocatable resources are scored against the feasible clusters' least and most
/// (`bounds`, from the last schedule; unknown: assume it can).
pub fn depends_on_unpicked(
    spec: &PlacementSpec,
    c: &Cluster,
    bounds: Option<&ResourceBounds>,
) -> bool {
    if !spec.spread_policy.is_empty() {
        return true;
    }
    let Ok(weights) = weights(spec) else {
        return true;
    };
    let weighs = |n: &str| weights.get(n).is_some_and(|w| *w != 0);
    let moves = |b: Option<Bounds>, v: Option<f64>| match (b, v) {
        (_, None) => false,
        (Some(b), Some(v)) => b.moved_without(v),
        (None, Some(_)) => true,
    };
    let Some(bounds) = bounds else {
        return weighs(ALLOCATABLE_CPU) || weighs(ALLOCATABLE_MEMORY);
    };
    (weighs(ALLOCATABLE_CPU) && moves(bounds.cpu, c.cpu))
        || (weighs(ALLOCATABLE_MEMORY) && moves(bounds.memory, c.memory))
}

/// Scores by position as a map by cluster name (clusters without a score left out).
fn named(clusters: &[&Cluster], scores: &[Option<i64>]) -> BTreeMap<String, i64> {
    clusters
        .iter()
        .zip(scores)
        .filter_map(|(c, s)| s.map(|s| (c.name.clone(), s)))
        .collect()
}

fn unreachable_prioritizer<T>(name: &str) -> Result<T, Misconfigured> {
    misconfigured(
        "Prioritizer",
        format!("incorrect builtin prioritizer: {name}"),
    )
}

/// The predicates, compiled.
struct Predicates {
    terms: Vec<Term>,
}

struct Term {
    labels: LabelSelector,
    claims: ClusterClaimSelector,
    cel: Vec<std::sync::Arc<Result<cel::Expression, String>>>,
}

impl Predicates {
    fn new(spec: &PlacementSpec, cache: &cel::Cache) -> Result<Predicates, Misconfigured> {
        let mut terms = Vec::new();
        for (i, p) in spec.predicates.iter().enumerate() {
            let ClusterSelector {
                label_selector,
                claim_selector,
                cel_selector,
            } = &p.required_cluster_selector;
            atoll_api::selector::check(label_selector).map_err(|e| Misconfigured {
                plugin: "Predicate",
                message: format!("spec.predicates[{i}].requiredClusterSelector.labelSelector: {e}"),
            })?;
            for r in &claim_selector.match_expressions {
                atoll_api::selector::check_requirement(r).map_err(|e| Misconfigured {
                    plugin: "Predicate",
                    message: format!(
                        "spec.predicates[{i}].requiredClusterSelector.claimSelector: {e}"
                    ),
                })?;
            }
            let mut cel = Vec::new();
            for (j, src) in cel_selector.cel_expressions.iter().enumerate() {
                let e = cache.get(src);
                if let Err(why) = e.as_ref() {
                    return misconfigured(
                        "Predicate",
                        format!(
                            "spec.predicates[{i}].requiredClusterSelector.celSelector.celExpressions[{j}]: {why}"
                        ),
                    );
                }
                cel.push(e);
            }
            terms.push(Term {
                labels: label_selector.clone(),
                claims: claim_selector.clone(),
                cel,
            });
        }
        Ok(Predicates { terms })
    }

    /// `Ok` if some predicate selects the cluster (or there are none), else why not (spelled
    /// out only when `explain`: the controller does not need the words).
    fn admit(&self, c: &Cluster, explain: bool) -> Result<(), String> {
        if self.terms.is_empty() {
            return Ok(());
        }
        let mut why = Vec::new();
        for (i, t) in self.terms.iter().enumerate() {
            match t.failure(c) {
                None => return Ok(()),
                Some(w) if explain => why.push(format!("predicates[{i}]: {w}")),
                Some(_) => {}
            }
        }
        Err(why.join("; "))
    }
}

impl Term {
    /// Which part of the predicate the cluster fails, if any.
    fn failure(&self, c: &Cluster) -> Option<&'static str> {
        if !atoll_api::selector::matches(&self.labels, &c.labels).unwrap_or(false) {
            return Some("labels do not match labelSelector");
        }
        if !claims_match(&self.claims, &c.claims) {
            return Some("cluster claims do not match claimSelector");
        }
        for e in &self.cel {
            if !e.as_ref().as_ref().is_ok_and(|e| e.selects(&c.json)) {
                return Some("a celSelector expression is not true");
            }
        }
        None
    }
}

fn claims_match(sel: &ClusterClaimSelector, claims: &BTreeMap<String, String>) -> bool {
    sel.match_expressions
        .iter()
        .all(|r| atoll_api::selector::requirement_matches(r, claims).unwrap_or(false))
}

fn check_tolerations(tolerations: &[Toleration]) -> Result<(), Misconfigured> {
    for (i, t) in tolerations.iter().enumerate() {
        match t.operator.as_str() {
            "Equal" | "" if t.key.is_empty() => {
                return misconfigured(
                    "TaintToleration",
                    format!("spec.tolerations[{i}]: if the key is empty, operator must be Exists."),
                );
            }
            "Exists" if !t.value.is_empty() => {
                return misconfigured(
                    "TaintToleration",
                    format!(
                        "spec.tolerations[{i}]: if the operator is Exists, the value should be empty."
                    ),
                );
            }
            "Equal" | "" | "Exists" => {}
            other => {
                return misconfigured(
                    "TaintToleration",
                    format!("spec.tolerations[{i}]: operator {other:?} must be Equal or Exists"),
                );
            }
        }
        if t.toleration_seconds.is_some_and(|s| s < 0) {
            return misconfigured(
                "TaintToleration",
                format!("spec.tolerations[{i}]: tolerationSeconds must not be negative"),
            );
        }
    }
    Ok(())
}

/// Whether a cluster's taints are all tolerated; if so, when the first time-limited toleration
/// runs out.
enum Tolerated {
    Yes(Option<Duration>),
    No(String),
}

fn tolerated(c: &Cluster, tolerations: &[Toleration], decided: bool, now: Timestamp) -> Tolerated {
    let mut expiry: Option<Duration> = None;
    for taint in &c.taints {
        match taint_tolerated(taint, tolerations, decided, now) {
            Ok(Some(d)) => expiry = Some(expiry.map_or(d, |e| e.min(d))),
            Ok(None) => {}
            Err(why) => return Tolerated::No(why),
        }
    }
    Tolerated::Yes(expiry)
}

/// `Ok(None)`: tolerated for good; `Ok(Some(d))`: for `d` more; `Err`: not tolerated.
fn taint_tolerated(
    taint: &ClusterTaint,
    tolerations: &[Toleration],
    decided: bool,
    now: Timestamp,
) -> Result<Option<Duration>, String> {
    if taint.effect == "PreferNoSelect" || (taint.effect == "NoSelectIfNew" && decided) {
        return Ok(None);
    }
    let value = taint.value.as_deref().unwrap_or_default();
    let mut expired = false;
    for t in tolerations {
        if !t.effect.is_empty() && t.effect != taint.effect {
            continue;
        }
        if !t.key.is_empty() && t.key != taint.key {
            continue;
        }
        let matched = match t.operator.as_str() {
            "Exists" => true,
            _ => t.value == value,
        };
        if !matched {
            continue;
        }
        let Some(seconds) = t.toleration_seconds else {
            return Ok(None);
        };
        // Counted from when the taint was added; a taint without that time is as old as now.
        let added = taint
            .time_added
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(now);
        let until = added.as_second().saturating_add(seconds);
        let left = until - now.as_second();
        if left > 0 {
            return Ok(Some(Duration::from_secs(left as u64)));
        }
        expired = true;
    }
    let shown = match &taint.value {
        Some(v) => format!("{}={v}:{}", taint.key, taint.effect),
        None => format!("{}:{}", taint.key, taint.effect),
    };
    Err(if expired {
        format!("taint {shown} tolerated no longer (tolerationSeconds passed)")
    } else {
        format!("taint {shown} is not tolerated")
    })
}

/// The prioritizers and their weights (OCM's `getWeights`): `Additive` (or empty) starts from
/// Balance 1 and Steady 1, `Exact` from nothing; configurations override.
fn weights(spec: &PlacementSpec) -> Result<BTreeMap<String, i32>, Misconfigured> {
    let policy = &spec.prioritizer_policy;
    let mut weights: BTreeMap<String, i32> = match policy.mode.as_str() {
        "Additive" | "" => [(BALANCE.to_string(), 1), (STEADY.to_string(), 1)].into(),
        "Exact" => BTreeMap::new(),
        other => {
            return misconfigured(
                "Prioritizer",
                format!(
                    "incorrect prioritizer policy mode: {other} (spec.prioritizerPolicy.mode must be Additive or Exact)"
                ),
            );
        }
    };
    for (i, c) in policy.configurations.iter().enumerate() {
        let sc = &c.score_coordinate;
        match sc.type_.as_str() {
            "BuiltIn" | "" => {
                let name = sc.built_in.clone().unwrap_or_default();
                if ![BALANCE, STEADY, ALLOCATABLE_CPU, ALLOCATABLE_MEMORY, SPREAD]
                    .contains(&name.as_str())
                {
                    return misconfigured(
                        "Prioritizer",
                        format!(
                            "incorrect builtin prioritizer: {name:?} (spec.prioritizerPolicy.configurations[{i}].scoreCoordinate.builtIn must be Balance, Steady, ResourceAllocatableCPU, ResourceAllocatableMemory or Spread)"
                        ),
                    );
                }
                if !(-10..=10).contains(&c.weight) {
                    return misconfigured(
                        "Prioritizer",
                        format!(
                            "spec.prioritizerPolicy.configurations[{i}].weight {} is outside [-10, 10]",
                            c.weight
                        ),
                    );
                }
                weights.insert(name, c.weight);
            }
            "AddOn" => {
                return misconfigured(
                    "Prioritizer",
                    format!(
                        "spec.prioritizerPolicy.configurations[{i}]: AddOn scores are not served by this hub (no AddOnPlacementScore API); use a BuiltIn prioritizer"
                    ),
                );
            }
            other => {
                return misconfigured(
                    "Prioritizer",
                    format!(
                        "spec.prioritizerPolicy.configurations[{i}].scoreCoordinate.type {other:?} must be BuiltIn or AddOn"
                    ),
                );
            }
        }
    }
    Ok(weights)
}

fn check_spread(
    terms: &[SpreadConstraintsTerm],
    weights: &BTreeMap<String, i32>,
) -> Result<(), Misconfigured> {
    if terms.len() > 8 {
        return misconfigured(
            "Spread",
            "spec.spreadPolicy.spreadConstraints: at most 8 terms",
        );
    }
    for (i, t) in terms.iter().enumerate() {
        if t.topology_key.is_empty() {
            return misconfigured(
                "Spread",
                format!("spec.spreadPolicy.spreadConstraints[{i}].topologyKey is empty"),
            );
        }
        if !matches!(t.topology_key_type.as_str(), "Label" | "Claim") {
            return misconfigured(
                "Spread",
                format!(
                    "spec.spreadPolicy.spreadConstraints[{i}].topologyKeyType {:?} must be Label or Claim",
                    t.topology_key_type
                ),
            );
        }
        if t.max_skew < 1 {
            return misconfigured(
                "Spread",
                format!("spec.spreadPolicy.spreadConstraints[{i}].maxSkew must be at least 1"),
            );
        }
        if !matches!(
            t.when_unsatisfiable.as_str(),
            "DoNotSchedule" | "ScheduleAnyway"
        ) {
            return misconfigured(
                "Spread",
                format!(
                    "spec.spreadPolicy.spreadConstraints[{i}].whenUnsatisfiable {:?} must be DoNotSchedule or ScheduleAnyway",
                    t.when_unsatisfiable
                ),
            );
        }
    }
    if weights.get(SPREAD).is_some_and(|w| *w != 0) && terms.is_empty() {
        return misconfigured(
            "Spread",
            "the Spread prioritizer spreads over spec.spreadPolicy.spreadConstraints, and there are none",
        );
    }
    Ok(())
}

/// `Balance`: 100 for a cluster no other placement decided, else
/// `2 * trunc(100 * (0.5 - count / maxCount))`.
fn balance(others: &[u32], max: u32) -> Vec<Option<i64>> {
    others
        .iter()
        .map(|count| {
            Some(if *count == 0 {
                MAX_SCORE
            } else {
                let usage = f64::from(*count) / f64::from(max.max(1));
                2 * ((MAX_SCORE as f64) * (0.5 - usage)) as i64
            })
        })
        .collect()
}

/// `Steady`: 100 for a cluster already decided, 0 for the others.
fn steady(clusters: &[&Cluster], current: &BTreeSet<String>) -> Vec<Option<i64>> {
    clusters
        .iter()
        .map(|c| {
            Some(if current.contains(&c.name) {
                MAX_SCORE
            } else {
                0
            })
        })
        .collect()
}

/// `ResourceAllocatable*`: `trunc(((a - min) / (max - min) - 0.5) * 200)`, 100 for all when
/// every cluster has the same; clusters without the figure get no score.
fn allocatable(clusters: &[&Cluster], of: impl Fn(&Cluster) -> Option<f64>) -> Vec<Option<i64>> {
    let values: Vec<Option<f64>> = clusters.iter().map(|c| of(c)).collect();
    let known = || values.iter().flatten().copied();
    let (Some(min), Some(max)) = (known().reduce(f64::min), known().reduce(f64::max)) else {
        return vec![None; clusters.len()];
    };
    values
        .iter()
        .map(|a| {
            a.map(|a| {
                if max - min != 0.0 {
                    (((a - min) / (max - min) - 0.5) * 2.0 * MAX_SCORE as f64) as i64
                } else {
                    MAX_SCORE
                }
            })
        })
        .collect()
}

/// One spread term's state during a greedy selection: picks per topology value, and how many
/// topologies hold each count (so the least count is known at once).
struct Spread<'a> {
    term: &'a SpreadConstraintsTerm,
    counts: HashMap<String, i64>,
    histogram: BTreeMap<i64, usize>,
}

impl<'a> Spread<'a> {
    fn new(term: &'a SpreadConstraintsTerm, clusters: &[&Cluster]) -> Spread<'a> {
        let mut counts = HashMap::new();
        for c in clusters {
            if let Some(v) = topology(term, c) {
                counts.insert(v.to_string(), 0);
            }
        }
        let histogram = if counts.is_empty() {
            BTreeMap::new()
        } else {
            [(0, counts.len())].into()
        };
        Spread {
            term,
            counts,
            histogram,
        }
    }

    fn min(&self) -> i64 {
        self.histogram.keys().next().copied().unwrap_or(0)
    }

    fn max(&self) -> i64 {
        self.histogram.keys().next_back().copied().unwrap_or(0)
    }

    /// The skew if `c` were picked: its topology's count then, minus the least count then.
    /// `None` for a cluster without the topology key.
    fn skew_with(&self, c: &Cluster) -> Option<i64> {
        let v = topology(self.term, c)?;
        let n = self.counts.get(v).copied().unwrap_or(0);
        let min = self.min();
        let new_min = if n == min && self.histogram.get(&min) == Some(&1) {
            // It was the only least-used topology; the next count up becomes the least (or
            // itself, one higher).
            self.histogram
                .keys()
                .nth(1)
                .copied()
                .unwrap_or(n + 1)
                .min(n + 1)
        } else {
            min
        };
        Some(n + 1 - new_min)
    }

    /// The Spread prioritizer's score for `c` now: 100 in a least-used topology, down to -100
    /// in the most-used; 0 without the topology key.
    fn score(&self, c: &Cluster) -> i64 {
        let Some(v) = topology(self.term, c) else {
            return 0;
        };
        let n = self.counts.get(v).copied().unwrap_or(0);
        let (min, max) = (self.min(), self.max());
        if max == min {
            return MAX_SCORE;
        }
        MAX_SCORE - 2 * MAX_SCORE * (n - min) / (max - min)
    }

    fn pick(&mut self, c: &Cluster) {
        let Some(v) = topology(self.term, c) else {
            return;
        };
        let n = self.counts.entry(v.to_string()).or_insert(0);
        if let Some(k) = self.histogram.get_mut(n) {
            *k -= 1;
            if *k == 0 {
                self.histogram.remove(n);
            }
        }
        *n += 1;
        *self.histogram.entry(*n).or_default() += 1;
    }
}

fn topology<'c>(term: &SpreadConstraintsTerm, c: &'c Cluster) -> Option<&'c str> {
    match term.topology_key_type.as_str() {
        "Claim" => c.claims.get(&term.topology_key),
        _ => c.labels.get(&term.topology_key),
    }
    .map(String::as_str)
}

struct SpreadPick {
    /// Indices of the clusters picked, in order.
    decisions: Vec<usize>,
    refused: Vec<usize>,
    /// The `Spread` prioritizer's score of each picked cluster when it was picked.
    spread_scores: Vec<(usize, i64)>,
}

/// Pick up to `wanted` clusters one at a time: never one that breaks a `DoNotSchedule` term;
/// among the rest, those that break fewer (and less important) `ScheduleAnyway` terms first,
/// then by total score (with the `Spread` prioritizer's current score), then by name.
/// `order` is the clusters best first by static score.
fn spread_select(
    clusters: &[&Cluster],
    order: &[usize],
    terms: &[SpreadConstraintsTerm],
    total: &[i64],
    spread_weight: i32,
    wanted: usize,
) -> SpreadPick {
    let mut spreads: Vec<Spread> = terms.iter().map(|t| Spread::new(t, clusters)).collect();
    let mut left: Vec<usize> = order.to_vec();
    let mut out = SpreadPick {
        decisions: Vec::new(),
        refused: Vec::new(),
        spread_scores: Vec::new(),
    };
    while out.decisions.len() < wanted && !left.is_empty() {
        // (position in left, violations, score, spread score)
        let mut best: Option<(usize, Vec<bool>, i64, i64)> = None;
        for (pos, i) in left.iter().enumerate() {
            let c = clusters[*i];
            let mut violations = Vec::with_capacity(spreads.len());
            let mut forbidden = false;
            for s in &spreads {
                let hard = s.term.when_unsatisfiable == "DoNotSchedule";
                match s.skew_with(c) {
                    // Without the key a cluster cannot be placed in the topology that a hard
                    // term demands; a soft term does not care.
                    None => {
                        forbidden |= hard;
                        violations.push(false);
                    }
                    Some(skew) => {
                        let over = skew > i64::from(s.term.max_skew);
                        forbidden |= hard && over;
                        violations.push(over && !hard);
                    }
                }
            }
            if forbidden {
                continue;
            }
            let spread_score = if spreads.is_empty() {
                0
            } else {
                spreads.iter().map(|s| s.score(c)).sum::<i64>() / spreads.len() as i64
            };
            let score = total[*i] + spread_score * i64::from(spread_weight);
            let better = match &best {
                None => true,
                Some((bp, bv, bs, _)) => {
                    (&violations, -score, &c.name) < (bv, -*bs, &clusters[left[*bp]].name)
                }
            };
            if better {
                best = Some((pos, violations, score, spread_score));
            }
        }
        let Some((pos, _, _, spread_score)) = best else {
            break;
        };
        let i = left.remove(pos);
        for s in &mut spreads {
            s.pick(clusters[i]);
        }
        out.spread_scores.push((i, spread_score));
        out.decisions.push(i);
    }
    // What a hard term kept out while more were wanted.
    if out.decisions.len() < wanted {
        out.refused = left;
    }
    out
}

/// The group size from `clustersPerDecisionGroup`: a number, or a percentage of the picked
/// clusters (rounded up); a value of 0 or more than all is all. `Err` for a string that is not
/// a percentage.
fn group_length(spec: &PlacementSpec) -> Result<GroupLength, Misconfigured> {
    match &spec
        .decision_strategy
        .group_strategy
        .clusters_per_decision_group
    {
        None => Ok(GroupLength::Percent(100.0)),
        Some(IntOrString::Int(n)) => Ok(GroupLength::Count(i64::from(*n))),
        Some(IntOrString::String(s)) => {
            let bad = || Misconfigured {
                plugin: "DecisionStrategy",
                message: format!(
                    "spec.decisionStrategy.groupStrategy.clustersPerDecisionGroup {s:?} invalid type: string is not a percentage"
                ),
            };
            let p: f64 = s
                .strip_suffix('%')
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())?;
            if !p.is_finite() {
                return Err(bad());
            }
            Ok(GroupLength::Percent(p))
        }
    }
}

#[derive(Clone, Copy)]
enum GroupLength {
    Count(i64),
    Percent(f64),
}

impl GroupLength {
    fn of(self, total: usize) -> usize {
        let n = match self {
            GroupLength::Count(n) => n,
            GroupLength::Percent(p) => (p / 100.0 * total as f64).ceil() as i64,
        };
        if n <= 0 || n as usize > total {
            total
        } else {
            n as usize
        }
    }
}

fn check_group_selectors(spec: &PlacementSpec) -> Result<(), Misconfigured> {
    for (i, g) in spec
        .decision_strategy
        .group_strategy
        .decision_groups
        .iter()
        .enumerate()
    {
        let GroupClusterSelector {
            label_selector,
            claim_selector,
        } = &g.group_cluster_selector;
        atoll_api::selector::check(label_selector)
            .and_then(|_| {
                claim_selector
                    .match_expressions
                    .iter()
                    .try_for_each(atoll_api::selector::check_requirement)
            })
            .map_err(|e| Misconfigured {
                plugin: "DecisionStrategy",
                message: format!(
                    "spec.decisionStrategy.groupStrategy.decisionGroups[{i}].groupClusterSelector: {e}"
                ),
            })?;
    }
    Ok(())
}

/// Split the picked clusters into groups: named groups first (a cluster goes to the first
/// whose selector it matches), then the rest; each chunked to the group length, by name.
fn decision_groups(spec: &PlacementSpec, picked: &[&Cluster], length: GroupLength) -> Vec<Group> {
    let per_group = length.of(picked.len()).max(1);
    let mut rest: BTreeSet<&str> = picked.iter().map(|c| c.name.as_str()).collect();
    let mut groups = Vec::new();
    for g in &spec.decision_strategy.group_strategy.decision_groups {
        let sel = &g.group_cluster_selector;
        let mut matched: Vec<String> = picked
            .iter()
            .filter(|c| rest.contains(c.name.as_str()))
            .filter(|c| {
                atoll_api::selector::matches(&sel.label_selector, &c.labels).unwrap_or(false)
                    && claims_match(&sel.claim_selector, &c.claims)
            })
            .map(|c| c.name.clone())
            .collect();
        for m in &matched {
            rest.remove(m.as_str());
        }
        matched.sort();
        groups.extend(chunk(&g.group_name, matched, per_group));
    }
    let rest: Vec<String> = rest.into_iter().map(String::from).collect();
    groups.extend(chunk("", rest, per_group));
    if groups.is_empty() {
        groups.push(Group::default());
    }
    groups
}

fn chunk(name: &str, clusters: Vec<String>, size: usize) -> Vec<Group> {
    clusters
        .chunks(size)
        .map(|c| Group {
            name: name.to_string(),
            clusters: c.to_vec(),
        })
        .collect()
}

/// The `PlacementSatisfied` condition (status, reason, message), with OCM's precedence.
pub fn satisfied(
    spec: &PlacementSpec,
    eligible: &[String],
    bindings: usize,
    candidates: usize,
    decisions: usize,
    unscheduled: i64,
) -> (&'static str, &'static str, String) {
    if bindings == 0 {
        (
            "False",
            "NoManagedClusterSetBindings",
            "No valid ManagedClusterSetBindings found in placement namespace".into(),
        )
    } else if eligible.is_empty() {
        (
            "False",
            "NoIntersection",
            format!(
                "None of ManagedClusterSets [{}] is bound to placement namespace",
                spec.cluster_sets.join(",")
            ),
        )
    } else if candidates == 0 {
        (
            "False",
            "AllManagedClusterSetsEmpty",
            format!(
                "All ManagedClusterSets [{}] have no member ManagedCluster",
                eligible.join(",")
            ),
        )
    } else if decisions == 0 {
        (
            "False",
            "NoManagedClusterMatched",
            "No ManagedCluster matches any of the cluster predicate".into(),
        )
    } else if unscheduled <= 0 {
        (
            "True",
            "AllDecisionsScheduled",
            "All cluster decisions scheduled".into(),
        )
    } else {
        (
            "False",
            "NotAllDecisionsScheduled",
            format!("{unscheduled} cluster decisions unscheduled"),
        )
    }
}

#[cfg(test)]
mod tests;
