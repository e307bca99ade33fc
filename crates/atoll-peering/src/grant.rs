//! The provider's `Auto` negotiation policy, as a pure function: what a request is granted out
//! of the provider's allocatable resources, its share for peers, and what other offers hold.
//!
//! - `cpu`, `memory`, `pods` and `ephemeral-storage` are shared: peers together get at most
//!   `share` percent of the allocatable amount. A request for more than is left gets what is
//!   left, and says so; a request that leaves nothing of CPU or memory is refused.
//! - Extended resources (`nvidia.com/gpu`, anything else) are devices counted whole: a share of
//!   one GPU is no GPU (a fault of Liqo's percentage, which rounds 90% of 1 GPU to 0), so they
//!   are granted as asked while the provider has them free, never by percentage.
//! - What is not asked for: CPU and memory get the whole share left, pods as many as left up
//!   to 110 (a kubelet's default).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Amounts of resources as integers: CPU in millicores, everything else in units (bytes).
pub type Amounts = BTreeMap<String, i64>;

/// Resources peers share by percentage.
const SHARED: [&str; 4] = ["cpu", "memory", "pods", "ephemeral-storage"];
/// Pods granted when none are asked for.
const DEFAULT_PODS: i64 = 110;

/// The amount of `resource` in `q`, if it parses (CPU in millicores).
pub fn amount(resource: &str, q: &str) -> Option<i64> {
    if resource == "cpu" {
        atoll_runtime::quantity::cpu_millis(q)
    } else {
        atoll_runtime::quantity::units(q)
    }
}

