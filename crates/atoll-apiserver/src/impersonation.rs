//! User impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`,
//! `Impersonate-Extra-<key>` headers), as kube-apiserver's impersonation filter: the requester
//! must be allowed the `impersonate` verb on each thing it takes on (`users`, `groups`,
//! `serviceaccounts` for `system:serviceaccount:<ns>:<name>`, `uids`, `userextras/<key>`), and
//! the request then runs as the impersonated identity, its RBAC and admission included.
//!
//! A service account impersonated without groups gets its groups (`system:serviceaccounts`,
//! `system:serviceaccounts:<ns>`); every impersonated user but `system:anonymous` gets
//! `system:authenticated`. Extras are authorized and then dropped (this server keeps none).

use http::HeaderMap;

use crate::authz::Attributes;
use crate::tls::Identity;

/// What a request asks to impersonate, if anything.
#[derive(Debug, PartialEq, Default)]
pub struct Request {
    pub user: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
    pub extras: Vec<(String, String)>,
}

/// Read the impersonation headers: `Ok(None)` without any, an error for groups, extras or a
/// uid without a user (kube-apiserver's 400).
pub fn parse(headers: &HeaderMap) -> Result<Option<Request>, String> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
            .collect()
    };
    let user = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let mut extras = Vec::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = value.to_str()
        {
            // Keys are percent-encoded in the header name.
            let key = percent_decode(key);
            extras.push((key, v.trim().to_string()));
        }
    }
    match user {
        Some(user) if !user.is_empty() => Ok(Some(Request {
            user,
            groups,
            uid,
            extras,
        })),
        _ if !groups.is_empty() || uid.is_some() || !extras.is_empty() => Err(
            "requested Impersonate-Group, Impersonate-Uid or Impersonate-Extra without impersonating a user (Impersonate-User)".into(),
        ),
        _ => Ok(None),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The checks the requester must pass, one per impersonated attribute.
pub fn checks(req: &Request) -> Vec<Attributes> {
    let impersonate = |resource: &str, sub: &str, namespace: &str, name: &str| Attributes {
        verb: "impersonate".into(),
        group: String::new(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: namespace.into(),
        name: name.into(),
        path: String::new(),
    };
    let mut out = Vec::new();
    match service_account(&req.user) {
        Some((ns, name)) => out.push(impersonate("serviceaccounts", "", ns, name)),
        None => out.push(impersonate("users", "", "", &req.user)),
    }
    for g in &req.groups {
        out.push(impersonate("groups", "", "", g));
    }
    if let Some(uid) = &req.uid {
        out.push(impersonate("uids", "", "", uid));
    }
    for (k, v) in &req.extras {
        out.push(impersonate("userextras", k, "", v));
    }
    out
}

/// `(namespace, name)` of a service account user name.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// The identity the request runs as.
pub fn identity(req: &Request) -> Identity {
    let mut groups = req.groups.clone();
    if groups.is_empty()
        && let Some((ns, _)) = service_account(&req.user)
    {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    if req.user != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Identity {
        user: req.user.clone(),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_become_checks_and_an_identity() {
        assert_eq!(parse(&headers(&[])), Ok(None));
        assert!(parse(&headers(&[("Impersonate-Group", "g")])).is_err());
        let sa = parse(&headers(&[(
            "Impersonate-User",
            "system:serviceaccount:apps:deployer",
        )]))
        .unwrap()
        .unwrap();
        let c = checks(&sa);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (
                c[0].resource.as_str(),
                c[0].namespace.as_str(),
                c[0].name.as_str()
            ),
            ("serviceaccounts", "apps", "deployer")
        );
        let id = identity(&sa);
        assert_eq!(
            id.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:apps",
                "system:authenticated"
            ]
        );
        let user = parse(&headers(&[
            ("Impersonate-User", "alice"),
            ("Impersonate-Group", "dev"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Extra-Scopes%2Fx", "read"),
        ]))
        .unwrap()
        .unwrap();
        let c = checks(&user);
        let kinds: Vec<(&str, &str, &str)> = c
            .iter()
            .map(|a| (a.resource.as_str(), a.subresource.as_str(), a.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("users", "", "alice"),
                ("groups", "", "dev"),
                ("groups", "", "ops"),
                ("userextras", "scopes/x", "read")
            ]
        );
        assert_eq!(
            identity(&user).groups,
            ["dev", "ops", "system:authenticated"]
        );
    }
}
