//! `metav1.LabelSelector` evaluation over a map of labels (or of cluster claims), with the
//! validation kube-apiserver applies: `In`/`NotIn` need values, `Exists`/`DoesNotExist` take
//! none, other operators are errors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Why a requirement cannot be evaluated, if it cannot.
pub fn check_requirement(r: &LabelSelectorRequirement) -> Result<(), String> {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(format!(
            "key {:?}: operator {} needs at least one value",
            r.key, r.operator
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => Err(format!(
            "key {:?}: operator {} takes no values",
            r.key, r.operator
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => Ok(()),
        other => Err(format!(
            "key {:?}: unknown operator {other:?} (In, NotIn, Exists or DoesNotExist)",
            r.key
        )),
    }
}

/// Whether `r` holds for `labels` (checked with [`check_requirement`] first).
pub fn requirement_matches(
    r: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    check_requirement(r)?;
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    Ok(match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        _ => value.is_none(),
    })
}

/// Whether `selector` selects `labels`. An empty selector selects everything.
pub fn matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let mut all = true;
    for (k, v) in selector.match_labels.iter().flatten() {
        all &= labels.get(k) == Some(v);
    }
    for r in selector.match_expressions.iter().flatten() {
        // Every requirement is checked even after a mismatch, so a broken one is always an error.
        all &= requirement_matches(r, labels)?;
    }
    Ok(all)
}

/// Why `selector` cannot be evaluated, if it cannot.
pub fn check(selector: &LabelSelector) -> Result<(), String> {
    selector
        .match_expressions
        .iter()
        .flatten()
        .try_for_each(check_requirement)
}

/// Parse `k=v,k2=v2` (as `kubectl label` and `--selector` flags take) into match labels.
pub fn parse_equality(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("{part:?} has no key"));
        }
        out.insert(k.to_string(), v.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selectors_match_as_kubernetes_does() {
        let labels: BTreeMap<String, String> = [("env", "prod"), ("tier", "web")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let cases: &[(LabelSelector, Result<bool, ()>)] = &[
            (LabelSelector::default(), Ok(true)),
            (
                LabelSelector {
                    match_labels: Some([("env".to_string(), "prod".to_string())].into()),
                    ..Default::default()
                },
                Ok(true),
            ),
            (
                LabelSelector {
                    match_labels: Some([("env".to_string(), "dev".to_string())].into()),
                    ..Default::default()
                },
                Ok(false),
            ),
            (sel(req("env", "In", &["dev", "prod"])), Ok(true)),
            (sel(req("env", "NotIn", &["prod"])), Ok(false)),
            (sel(req("zone", "NotIn", &["a"])), Ok(true)),
            (sel(req("tier", "Exists", &[])), Ok(true)),
            (sel(req("zone", "DoesNotExist", &[])), Ok(true)),
            (sel(req("env", "In", &[])), Err(())),
            (sel(req("env", "Exists", &["x"])), Err(())),
            (sel(req("env", "Gt", &["1"])), Err(())),
        ];
        for (s, want) in cases {
            assert_eq!(matches(s, &labels).map_err(|_| ()), *want, "{s:?}");
        }
    }

    fn sel(r: LabelSelectorRequirement) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![r]),
            ..Default::default()
        }
    }

    #[test]
    fn equality_lists_parse() {
        assert_eq!(
            parse_equality("a=1, b = 2").unwrap(),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert!(parse_equality("a").is_err());
        assert!(parse_equality("=1").is_err());
    }
}