/// `v` of `resource` as a quantity a person reads: `1500m`, `2`, `512Mi`, `4Gi`.
pub fn quantity(resource: &str, v: i64) -> Quantity {
    if resource == "cpu" {
        return Quantity(if v % 1000 == 0 {
            (v / 1000).to_string()
        } else {
            format!("{v}m")
        });
    }
    for (suffix, factor) in [
        ("Ti", 1i64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if v != 0 && v % factor == 0 && (resource == "memory" || resource == "ephemeral-storage") {
            return Quantity(format!("{}{suffix}", v / factor));
        }
    }
    Quantity(v.to_string())
}

/// Read a ResourceList into amounts; the error names the quantity that does not parse.
pub fn amounts(list: &BTreeMap<String, Quantity>) -> Result<Amounts, String> {
    let mut out = Amounts::new();
    for (k, q) in list {
        let v = amount(k, &q.0).ok_or_else(|| format!("{k}: {:?} is not a quantity", q.0))?;
        if v < 0 {
            return Err(format!("{k}: {:?} is negative", q.0));
        }
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// Amounts as a ResourceList.
pub fn resource_list(a: &Amounts) -> BTreeMap<String, Quantity> {
    a.iter()
        .map(|(k, v)| (k.clone(), quantity(k, *v)))
        .collect()
}

/// Add `b` to `a`.
pub fn add(a: &mut Amounts, b: &Amounts) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

/// What the policy decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Granted; `partial` says what was cut and why when less than asked.
    Grant {
        resources: Amounts,
        partial: Option<String>,
    },
    Refuse {
        reason: &'static str,
        message: String,
    },
}

/// The `Auto` policy: grant `requested` out of `share` percent of `allocatable` minus `held`
/// (what other consumers' offers hold).
pub fn negotiate(
    requested: &Amounts,
    allocatable: &Amounts,
    held: &Amounts,
    share: u32,
) -> Decision {
    let share = i64::from(share.min(100));
    let free = |k: &str| {
        let alloc = allocatable.get(k).copied().unwrap_or(0);
        let limit = if SHARED.contains(&k) {
            alloc.saturating_mul(share) / 100
        } else {
            alloc
        };
        (limit - held.get(k).copied().unwrap_or(0)).max(0)
    };
    let mut granted = Amounts::new();
    let mut cut = Vec::new();
    for (k, want) in requested {
        if *want == 0 {
            continue;
        }
        if !SHARED.contains(&k.as_str()) && allocatable.get(k).copied().unwrap_or(0) == 0 {
            return Decision::Refuse {
                reason: "ResourceUnavailable",
                message: format!("this provider has no {k}"),
            };
        }
        let left = free(k);
        if left < *want {
            cut.push(format!(
                "{k}: asked {}, {} left",
                quantity(k, *want).0,
                quantity(k, left).0
            ));
        }
        granted.insert(k.clone(), (*want).min(left));
    }
    for k in ["cpu", "memory"] {
        granted.entry(k.into()).or_insert_with(|| free(k));
    }
    granted
        .entry("pods".into())
        .or_insert_with(|| free("pods").min(DEFAULT_PODS));
    let empty: Vec<&str> = ["cpu", "memory", "pods"]
        .into_iter()
        .filter(|k| granted.get(*k).copied().unwrap_or(0) == 0)
        .collect();
    if !empty.is_empty() {
        return Decision::Refuse {
            reason: "NothingLeft",
            message: format!(
                "no {} is left to offer: peers may use {share}% of this provider's allocatable resources and other offers hold the rest",
                empty.join(" or ")
            ),
        };
    }
    if let Some((k, _)) = granted
        .iter()
        .find(|(k, v)| !SHARED.contains(&k.as_str()) && **v == 0)
    {
        return Decision::Refuse {
            reason: "ResourceUnavailable",
            message: format!("every {k} of this provider is held by other offers"),
        };
    }
    granted.retain(|_, v| *v > 0);
    Decision::Grant {
        resources: granted,
        partial: (!cut.is_empty()).then(|| {
            format!(
                "granted less than asked ({}): peers may use {share}% of this provider's allocatable resources, less what other offers hold",
                cut.join("; ")
            )
        }),
    }
}

/// The ResourceQuota key a grant's resource is enforced by: `pods`, else `requests.<name>`.
pub fn quota_key(resource: &str) -> String {
    if resource == "pods" {
        resource.to_string()
    } else {
        format!("requests.{resource}")
    }
}

/// What one offloaded namespace of a consumer may hold of its `grant`, given what it uses
/// (`here`) and what the consumer's other offloaded namespaces use (`elsewhere`): the grant
/// less the others' use, and never less than it holds already. Quotas are per namespace; so
/// split, their sum stays within the grant however the consumer spreads its pods (up to what
/// is created between two recounts).
pub fn namespace_share(grant: &Amounts, here: &Amounts, elsewhere: &Amounts) -> Amounts {
    grant
        .iter()
        .map(|(k, g)| {
            let others = elsewhere.get(k).copied().unwrap_or(0);
            let own = here.get(k).copied().unwrap_or(0);
            (k.clone(), (g - others).max(own).max(0))
        })
        .collect()
}

/// A quota's `status.used` in grant terms (`requests.cpu` as `cpu`, CPU in millicores).
pub fn quota_used(used: &BTreeMap<String, Quantity>) -> Amounts {
    used.iter()
        .filter_map(|(k, q)| {
            let resource = if k == "pods" {
                k.as_str()
            } else {
                k.strip_prefix("requests.")?
            };
            Some((resource.to_string(), amount(resource, &q.0)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_split_across_a_consumers_namespaces() {
        let a = |pairs: &[(&str, i64)]| -> Amounts {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let grant = a(&[("cpu", 2000), ("pods", 10)]);
        for (here, elsewhere, want) in [
            (a(&[]), a(&[]), a(&[("cpu", 2000), ("pods", 10)])),
            (
                a(&[("cpu", 500)]),
                a(&[("cpu", 1200), ("pods", 4)]),
                a(&[("cpu", 800), ("pods", 6)]),
            ),
            // Over already (created between two recounts): it keeps what it holds, no more.
            (
                a(&[("cpu", 900)]),
                a(&[("cpu", 1500)]),
                a(&[("cpu", 900), ("pods", 10)]),
            ),
        ] {
            assert_eq!(
                namespace_share(&grant, &here, &elsewhere),
                want,
                "{here:?} {elsewhere:?}"
            );
        }
        let used: BTreeMap<String, Quantity> = [
            ("requests.cpu", "1500m"),
            ("requests.memory", "1Gi"),
            ("pods", "3"),
            ("limits.cpu", "4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.into())))
        .collect();
        assert_eq!(
            quota_used(&used),
            a(&[("cpu", 1500), ("memory", 1 << 30), ("pods", 3)])
        );
        assert_eq!(quota_key("cpu"), "requests.cpu");
        assert_eq!(quota_key("pods"), "pods");
    }

    fn a(pairs: &[(&str, &str)]) -> Amounts {
        pairs
            .iter()
            .map(|(k, q)| (k.to_string(), amount(k, q).expect("quantity")))
            .collect()
    }

    #[test]
    fn the_auto_policy_grants_from_the_share_left() {
        let node = a(&[
            ("cpu", "8"),
            ("memory", "16Gi"),
            ("pods", "110"),
            ("nvidia.com/gpu", "1"),
        ]);
        let none = Amounts::new();
        struct Case {
            name: &'static str,
            requested: Amounts,
            held: Amounts,
            want: Result<Amounts, &'static str>,
            partial: bool,
        }
        let cases = [
            Case {
                name: "as asked",
                requested: a(&[("cpu", "2"), ("memory", "4Gi")]),
                held: none.clone(),
                want: Ok(a(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "55")])),
                partial: false,
            },
            Case {
                name: "cut to the share left",
                requested: a(&[("cpu", "6"), ("memory", "1Gi"), ("pods", "10")]),
                held: a(&[("cpu", "1")]),
                want: Ok(a(&[("cpu", "3"), ("memory", "1Gi"), ("pods", "10")])),
                partial: true,
            },
            Case {
                name: "nothing asked: the whole share",
                requested: none.clone(),
                held: none.clone(),
                want: Ok(a(&[("cpu", "4"), ("memory", "8Gi"), ("pods", "55")])),
                partial: false,
            },
            Case {
                name: "a whole GPU, not half of one",
                requested: a(&[("cpu", "1"), ("nvidia.com/gpu", "1")]),
                held: none.clone(),
                want: Ok(a(&[
                    ("cpu", "1"),
                    ("memory", "8Gi"),
                    ("pods", "55"),
                    ("nvidia.com/gpu", "1"),
                ])),
                partial: false,
            },
            Case {
                name: "the GPU is held",
                requested: a(&[("nvidia.com/gpu", "1")]),
                held: a(&[("nvidia.com/gpu", "1")]),
                want: Err("ResourceUnavailable"),
                partial: false,
            },
            Case {
                name: "a device the provider lacks",
                requested: a(&[("example.com/fpga", "1")]),
                held: none.clone(),
                want: Err("ResourceUnavailable"),
                partial: false,
            },
            Case {
                name: "no CPU left",
                requested: a(&[("cpu", "1")]),
                held: a(&[("cpu", "4")]),
                want: Err("NothingLeft"),
                partial: false,
            },
        ];
        for c in cases {
            let got = negotiate(&c.requested, &node, &c.held, 50);
            match (got, c.want) {
                (Decision::Grant { resources, partial }, Ok(want)) => {
                    assert_eq!(resources, want, "{}", c.name);
                    assert_eq!(partial.is_some(), c.partial, "{}: {partial:?}", c.name);
                }
                (Decision::Refuse { reason, message }, Err(want)) => {
                    assert_eq!(reason, want, "{}: {message}", c.name);
                    assert!(!message.is_empty());
                }
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn quantities_read_and_print_as_people_write_them() {
        assert_eq!(quantity("cpu", 2000).0, "2");
        assert_eq!(quantity("cpu", 1500).0, "1500m");
        assert_eq!(quantity("memory", 4 << 30).0, "4Gi");
        assert_eq!(quantity("memory", 1000).0, "1000");
        assert_eq!(quantity("pods", 1024).0, "1024");
        let list = BTreeMap::from([("cpu".to_string(), Quantity("500m".into()))]);
        assert_eq!(amounts(&list), Ok(a(&[("cpu", "500m")])));
        let bad = BTreeMap::from([("memory".to_string(), Quantity("lots".into()))]);
        assert!(amounts(&bad).unwrap_err().contains("memory"));
        assert_eq!(
            resource_list(&a(&[("memory", "512Mi")]))["memory"].0,
            "512Mi"
        );
    }
}
