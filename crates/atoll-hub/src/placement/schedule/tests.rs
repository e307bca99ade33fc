//! The scheduler against the numbers Open Cluster Management's formulas give, and the spread
//! rules Atoll adds.

use super::*;
use atoll_api::placement::{
    ClusterCelSelector, ClusterPredicate, DecisionGroup, DecisionStrategy, GroupStrategy,
    PrioritizerConfig, PrioritizerPolicy, ScoreCoordinate, SpreadPolicy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

fn cluster(name: &str, labels: &[(&str, &str)]) -> Cluster {
    Cluster {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        claims: BTreeMap::new(),
        taints: Vec::new(),
        terminating: false,
        cpu: None,
        memory: None,
        json: serde_json::json!({"metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>()}}),
    }
}

fn with_cpu(mut c: Cluster, cpu: f64) -> Cluster {
    c.cpu = Some(cpu);
    c
}

fn taint(key: &str, value: Option<&str>, effect: &str, added: Option<Timestamp>) -> ClusterTaint {
    ClusterTaint {
        key: key.into(),
        value: value.map(String::from),
        effect: effect.into(),
        time_added: added.map(|t| t.to_string()),
    }
}

fn exact(prioritizers: &[(&str, i32)]) -> PrioritizerPolicy {
    PrioritizerPolicy {
        mode: "Exact".into(),
        configurations: prioritizers
            .iter()
            .map(|(name, weight)| PrioritizerConfig {
                score_coordinate: ScoreCoordinate {
                    type_: "BuiltIn".into(),
                    built_in: Some(name.to_string()),
                    add_on: None,
                },
                weight: *weight,
            })
            .collect(),
    }
}

struct World {
    current: BTreeSet<String>,
    others: HashMap<String, u32>,
    now: Timestamp,
    cel: cel::Cache,
}

impl World {
    fn new() -> World {
        World {
            current: BTreeSet::new(),
            others: HashMap::new(),
            now: "2026-12-01T12:00:00Z".parse().unwrap(),
            cel: cel::Cache::default(),
        }
    }

    fn run(&self, spec: &PlacementSpec, clusters: &[Cluster]) -> Result<Outcome, Misconfigured> {
        let refs: Vec<&Cluster> = clusters.iter().collect();
        // `others` holds other placements' counts; `others_of` subtracts this placement's own
        // decisions from totals, so add them in first.
        let mut counts = self.others.clone();
        for c in &self.current {
            *counts.entry(c.clone()).or_default() += 1;
        }
        let (others, max_others) = others_of(&refs, &counts, &self.current);
        schedule(
            spec,
            &refs,
            &Context {
                current: &self.current,
                others: &others,
                max_others,
                now: self.now,
                cel: &self.cel,
                explain: true,
            },
        )
    }

    fn decide(&self, spec: &PlacementSpec, clusters: &[Cluster]) -> Vec<String> {
        self.run(spec, clusters).expect("configured").decisions
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn scores(o: &Outcome, prioritizer: &str) -> Vec<(String, i64)> {
    o.prioritizers
        .iter()
        .find(|p| p.name == prioritizer)
        .map(|p| p.scores.clone().into_iter().collect())
        .unwrap_or_default()
}

#[test]
fn eligible_sets_are_the_bound_ones_intersected_with_the_named_ones() {
    let bound: BTreeSet<String> = ["default", "prod"].map(String::from).into();
    let mut spec = PlacementSpec::default();
    assert_eq!(eligible_sets(&spec, &bound), names(&["default", "prod"]));
    spec.cluster_sets = names(&["prod", "dev"]);
    assert_eq!(eligible_sets(&spec, &bound), names(&["prod"]));
    spec.cluster_sets = names(&["dev"]);
    assert!(eligible_sets(&spec, &bound).is_empty());
}

#[test]
fn predicates_are_ored_and_their_selectors_anded() {
    let w = World::new();
    let mut a = cluster("a", &[("env", "prod"), ("zone", "1")]);
    a.claims.insert("region".into(), "eu".into());
    let b = cluster("b", &[("env", "prod")]);
    let c = cluster("c", &[("env", "dev")]);
    let clusters = [a, b, c];
    let pred = |labels: LabelSelector, claims: Vec<LabelSelectorRequirement>, cel: &[&str]| {
        ClusterPredicate {
            required_cluster_selector: ClusterSelector {
                label_selector: labels,
                claim_selector: ClusterClaimSelector {
                    match_expressions: claims,
                },
                cel_selector: ClusterCelSelector {
                    cel_expressions: cel.iter().map(|s| s.to_string()).collect(),
                },
            },
        }
    };
    let env = |v: &str| LabelSelector {
        match_labels: Some([("env".to_string(), v.to_string())].into()),
        ..Default::default()
    };
    let region_eu = LabelSelectorRequirement {
        key: "region".into(),
        operator: "In".into(),
        values: Some(vec!["eu".into()]),
    };
    let cases: Vec<(Vec<ClusterPredicate>, Vec<&str>)> = vec![
        (vec![], vec!["a", "b", "c"]),
        (vec![pred(env("prod"), vec![], &[])], vec!["a", "b"]),
        // label AND claim
        (
            vec![pred(env("prod"), vec![region_eu.clone()], &[])],
            vec!["a"],
        ),
        // OR of two predicates
        (
            vec![
                pred(env("dev"), vec![], &[]),
                pred(LabelSelector::default(), vec![region_eu.clone()], &[]),
            ],
            vec!["a", "c"],
        ),
        // label AND CEL
        (
            vec![pred(
                env("prod"),
                vec![],
                &[r#"managedCluster.metadata.name != "a""#],
            )],
            vec!["b"],
        ),
    ];
    for (predicates, want) in cases {
        let spec = PlacementSpec {
            predicates: predicates.clone(),
            ..Default::default()
        };
        let mut got = w.decide(&spec, &clusters);
        got.sort();
        assert_eq!(got, names(&want), "{predicates:?}");
    }
    // A CEL expression that does not compile: misconfigured, naming the field.
    let spec = PlacementSpec {
        predicates: vec![pred(LabelSelector::default(), vec![], &["1 +"])],
        ..Default::default()
    };
    let err = w.run(&spec, &clusters).unwrap_err();
    assert_eq!(err.plugin, "Predicate");
    assert!(
        err.message
            .contains("spec.predicates[0].requiredClusterSelector.celSelector.celExpressions[0]"),
        "{err}"
    );
    // A broken label selector too.
    let spec = PlacementSpec {
        predicates: vec![pred(
            LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: None,
                }]),
                ..Default::default()
            },
            vec![],
            &[],
        )],
        ..Default::default()
    };
    assert!(w.run(&spec, &clusters).is_err());
}

#[test]
fn terminating_clusters_are_never_candidates() {
    let w = World::new();
    let mut gone = cluster("gone", &[]);
    gone.terminating = true;
    let spec = PlacementSpec::default();
    assert_eq!(
        w.decide(&spec, &[gone, cluster("here", &[])]),
        names(&["here"])
    );
}

#[test]
fn balance_scores_as_ocm() {
    let mut w = World::new();
    w.others = [
        ("a".to_string(), 3),
        ("b".to_string(), 1),
        ("c".to_string(), 2),
    ]
    .into();
    let spec = PlacementSpec {
        prioritizer_policy: exact(&[(BALANCE, 1)]),
        ..Default::default()
    };
    let clusters = ["a", "b", "c", "d"].map(|n| cluster(n, &[]));
    let o = w.run(&spec, &clusters).unwrap();
    // a: 2*int(100*(0.5-3/3)) = -100; b: 2*int(100*(0.5-1/3)) = 2*16 = 32;
    // c: 2*int(100*(0.5-2/3)) = 2*(-16) = -32; d: nobody's, 100.
    assert_eq!(
        scores(&o, BALANCE),
        vec![
            ("a".into(), -100),
            ("b".into(), 32),
            ("c".into(), -32),
            ("d".into(), 100)
        ]
    );
    assert_eq!(o.decisions, names(&["d", "b", "c", "a"]));
}

#[test]
fn steady_keeps_what_was_decided_against_balance() {
    let mut w = World::new();
    w.current = ["b".to_string()].into();
    w.others = [("b".to_string(), 1)].into();
    let spec = PlacementSpec {
        number_of_clusters: Some(1),
        ..Default::default()
    };
    let clusters = ["a", "b"].map(|n| cluster(n, &[]));
    let o = w.run(&spec, &clusters).unwrap();
    // Additive defaults: Balance 1 + Steady 1. a: 100 + 0; b: 2*int(100*(0.5-1)) = -100, + 100.
    assert_eq!(o.total["a"], 100);
    assert_eq!(o.total["b"], 0);
    assert_eq!(o.decisions, names(&["a"]));
    // With Steady weighted 3 the current one stays.
    let spec = PlacementSpec {
        number_of_clusters: Some(1),
        prioritizer_policy: PrioritizerPolicy {
            mode: "Additive".into(),
            configurations: exact(&[(STEADY, 3)]).configurations,
        },
        ..Default::default()
    };
    assert_eq!(w.decide(&spec, &clusters), names(&["b"]));
}

#[test]
fn allocatable_scores_as_ocm() {
    let w = World::new();
    let clusters = [
        with_cpu(cluster("a", &[]), 1.0),
        with_cpu(cluster("b", &[]), 4.0),
        with_cpu(cluster("c", &[]), 10.0),
        cluster("unknown", &[]),
    ];
    let spec = PlacementSpec {
        prioritizer_policy: exact(&[(ALLOCATABLE_CPU, 1)]),
        ..Default::default()
    };
    let o = w.run(&spec, &clusters).unwrap();
    // ((a - 1) / 9 - 0.5) * 200, truncated: -100, -33, 100; no figure, no score.
    assert_eq!(
        scores(&o, ALLOCATABLE_CPU),
        vec![("a".into(), -100), ("b".into(), -33), ("c".into(), 100)]
    );
    assert_eq!(o.decisions, names(&["c", "unknown", "b", "a"]));
    // All equal: 100 each.
    let same = [
        with_cpu(cluster("a", &[]), 2.0),
        with_cpu(cluster("b", &[]), 2.0),
    ];
    let o = w.run(&spec, &same).unwrap();
    assert_eq!(
        scores(&o, ALLOCATABLE_CPU),
        vec![("a".into(), 100), ("b".into(), 100)]
    );
    // A negative weight prefers the smallest.
    let spec = PlacementSpec {
        number_of_clusters: Some(1),
        prioritizer_policy: exact(&[(ALLOCATABLE_CPU, -2)]),
        ..Default::default()
    };
    assert_eq!(w.decide(&spec, &clusters[..3]), names(&["a"]));
}

#[test]
fn top_n_by_score_then_name() {
    let w = World::new();
    let spec = PlacementSpec {
        number_of_clusters: Some(2),
        ..Default::default()
    };
    let clusters = ["c", "a", "b"].map(|n| cluster(n, &[]));
    let o = w.run(&spec, &clusters).unwrap();
    assert_eq!(o.decisions, names(&["a", "b"]));
    assert_eq!(o.unscheduled, 0);
    let spec = PlacementSpec {
        number_of_clusters: Some(5),
        ..Default::default()
    };
    assert_eq!(w.run(&spec, &clusters).unwrap().unscheduled, 2);
}

#[test]
fn taints_and_tolerations() {
    let mut w = World::new();
    let now = w.now;
    let ten_ago = now - k8s_openapi::jiff::SignedDuration::from_secs(10);
    let mk = |name: &str, t: ClusterTaint| {
        let mut c = cluster(name, &[]);
        c.taints = vec![t];
        c
    };
    let clusters = [
        mk(
            "noselect",
            taint("gpu", Some("yes"), "NoSelect", Some(ten_ago)),
        ),
        mk("prefer", taint("busy", None, "PreferNoSelect", None)),
        mk("ifnew", taint("full", None, "NoSelectIfNew", None)),
        mk(
            "unreachable",
            taint(
                atoll_api::cluster::TAINT_UNREACHABLE,
                None,
                "NoSelect",
                Some(ten_ago),
            ),
        ),
    ];
    let tol = |key: &str, op: &str, value: &str, effect: &str, secs: Option<i64>| Toleration {
        key: key.into(),
        operator: op.into(),
        value: value.into(),
        effect: effect.into(),
        toleration_seconds: secs,
    };
    let run = |w: &World, tolerations: Vec<Toleration>| {
        let spec = PlacementSpec {
            tolerations,
            ..Default::default()
        };
        let mut d = w.decide(&spec, &clusters);
        d.sort();
        d
    };
    // PreferNoSelect is always tolerated; NoSelectIfNew only for a cluster already decided.
    assert_eq!(run(&w, vec![]), names(&["prefer"]));
    w.current = ["ifnew".to_string()].into();
    assert_eq!(run(&w, vec![]), names(&["ifnew", "prefer"]));
    w.current.clear();
    // Equal needs the value; Exists takes any; an effect must match when given.
    assert_eq!(
        run(&w, vec![tol("gpu", "Equal", "yes", "", None)]),
        names(&["noselect", "prefer"])
    );
    assert_eq!(
        run(&w, vec![tol("gpu", "Equal", "no", "", None)]),
        names(&["prefer"])
    );
    assert_eq!(
        run(&w, vec![tol("gpu", "Exists", "", "NoSelect", None)]),
        names(&["noselect", "prefer"])
    );
    assert_eq!(
        run(&w, vec![tol("gpu", "Exists", "", "PreferNoSelect", None)]),
        names(&["prefer"])
    );
    // An empty key with Exists tolerates everything.
    assert_eq!(
        run(&w, vec![tol("", "Exists", "", "", None)]),
        names(&["ifnew", "noselect", "prefer", "unreachable"])
    );
    // tolerationSeconds counts from timeAdded (10 s ago): 30 s tolerates for 20 s more and
    // requeues then; 5 s has run out.
    let spec = PlacementSpec {
        tolerations: vec![tol(
            atoll_api::cluster::TAINT_UNREACHABLE,
            "Exists",
            "",
            "",
            Some(30),
        )],
        ..Default::default()
    };
    let o = w.run(&spec, &clusters).unwrap();
    assert!(o.decisions.contains(&"unreachable".to_string()));
    assert_eq!(o.requeue_after, Some(Duration::from_secs(20)));
    let spec = PlacementSpec {
        tolerations: vec![tol(
            atoll_api::cluster::TAINT_UNREACHABLE,
            "Exists",
            "",
            "",
            Some(5),
        )],
        ..Default::default()
    };
    let o = w.run(&spec, &clusters).unwrap();
    assert!(!o.decisions.contains(&"unreachable".to_string()));
    let why = o
        .filtered
        .iter()
        .find(|f| f.cluster == "unreachable")
        .unwrap();
    assert_eq!(why.filter, "TaintToleration");
    assert!(why.reason.contains("no longer"), "{}", why.reason);
}

#[test]
fn bad_configurations_are_misconfigured_with_the_field_named() {
    let w = World::new();
    let clusters = [cluster("a", &[])];
    let tol = |key: &str, op: &str, value: &str| Toleration {
        key: key.into(),
        operator: op.into(),
        value: value.into(),
        ..Default::default()
    };
    let cases: Vec<(PlacementSpec, &str, &str)> = vec![
        (
            PlacementSpec {
                tolerations: vec![tol("", "Equal", "")],
                ..Default::default()
            },
            "TaintToleration",
            "spec.tolerations[0]: if the key is empty, operator must be Exists.",
        ),
        (
            PlacementSpec {
                tolerations: vec![tol("k", "Exists", "v")],
                ..Default::default()
            },
            "TaintToleration",
            "the value should be empty",
        ),
        (
            PlacementSpec {
                prioritizer_policy: exact(&[("Fastest", 1)]),
                ..Default::default()
            },
            "Prioritizer",
            "incorrect builtin prioritizer: \"Fastest\"",
        ),
        (
            PlacementSpec {
                prioritizer_policy: PrioritizerPolicy {
                    mode: "Random".into(),
                    configurations: vec![],
                },
                ..Default::default()
            },
            "Prioritizer",
            "incorrect prioritizer policy mode: Random",
        ),
        (
            PlacementSpec {
                decision_strategy: DecisionStrategy {
                    group_strategy: GroupStrategy {
                        clusters_per_decision_group: Some(IntOrString::String("half".into())),
                        ..Default::default()
                    },
                },
                ..Default::default()
            },
            "DecisionStrategy",
            "string is not a percentage",
        ),
        (
            PlacementSpec {
                prioritizer_policy: exact(&[(SPREAD, 1)]),
                ..Default::default()
            },
            "Spread",
            "there are none",
        ),
    ];
    for (spec, plugin, text) in cases {
        let err = w.run(&spec, &clusters).unwrap_err();
        assert_eq!(err.plugin, plugin, "{err}");
        assert!(err.to_string().contains(text), "{err} lacks {text:?}");
    }
}

#[test]
fn decision_groups_split_as_ocm() {
    let w = World::new();
    let clusters: Vec<Cluster> = ["c1", "c2", "c3", "c4", "c5"]
        .iter()
        .map(|n| {
            let canary = if *n == "c4" { "true" } else { "false" };
            cluster(n, &[("canary", canary)])
        })
        .collect();
    let groups = |strategy: GroupStrategy| {
        let spec = PlacementSpec {
            decision_strategy: DecisionStrategy {
                group_strategy: strategy,
            },
            ..Default::default()
        };
        w.run(&spec, &clusters)
            .unwrap()
            .groups
            .into_iter()
            .map(|g| (g.name, g.clusters))
            .collect::<Vec<_>>()
    };
    let g = |name: &str, c: &[&str]| (name.to_string(), names(c));
    // Size 2: 2/2/1.
    assert_eq!(
        groups(GroupStrategy {
            clusters_per_decision_group: Some(IntOrString::Int(2)),
            ..Default::default()
        }),
        vec![g("", &["c1", "c2"]), g("", &["c3", "c4"]), g("", &["c5"])]
    );
    // 25% of 5 is 2 (rounded up).
    assert_eq!(
        groups(GroupStrategy {
            clusters_per_decision_group: Some(IntOrString::String("25%".into())),
            ..Default::default()
        })
        .len(),
        3
    );
    // Named group first, then the rest; 0 or too many means one group.
    assert_eq!(
        groups(GroupStrategy {
            decision_groups: vec![DecisionGroup {
                group_name: "canary".into(),
                group_cluster_selector: GroupClusterSelector {
                    label_selector: LabelSelector {
                        match_labels: Some([("canary".to_string(), "true".to_string())].into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            }],
            clusters_per_decision_group: Some(IntOrString::Int(0)),
        }),
        vec![g("canary", &["c4"]), g("", &["c1", "c2", "c3", "c5"])]
    );
    // Nothing picked: still one (empty) group.
    let spec = PlacementSpec {
        number_of_clusters: Some(0),
        ..Default::default()
    };
    assert_eq!(
        w.run(&spec, &clusters).unwrap().groups,
        vec![Group::default()]
    );
}

fn zones() -> Vec<Cluster> {
    // Zone a has 3 clusters, b 2, c 1.
    [
        ("a1", "a"),
        ("a2", "a"),
        ("a3", "a"),
        ("b1", "b"),
        ("b2", "b"),
        ("c1", "c"),
    ]
    .iter()
    .map(|(n, z)| cluster(n, &[("zone", z)]))
    .collect()
}

fn spread(when: &str, skew: i32) -> SpreadPolicy {
    SpreadPolicy {
        spread_constraints: vec![SpreadConstraintsTerm {
            topology_key: "zone".into(),
            topology_key_type: "Label".into(),
            max_skew: skew,
            when_unsatisfiable: when.into(),
        }],
    }
}

#[test]
fn spread_spreads_picks_over_topologies() {
    let w = World::new();
    // Three of six, one per zone, where plain top-3 by name would take all of zone a.
    let spec = PlacementSpec {
        number_of_clusters: Some(3),
        spread_policy: spread("ScheduleAnyway", 1),
        ..Default::default()
    };
    assert_eq!(w.decide(&spec, &zones()), names(&["a1", "b1", "c1"]));
    // Six with DoNotSchedule and maxSkew 1: a,b,c,a,b, then a third in a would make a skew
    // of 2 over c: refused, so one decision stays unscheduled.
    let spec = PlacementSpec {
        number_of_clusters: Some(6),
        spread_policy: spread("DoNotSchedule", 1),
        ..Default::default()
    };
    let o = w.run(&spec, &zones()).unwrap();
    assert_eq!(o.decisions, names(&["a1", "b1", "c1", "a2", "b2"]));
    assert_eq!(o.unscheduled, 1);
    assert_eq!(o.spread_refused, names(&["a3"]));
    // maxSkew 2 allows it; ScheduleAnyway takes it last.
    let spec = PlacementSpec {
        number_of_clusters: Some(6),
        spread_policy: spread("DoNotSchedule", 2),
        ..Default::default()
    };
    assert_eq!(w.decide(&spec, &zones()).len(), 6);
    let spec = PlacementSpec {
        number_of_clusters: Some(6),
        spread_policy: spread("ScheduleAnyway", 1),
        ..Default::default()
    };
    assert_eq!(
        w.decide(&spec, &zones()).last().map(String::as_str),
        Some("a3")
    );
    // A hard term skips clusters without the key.
    let mut clusters = zones();
    clusters.push(cluster("nozone", &[]));
    let spec = PlacementSpec {
        spread_policy: spread("DoNotSchedule", 3),
        ..Default::default()
    };
    assert!(!w.decide(&spec, &clusters).contains(&"nozone".to_string()));
}

#[test]
fn spread_prioritizer_prefers_the_least_used_topology_over_a_claim() {
    let w = World::new();
    let mut clusters: Vec<Cluster> = Vec::new();
    for (n, region, cpu) in [("x1", "eu", 8.0), ("x2", "eu", 8.0), ("y1", "us", 1.0)] {
        let mut c = with_cpu(cluster(n, &[]), cpu);
        c.claims.insert("region".into(), region.into());
        clusters.push(c);
    }
    let term = SpreadPolicy {
        spread_constraints: vec![SpreadConstraintsTerm {
            topology_key: "region".into(),
            topology_key_type: "Claim".into(),
            max_skew: 5,
            when_unsatisfiable: "ScheduleAnyway".into(),
        }],
    };
    // CPU alone picks both eu clusters; with Spread weighted 2 the second pick is us.
    let spec = PlacementSpec {
        number_of_clusters: Some(2),
        prioritizer_policy: exact(&[(ALLOCATABLE_CPU, 1)]),
        spread_policy: term.clone(),
        ..Default::default()
    };
    assert_eq!(w.decide(&spec, &clusters), names(&["x1", "x2"]));
    let spec = PlacementSpec {
        number_of_clusters: Some(2),
        prioritizer_policy: exact(&[(ALLOCATABLE_CPU, 1), (SPREAD, 2)]),
        spread_policy: term,
        ..Default::default()
    };
    let o = w.run(&spec, &clusters).unwrap();
    assert_eq!(o.decisions, names(&["x1", "y1"]));
    // x1 was picked when all regions were empty (100); y1 when eu had one (us least: 100).
    assert_eq!(
        scores(&o, SPREAD),
        vec![("x1".into(), 100), ("y1".into(), 100)]
    );
}

#[test]
fn satisfied_follows_ocm_precedence() {
    let spec = PlacementSpec {
        cluster_sets: names(&["prod"]),
        ..Default::default()
    };
    let sets = names(&["prod"]);
    let reason = |b, e: &[String], c, d, u| satisfied(&spec, e, b, c, d, u).1;
    assert_eq!(reason(0, &sets, 3, 1, 0), "NoManagedClusterSetBindings");
    assert_eq!(reason(1, &[], 3, 1, 0), "NoIntersection");
    assert_eq!(reason(1, &sets, 0, 0, 0), "AllManagedClusterSetsEmpty");
    assert_eq!(reason(1, &sets, 3, 0, 1), "NoManagedClusterMatched");
    assert_eq!(reason(1, &sets, 3, 2, 0), "AllDecisionsScheduled");
    assert_eq!(reason(1, &sets, 3, 2, 1), "NotAllDecisionsScheduled");
    assert_eq!(
        satisfied(&spec, &sets, 1, 3, 2, 1).2,
        "1 cluster decisions unscheduled"
    );
}

#[test]
fn which_unpicked_clusters_matter() {
    let w = World::new();
    // Bounds over CPU 1, 4, 4, 10: taking away a 4 changes nothing, the 1 or the 10 does.
    let clusters = [
        with_cpu(cluster("a", &[]), 1.0),
        with_cpu(cluster("b", &[]), 4.0),
        with_cpu(cluster("c", &[]), 4.0),
        with_cpu(cluster("d", &[]), 10.0),
    ];
    let cpu = PlacementSpec {
        number_of_clusters: Some(1),
        prioritizer_policy: exact(&[(ALLOCATABLE_CPU, 1)]),
        ..Default::default()
    };
    let o = w.run(&cpu, &clusters).unwrap();
    let b = o.bounds.cpu.unwrap();
    assert_eq!((b.min, b.at_min, b.max, b.at_max), (1.0, 1, 10.0, 1));
    assert!(!b.moved_without(4.0));
    assert!(b.moved_without(1.0) && b.moved_without(10.0));
    assert!(!depends_on_unpicked(&cpu, &clusters[1], Some(&o.bounds)));
    assert!(depends_on_unpicked(&cpu, &clusters[0], Some(&o.bounds)));
    assert!(
        depends_on_unpicked(&cpu, &clusters[1], None),
        "unknown bounds: assume so"
    );
    // Balance and Steady do not rank by unpicked clusters; spread constraints do.
    let plain = PlacementSpec::default();
    assert!(!depends_on_unpicked(&plain, &clusters[0], None));
    let spread_spec = PlacementSpec {
        spread_policy: spread("ScheduleAnyway", 1),
        ..Default::default()
    };
    assert!(depends_on_unpicked(
        &spread_spec,
        &clusters[0],
        Some(&o.bounds)
    ));
    // Feasibility of one cluster, as the filters see it.
    let mut tainted = cluster("t", &[("tier", "gold")]);
    tainted.taints = vec![taint("x", None, "NoSelect", None)];
    let gold = PlacementSpec {
        predicates: vec![ClusterPredicate {
            required_cluster_selector: ClusterSelector {
                label_selector: LabelSelector {
                    match_labels: Some([("tier".to_string(), "gold".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        }],
        ..Default::default()
    };
    assert!(!feasible(&gold, &tainted, w.now, &w.cel));
    tainted.taints.clear();
    assert!(feasible(&gold, &tainted, w.now, &w.cel));
    assert!(!feasible(&gold, &cluster("plain", &[]), w.now, &w.cel));
}
