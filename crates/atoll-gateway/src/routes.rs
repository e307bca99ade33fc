//! Which route a request takes: the Ingress rules of every MultiClusterIngress merged into one
//! table, matched as the Ingress API defines it. No I/O.
//!
//! - Hosts: an exact host first, then a wildcard `*.example.com` (exactly one more label:
//!   `a.example.com`, not `example.com` nor `a.b.example.com`), then the rules without a host.
//! - Paths of the host found: the longest match wins, `Exact` before `Prefix` of the same length.
//!   `Prefix` matches element by element (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, not
//!   `/foobar`; a trailing `/` in the rule is ignored). `ImplementationSpecific` is a `Prefix`.
//! - Nothing matched: the default backend of the oldest ingress that has the host (or of the
//!   oldest ingress with one, for a host no ingress names), else no route.
//! - Two ingresses with the same host and path: the older one's route is used (as
//!   ingress-nginx), and the newer is told in its status.

use std::collections::HashMap;
use std::sync::Arc;

/// The paths of one host.
#[derive(Debug)]
pub struct HostRoutes<T> {
    exact: HashMap<String, Arc<T>>,
    /// Normalised prefixes (no trailing `/`, `""` for `/`), longest first.
    prefixes: Vec<(String, Arc<T>)>,
    default: Option<Arc<T>>,
}

impl<T> Default for HostRoutes<T> {
    fn default() -> Self {
        HostRoutes {
            exact: HashMap::new(),
            prefixes: Vec::new(),
            default: None,
        }
    }
}

/// How a rule's path matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathType {
    Exact,
    Prefix,
}

impl PathType {
    /// The Ingress `pathType`: `Exact`, `Prefix` or `ImplementationSpecific` (taken as a prefix).
    pub fn parse(s: &str) -> Option<PathType> {
        match s {
            "Exact" => Some(PathType::Exact),
            "Prefix" | "ImplementationSpecific" => Some(PathType::Prefix),
            _ => None,
        }
    }
}

/// Why a request has no route.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// No rule names the host and no ingress has a default backend.
    UnknownHost,
    /// The host is known but none of its paths matches.
    NoPath,
}

/// The merged routes of every ingress.
#[derive(Debug)]
pub struct Table<T> {
    hosts: HashMap<String, HostRoutes<T>>,
    /// By the suffix after `*` (`.example.com`).
    wildcards: HashMap<String, HostRoutes<T>>,
    any_host: Option<HostRoutes<T>>,
    default: Option<Arc<T>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            hosts: HashMap::new(),
            wildcards: HashMap::new(),
            any_host: None,
            default: None,
        }
    }
}

/// A route that lost to an older ingress's route of the same host and path.
#[derive(Debug, PartialEq, Eq)]
pub struct Shadowed {
    pub host: String,
    pub path: String,
}

impl<T> Table<T> {
    /// Add one rule's path; ingresses must be added oldest first. Returns `Err` when an older
    /// ingress already routes this host and path (the older route stays).
    pub fn add(
        &mut self,
        host: Option<&str>,
        path: &str,
        path_type: PathType,
        target: Arc<T>,
    ) -> Result<(), Shadowed> {
        let routes = self.host_entry(host);
        let taken = match path_type {
            PathType::Exact => {
                let key = if path.is_empty() { "/" } else { path };
                if routes.exact.contains_key(key) {
                    true
                } else {
                    routes.exact.insert(key.to_string(), target);
                    false
                }
            }
            PathType::Prefix => {
                let key = path.trim_end_matches('/').to_string();
                if routes.prefixes.iter().any(|(p, _)| *p == key) {
                    true
                } else {
                    let at = routes
                        .prefixes
                        .iter()
                        .position(|(p, _)| p.len() < key.len())
                        .unwrap_or(routes.prefixes.len());
                    routes.prefixes.insert(at, (key, target));
                    false
                }
            }
        };
        if taken {
            Err(Shadowed {
                host: host.unwrap_or("*").to_string(),
                path: path.to_string(),
            })
        } else {
            Ok(())
        }
    }

    /// The default backend of an ingress that has rules for `hosts` (oldest first: the first
    /// one set stays), and the table's own for unknown hosts.
    pub fn add_default(&mut self, hosts: &[Option<&str>], target: Arc<T>) {
        for host in hosts {
            let routes = self.host_entry(*host);
            if routes.default.is_none() {
                routes.default = Some(target.clone());
            }
        }
        if self.default.is_none() {
            self.default = Some(target);
        }
    }

    fn host_entry(&mut self, host: Option<&str>) -> &mut HostRoutes<T> {
        match host {
            None | Some("") => self.any_host.get_or_insert_with(HostRoutes::default),
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => self.wildcards.entry(suffix.to_string()).or_default(),
                None => self.hosts.entry(h.to_string()).or_default(),
            },
        }
    }

    /// The route for `host` (lower case, no port) and `path` (no query).
    pub fn lookup(&self, host: &str, path: &str) -> Result<&Arc<T>, NoRoute> {
        let routes = self.hosts.get(host).or_else(|| {
            let dot = host.find('.')?;
            // The wildcard covers exactly one label.
            (dot > 0)
                .then(|| self.wildcards.get(&host[dot..]))
                .flatten()
        });
        let routes = match routes.or(self.any_host.as_ref()) {
            Some(r) => r,
            None => return self.default.as_ref().ok_or(NoRoute::UnknownHost),
        };
        if let Some(t) = routes.exact.get(path) {
            return Ok(t);
        }
        routes
            .prefixes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, t)| t)
            .or(routes.default.as_ref())
            .ok_or(NoRoute::NoPath)
    }

    /// Every host that has its own rules (exact and wildcard), for TLS and status.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }
}

