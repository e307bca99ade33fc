//! Resource quantities (`500m`, `2`, `128Mi`, `1G`) as the integers the scheduler adds up:
//! CPU in millicores, everything else in whole units (bytes for memory).

/// Millicores in a CPU quantity; `None` if it does not parse.
pub fn cpu_millis(q: &str) -> Option<i64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<i64>().ok();
    }
    let v = plain(q)?;
    Some((v * 1000.0).ceil() as i64)
}

/// A quantity in whole units (bytes for memory); `None` if it does not parse.
pub fn units(q: &str) -> Option<i64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<i64>().ok().map(|v| (v + 999) / 1000);
    }
    plain(q).map(|v| v.ceil() as i64)
}

/// A quantity as a float (Kubernetes' `AsApproximateFloat64`): `500m` is 0.5, `1Ki` 1024.
pub fn approximate(q: &str) -> Option<f64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| v / 1000.0);
    }
    plain(q)
}

fn plain(q: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = q.strip_suffix(suffix) {
            return n
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| v * factor);
        }
    }
    q.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// What a pod asks for: the sum of its containers' requests (limits stand in when a request
/// is missing, as Kubernetes defaults requests to limits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn of_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Resources {
        let mut r = Resources {
            pods: 1,
            ..Default::default()
        };
        let Some(spec) = &pod.spec else { return r };
        for c in &spec.containers {
            let Some(res) = &c.resources else { continue };
            let get = |name: &str| {
                res.requests
                    .as_ref()
                    .and_then(|m| m.get(name))
                    .or_else(|| res.limits.as_ref().and_then(|m| m.get(name)))
                    .map(|q| q.0.clone())
            };
            r.cpu_millis += get("cpu").and_then(|q| cpu_millis(&q)).unwrap_or(0);
            r.memory += get("memory").and_then(|q| units(&q)).unwrap_or(0);
        }
        r
    }

    /// A node's allocatable (or capacity) map.
    pub fn of_node(
        map: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >,
    ) -> Resources {
        let get = |name: &str| map.and_then(|m| m.get(name)).map(|q| q.0.clone());
        Resources {
            cpu_millis: get("cpu").and_then(|q| cpu_millis(&q)).unwrap_or(0),
            memory: get("memory").and_then(|q| units(&q)).unwrap_or(0),
            pods: get("pods").and_then(|q| units(&q)).unwrap_or(110),
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.cpu_millis += o.cpu_millis;
        self.memory += o.memory;
        self.pods += o.pods;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.cpu_millis -= o.cpu_millis;
        self.memory -= o.memory;
        self.pods -= o.pods;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.25"), Some(250));
        assert_eq!(units("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(units("1G"), Some(1_000_000_000));
        assert_eq!(units("110"), Some(110));
        assert_eq!(units("1.5Ki"), Some(1536));
        assert_eq!(cpu_millis("lots"), None);
        assert_eq!(units("1e3"), Some(1000));
        assert_eq!(approximate("500m"), Some(0.5));
        assert_eq!(approximate("4"), Some(4.0));
        assert_eq!(approximate("2Ki"), Some(2048.0));
        assert_eq!(approximate("x"), None);
    }
}
