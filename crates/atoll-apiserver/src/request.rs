//! Parsing a request path and query into what it asks of which resource, as kube-apiserver's
//! `RequestInfoFactory` does.

use std::collections::HashMap;

use crate::error::{ApiError, ApiResult};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

/// A request for a resource (as opposed to discovery or health).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: Verb,
}

/// Split `/api/v1/...` or `/apis/g/v/...`; `None` when the path is not a resource path.
pub fn parse(
    method: &http::Method,
    path: &str,
    query: &Query,
) -> ApiResult<Option<ResourceRequest>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => (String::new(), v.to_string(), rest.to_vec()),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            (g.to_string(), v.to_string(), rest.to_vec())
        }
        _ => return Ok(None),
    };
    let mut watch = query.flag("watch");
    if rest.first() == Some(&"watch") {
        watch = true;
        rest.remove(0);
    }
    for p in &rest {
        if p.is_empty() {
            return Err(ApiError::no_such_resource());
        }
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        // `namespaces/x/status` and `namespaces/x/finalize` are subresources of the namespace.
        // Otherwise the path names the namespace object itself.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest.drain(..2);
        }
    }
    let (resource, name, subresource) = match rest.as_slice() {
        [r] => (r.to_string(), None, None),
        [r, n] => (r.to_string(), Some(n.to_string()), None),
        [r, n, s] => (r.to_string(), Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::no_such_resource()),
    };
    // For the namespace object, the "namespace" is its own name, not a scope.
    if resource == "namespaces" {
        namespace = None;
    }
    let verb = match (method.as_str(), &name) {
        ("GET" | "HEAD", Some(_)) if watch => Verb::Watch,
        ("GET" | "HEAD", Some(_)) => Verb::Get,
        ("GET" | "HEAD", None) if watch => Verb::Watch,
        ("GET" | "HEAD", None) => Verb::List,
        // POST goes to a collection, or to a subresource that creates (binding, token, eviction).
        ("POST", Some(_)) if subresource.is_none() => {
            return Err(ApiError::MethodNotAllowed {
                message: "the server does not allow this method on the requested resource: POST to a named object (POST to its collection to create it)".into(),
            });
        }
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", Some(_)) => Verb::Delete,
        ("DELETE", None) => Verb::DeleteCollection,
        (m, _) => {
            return Err(ApiError::MethodNotAllowed {
                message: format!(
                    "the server does not allow this method on the requested resource: {m}"
                ),
            });
        }
    };
    Ok(Some(ResourceRequest {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        verb,
    }))
}

/// Decoded query parameters (the last value of a repeated key wins, as in Go's `Get`; `all`
/// gives every value, as `exec`'s repeated `command` needs).
#[derive(Clone, Debug, Default)]
pub struct Query(pub HashMap<String, Vec<String>>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.entry(decode(k)).or_default().push(decode(v));
        }
        Query(map)
    }

    fn last(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.last()).map(String::as_str)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.last(k).filter(|v| !v.is_empty())
    }

    /// Every value given for `k`, in order.
    pub fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map_or(&[], Vec::as_slice)
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.last(k), Some("true" | "1"))
    }

    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {k}: {v:?} is not an integer"))
            }),
        }
    }

    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun value {other:?}: only \"All\" is supported"
            ))),
        }
    }
}

/// Percent-decoding with `+` as space, as `application/x-www-form-urlencoded` queries use.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn p(m: Method, path: &str, q: &str) -> ResourceRequest {
        parse(&m, path, &Query::parse(Some(q))).unwrap().unwrap()
    }

    #[test]
    fn paths() {
        let r = p(Method::GET, "/api/v1/namespaces/default/pods/x/log", "");
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (Some("default"), "pods", Some("x"), Some("log"))
        );
        let r = p(Method::GET, "/api/v1/namespaces/default", "");
        assert_eq!(
            (r.namespace, r.resource.as_str(), r.name.as_deref()),
            (None, "namespaces", Some("default"))
        );
        let r = p(Method::PUT, "/api/v1/namespaces/default/finalize", "");
        assert_eq!(
            (r.resource.as_str(), r.subresource.as_deref(), r.verb),
            ("namespaces", Some("finalize"), Verb::Update)
        );
        let r = p(Method::GET, "/apis/apps/v1/deployments", "watch=true");
        assert_eq!((r.group.as_str(), r.verb), ("apps", Verb::Watch));
        let r = p(
            Method::GET,
            "/apis/apps/v1/watch/namespaces/a/deployments",
            "",
        );
        assert_eq!((r.namespace.as_deref(), r.verb), (Some("a"), Verb::Watch));
        let r = p(Method::DELETE, "/api/v1/namespaces/a/configmaps", "");
        assert_eq!(r.verb, Verb::DeleteCollection);
        assert!(
            parse(&Method::GET, "/apis/apps/v1", &Query::default())
                .unwrap()
                .is_none()
        );
        assert!(parse(&Method::GET, "/api/v1/a/b/c/d", &Query::default()).is_err());
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert!(Query::parse(Some("limit=x")).int("limit").is_err());
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