/// Whether the normalised `prefix` (no trailing `/`) matches `path` element by element.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The host of a request, lower case and without its port; `None` when it is not a valid
/// host name or address.
pub fn request_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(v6) = raw.strip_prefix('[') {
        // An IPv6 literal, with or without a port.
        let end = v6.find(']')?;
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.trim_end_matches('.');
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    valid.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(Option<&str>, &str, PathType, &'static str)]) -> Table<&'static str> {
        let mut t = Table::default();
        for (host, path, pt, name) in rules {
            let _ = t.add(*host, path, *pt, Arc::new(*name));
        }
        t
    }

    #[test]
    fn requests_take_the_route_the_ingress_api_defines() {
        use PathType::*;
        let t = table(&[
            (Some("a.example"), "/", Prefix, "a-root"),
            (Some("a.example"), "/api", Prefix, "a-api"),
            (Some("a.example"), "/api/v2/", Prefix, "a-api-v2"),
            (Some("a.example"), "/api", Exact, "a-api-exact"),
            (Some("*.b.example"), "/", Prefix, "b-any"),
            (Some("x.b.example"), "/only", Exact, "x-b"),
            (None, "/shared", Prefix, "any-host"),
        ]);
        let cases = [
            ("a.example", "/", Ok("a-root")),
            ("a.example", "/index.html", Ok("a-root")),
            ("a.example", "/api", Ok("a-api-exact")),
            ("a.example", "/api/", Ok("a-api")),
            ("a.example", "/api/users", Ok("a-api")),
            ("a.example", "/apis", Ok("a-root")),
            ("a.example", "/api/v2", Ok("a-api-v2")),
            ("a.example", "/api/v2/x", Ok("a-api-v2")),
            ("y.b.example", "/anything", Ok("b-any")),
            ("b.example", "/", Ok("any-host-miss")),
            ("z.y.b.example", "/", Ok("any-host-miss")),
            // An exact host is used alone, without its wildcard's paths.
            ("x.b.example", "/only", Ok("x-b")),
            ("x.b.example", "/other", Err(NoRoute::NoPath)),
            ("c.example", "/shared/x", Ok("any-host")),
            ("c.example", "/other", Err(NoRoute::NoPath)),
        ];
        for (host, path, want) in cases {
            let got = t.lookup(host, path).map(|t| **t);
            match want {
                Ok("any-host-miss") => assert_eq!(got, Err(NoRoute::NoPath), "{host}{path}"),
                want => assert_eq!(got, want, "{host}{path}"),
            }
        }
    }

    #[test]
    fn unknown_hosts_get_the_oldest_default_backend_or_no_route() {
        let mut t = table(&[(Some("a.example"), "/app", PathType::Prefix, "app")]);
        assert_eq!(t.lookup("other.example", "/"), Err(NoRoute::UnknownHost));
        assert_eq!(t.lookup("a.example", "/"), Err(NoRoute::NoPath));
        t.add_default(&[Some("a.example")], Arc::new("first-default"));
        t.add_default(&[Some("b.example")], Arc::new("second-default"));
        assert_eq!(t.lookup("a.example", "/").map(|t| **t), Ok("first-default"));
        assert_eq!(
            t.lookup("b.example", "/").map(|t| **t),
            Ok("second-default")
        );
        assert_eq!(
            t.lookup("other.example", "/").map(|t| **t),
            Ok("first-default")
        );
    }

    #[test]
    fn the_older_ingress_keeps_a_host_and_path_both_name() {
        let mut t = Table::default();
        assert!(
            t.add(Some("a.example"), "/", PathType::Prefix, Arc::new("old"))
                .is_ok()
        );
        assert_eq!(
            t.add(Some("a.example"), "/", PathType::Prefix, Arc::new("new")),
            Err(Shadowed {
                host: "a.example".into(),
                path: "/".into()
            })
        );
        // Another type of match of the same path is another route.
        assert!(
            t.add(Some("a.example"), "/", PathType::Exact, Arc::new("exact"))
                .is_ok()
        );
        assert_eq!(t.lookup("a.example", "/x").map(|t| **t), Ok("old"));
    }

    #[test]
    fn request_hosts_lose_their_port_and_case() {
        let cases = [
            ("a.example", Some("a.example")),
            ("A.Example:8080", Some("a.example")),
            ("a.example.", Some("a.example")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]:8443", Some("[::1]")),
            ("", None),
            ("a b", None),
            ("a.example:http", None),
            ("a/b", None),
        ];
        for (raw, want) in cases {
            assert_eq!(request_host(raw).as_deref(), want, "{raw:?}");
        }
    }
}
