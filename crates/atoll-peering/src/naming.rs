//! Names in the provider for a consumer's namespaces, checked before anything is created:
//! Liqo creates first and loops (`CreationLoopBackOff`) on a name too long or taken.

use atoll_api::peering::NamespaceMapping;

/// The provider's name for consumer namespace `namespace` of consumer `consumer`.
pub fn remote_namespace(
    strategy: NamespaceMapping,
    namespace: &str,
    consumer: &str,
    selected: &str,
) -> Result<String, String> {
    let name = match strategy {
        NamespaceMapping::DefaultName => format!("{namespace}-{consumer}"),
        NamespaceMapping::EnforceSameName => namespace.to_string(),
        NamespaceMapping::SelectedName => {
            if selected.is_empty() {
                return Err(
                    "namespaceMappingStrategy SelectedName needs remoteNamespaceName".into(),
                );
            }
            selected.to_string()
        }
    };
    check_label(&name).map_err(|why| match strategy {
        NamespaceMapping::DefaultName => format!(
            "the default remote name {name:?} ({namespace}-{consumer}) {why}: choose one with namespaceMappingStrategy SelectedName and remoteNamespaceName"
        ),
        _ => format!("remote namespace name {name:?} {why}"),
    })?;
    Ok(name)
}

/// Why `name` cannot name a namespace (a DNS label), if it cannot.
fn check_label(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("is {} characters long, more than 63", name.len()));
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(
            "is not a DNS label (lower case letters, digits and '-', not at either end)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_follow_the_strategy_and_fail_up_front() {
        use NamespaceMapping::*;
        let long = "n".repeat(60);
        let cases: [(NamespaceMapping, &str, &str, Result<&str, &str>); 6] = [
            (DefaultName, "web", "", Ok("web-member1")),
            (EnforceSameName, "web", "", Ok("web")),
            (SelectedName, "web", "shop", Ok("shop")),
            (SelectedName, "web", "", Err("needs remoteNamespaceName")),
            (SelectedName, "web", "Shop", Err("not a DNS label")),
            (DefaultName, &long, "", Err("SelectedName")),
        ];
        for (strategy, ns, selected, want) in cases {
            let got = remote_namespace(strategy, ns, "member1", selected);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
                (g, w) => panic!("{strategy:?} {ns}: got {g:?}, want {w:?}"),
            }
        }
    }
}
