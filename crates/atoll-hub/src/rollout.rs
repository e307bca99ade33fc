//! Rolling a ManifestWorkReplicaSet out over the clusters a placement decided: pure
//! functions, no I/O (Open Cluster Management's strategies, `All`, `Progressive` and
//! `ProgressivePerGroup`, with its knobs).
//!
//! Each cluster is in one state: `ToApply` (no work, or one from an older template),
//! `Applying` (updated, not yet applied at its generation), `Progressing`, `Succeeded` (since
//! when), `Failed` (why) or `TimeOut` (past `progressDeadline`). Beyond OCM, whose progressive
//! rollout needs hand-written CEL rules to know a cluster succeeded, a cluster succeeds when its
//! work is applied and its workloads are healthy by their kind's own rule (the work's
//! `Progressing=False`, as the applier reports it), and a rollout whose failures pass
//! `maxFailures` stops and says which cluster failed and why.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    ToApply,
    Applying,
    Progressing,
    /// Succeeded this many seconds ago.
    Succeeded(i64),
    Failed(String),
    TimeOut,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::ToApply => "ToApply",
            State::Applying | State::Progressing => "Progressing",
            State::Succeeded(_) => "Succeeded",
            State::Failed(_) => "Failed",
            State::TimeOut => "TimeOut",
        }
    }

    fn failed(&self) -> bool {
        matches!(self, State::Failed(_) | State::TimeOut)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// Its decision group.
    pub group: usize,
    pub group_name: String,
    pub state: State,
}

/// The strategy, with its durations parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    pub kind: Kind,
    pub min_success: Duration,
    pub progress_deadline: Option<Duration>,
    pub max_failures: Option<IntOrString>,
    pub max_concurrency: Option<IntOrString>,
    /// Groups (by index or name) rolled out first, none allowed to fail.
    pub mandatory: Vec<(Option<usize>, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    All,
    Progressive,
    ProgressivePerGroup,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Clusters whose work is to be created or updated now.
    pub apply: Vec<String>,
    /// Why the rollout stopped (failures past `maxFailures`, or in a mandatory group).
    pub stopped: Option<String>,
    /// Every cluster succeeded.
    pub complete: bool,
    /// When to look again without a change (a `minSuccessTime` running out).
    pub requeue: Option<Duration>,
}

/// `n` as a number or percentage of `total` (rounded up), at least 1 when given.
pub fn count_of(v: &IntOrString, total: usize) -> Result<usize, String> {
    match v {
        IntOrString::Int(n) if *n >= 0 => Ok(*n as usize),
        IntOrString::Int(n) => Err(format!("{n} is negative")),
        IntOrString::String(s) => {
            let p: f64 = s
                .strip_suffix('%')
                .ok_or_else(|| format!("{s:?} is neither a number nor a percentage"))?
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{s:?} is not between 0% and 100%"));
            }
            Ok((p / 100.0 * total as f64).ceil() as usize)
        }
    }
}

/// `None` or a Go-style duration: `90s`, `10m`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{s:?}: a number without a unit (s, m, h)"))?;
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 90s, 10m, 1h"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
        };
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(Some(total))
}

fn in_flight(c: &Cluster, min_success: Duration) -> bool {
    match &c.state {
        State::Applying | State::Progressing => true,
        State::Succeeded(ago) => (*ago as u64) < min_success.as_secs(),
        _ => false,
    }
}

fn done(c: &Cluster, min_success: Duration) -> bool {
    matches!(&c.state, State::Succeeded(ago) if (*ago as u64) >= min_success.as_secs())
}

fn mandatory(s: &Strategy, c: &Cluster) -> bool {
    s.mandatory.iter().any(|(i, n)| {
        i.is_some_and(|i| i == c.group) || n.as_ref().is_some_and(|n| *n == c.group_name)
    })
}

/// Plan the next step of the rollout over `clusters` (sorted by group, then name).
pub fn plan(strategy: &Strategy, clusters: &[Cluster]) -> Result<Plan, String> {
    let total = clusters.len();
    let mut out = Plan {
        complete: clusters.iter().all(|c| done(c, Duration::ZERO)),
        ..Default::default()
    };
    // When a cluster's minSuccessTime runs out, the next may go.
    out.requeue = clusters
        .iter()
        .filter_map(|c| match c.state {
            State::Succeeded(ago) if (ago as u64) < strategy.min_success.as_secs() => Some(
                Duration::from_secs(strategy.min_success.as_secs() - ago as u64 + 1),
            ),
            _ => None,
        })
        .min();
    let failed: Vec<&Cluster> = clusters.iter().filter(|c| c.state.failed()).collect();
    let why = |c: &Cluster| match &c.state {
        State::Failed(w) => format!("cluster {} failed: {w}", c.name),
        State::TimeOut => format!("cluster {} did not succeed within progressDeadline", c.name),
        _ => String::new(),
    };
    if strategy.kind == Kind::All {
        out.apply = clusters
            .iter()
            .filter(|c| c.state == State::ToApply)
            .map(|c| c.name.clone())
            .collect();
        return Ok(out);
    }
    let max_failures = match &strategy.max_failures {
        Some(v) => count_of(v, total).map_err(|e| format!("maxFailures {e}"))?,
        None => 0,
    };
    if let Some(c) = failed.iter().find(|c| mandatory(strategy, c)) {
        out.stopped = Some(format!(
            "rollout stopped: {} (in a mandatory decision group, which may not fail)",
            why(c)
        ));
        return Ok(out);
    }
    if failed.len() > max_failures {
        out.stopped = Some(format!(
            "rollout stopped: {} of {total} clusters failed, more than maxFailures {max_failures}; {}",
            failed.len(),
            failed.iter().map(|c| why(c)).collect::<Vec<_>>().join("; ")
        ));
        return Ok(out);
    }
    // Mandatory groups first, then the rest, each in group order.
    let mut order: Vec<&Cluster> = clusters.iter().filter(|c| mandatory(strategy, c)).collect();
    order.extend(clusters.iter().filter(|c| !mandatory(strategy, c)));
    match strategy.kind {
        Kind::Progressive => {
            let limit = match &strategy.max_concurrency {
                Some(v) => count_of(v, total)
                    .map_err(|e| format!("maxConcurrency {e}"))?
                    .max(1),
                None => total.max(1),
            };
            // Mandatory clusters all succeed before any other starts.
            let mandatory_left = order
                .iter()
                .any(|c| mandatory(strategy, c) && !done(c, strategy.min_success));
            let mut busy = clusters
                .iter()
                .filter(|c| in_flight(c, strategy.min_success))
                .count();
            for c in &order {
                if busy >= limit {
                    break;
                }
                if mandatory_left && !mandatory(strategy, c) {
                    break;
                }
                if c.state == State::ToApply {
                    out.apply.push(c.name.clone());
                    busy += 1;
                }
            }
        }
        Kind::ProgressivePerGroup => {
            // The first group (mandatory ones first) not yet done goes, all of it at once.
            let mut groups: Vec<(bool, usize)> = order
                .iter()
                .map(|c| (!mandatory(strategy, c), c.group))
                .collect();
            groups.dedup();
            for (later, g) in groups {
                let members: Vec<&&Cluster> = order
                    .iter()
                    .filter(|c| c.group == g && mandatory(strategy, c) != later)
                    .collect();
                if members
                    .iter()
                    .all(|c| done(c, strategy.min_success) || c.state.failed())
                {
                    continue;
                }
                out.apply = members
                    .iter()
                    .filter(|c| c.state == State::ToApply)
                    .map(|c| c.name.clone())
                    .collect();
                break;
            }
        }
        Kind::All => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, group: usize, state: State) -> Cluster {
        Cluster {
            name: name.into(),
            group,
            group_name: if group == 0 {
                "canary".into()
            } else {
                String::new()
            },
            state,
        }
    }

    fn strategy(kind: Kind) -> Strategy {
        Strategy {
            kind,
            min_success: Duration::ZERO,
            progress_deadline: None,
            max_failures: None,
            max_concurrency: None,
            mandatory: Vec::new(),
        }
    }

    #[test]
    fn all_applies_everything_at_once() {
        let cs = [
            c("a", 0, State::ToApply),
            c("b", 1, State::Progressing),
            c("c", 1, State::ToApply),
        ];
        let p = plan(&strategy(Kind::All), &cs).unwrap();
        assert_eq!(p.apply, ["a", "c"]);
        assert!(!p.complete);
        let done = [
            c("a", 0, State::Succeeded(5)),
            c("b", 0, State::Succeeded(1)),
        ];
        assert!(plan(&strategy(Kind::All), &done).unwrap().complete);
    }

    #[test]
    fn progressive_goes_max_concurrency_at_a_time_and_waits_min_success_time() {
        let mut s = strategy(Kind::Progressive);
        s.max_concurrency = Some(IntOrString::Int(1));
        let fresh = [
            c("a", 0, State::ToApply),
            c("b", 0, State::ToApply),
            c("c", 0, State::ToApply),
        ];
        assert_eq!(plan(&s, &fresh).unwrap().apply, ["a"]);
        let one_going = [
            c("a", 0, State::Progressing),
            c("b", 0, State::ToApply),
            c("c", 0, State::ToApply),
        ];
        assert!(plan(&s, &one_going).unwrap().apply.is_empty());
        let one_done = [
            c("a", 0, State::Succeeded(0)),
            c("b", 0, State::ToApply),
            c("c", 0, State::ToApply),
        ];
        assert_eq!(plan(&s, &one_done).unwrap().apply, ["b"]);
        // With a minimum success time the next waits, and the plan says when to look again.
        s.min_success = Duration::from_secs(30);
        let p = plan(
            &s,
            &[c("a", 0, State::Succeeded(10)), c("b", 0, State::ToApply)],
        )
        .unwrap();
        assert!(p.apply.is_empty());
        assert_eq!(p.requeue, Some(Duration::from_secs(21)));
        // 50% of 4 is 2 at a time.
        s.min_success = Duration::ZERO;
        s.max_concurrency = Some(IntOrString::String("50%".into()));
        let four: Vec<Cluster> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| c(n, 0, State::ToApply))
            .collect();
        assert_eq!(plan(&s, &four).unwrap().apply, ["a", "b"]);
    }

    #[test]
    fn failures_past_max_failures_stop_the_rollout_naming_the_cluster() {
        let mut s = strategy(Kind::Progressive);
        s.max_concurrency = Some(IntOrString::Int(1));
        let cs = [
            c(
                "a",
                0,
                State::Failed("Deployment web: exceeded its progress deadline".into()),
            ),
            c("b", 0, State::ToApply),
        ];
        let p = plan(&s, &cs).unwrap();
        assert!(p.apply.is_empty());
        let why = p.stopped.unwrap();
        assert!(why.contains("cluster a failed: Deployment web"), "{why}");
        s.max_failures = Some(IntOrString::Int(1));
        assert_eq!(
            plan(&s, &cs).unwrap().apply,
            ["b"],
            "one failure is allowed"
        );
        let timed_out = [
            c("a", 0, State::TimeOut),
            c("b", 0, State::TimeOut),
            c("c", 0, State::ToApply),
        ];
        assert!(
            plan(&s, &timed_out)
                .unwrap()
                .stopped
                .unwrap()
                .contains("progressDeadline")
        );
    }

    #[test]
    fn mandatory_groups_go_first_and_may_not_fail() {
        let mut s = strategy(Kind::Progressive);
        s.max_failures = Some(IntOrString::String("100%".into()));
        s.mandatory = vec![(None, Some("canary".into()))];
        let cs = [
            c("z", 0, State::ToApply),
            c("a", 1, State::ToApply),
            c("b", 1, State::ToApply),
        ];
        assert_eq!(
            plan(&s, &cs).unwrap().apply,
            ["z"],
            "the canary group first"
        );
        let canary_failed = [
            c("z", 0, State::Failed("x".into())),
            c("a", 1, State::ToApply),
        ];
        assert!(
            plan(&s, &canary_failed)
                .unwrap()
                .stopped
                .unwrap()
                .contains("mandatory")
        );
    }

    #[test]
    fn per_group_rolls_a_group_at_a_time() {
        let s = strategy(Kind::ProgressivePerGroup);
        let cs = [
            c("a", 0, State::ToApply),
            c("b", 1, State::ToApply),
            c("c", 1, State::ToApply),
        ];
        assert_eq!(plan(&s, &cs).unwrap().apply, ["a"]);
        let first_done = [
            c("a", 0, State::Succeeded(3)),
            c("b", 1, State::ToApply),
            c("c", 1, State::ToApply),
        ];
        assert_eq!(plan(&s, &first_done).unwrap().apply, ["b", "c"]);
    }

    #[test]
    fn durations_and_counts_parse() {
        assert_eq!(parse_duration("None").unwrap(), None);
        assert_eq!(
            parse_duration("90s").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("500ms").unwrap(),
            Some(Duration::from_millis(500))
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5d").is_err());
        assert_eq!(count_of(&IntOrString::String("25%".into()), 5).unwrap(), 2);
        assert_eq!(count_of(&IntOrString::Int(3), 5).unwrap(), 3);
        assert!(count_of(&IntOrString::String("lots".into()), 5).is_err());
    }
}
