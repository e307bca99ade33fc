//! Kubernetes name, label and annotation rules (apimachinery's `validation` package).

use serde_json::Value;

use crate::error::Cause;

fn alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok = !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-');
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

/// RFC 1123 subdomain: dot-separated labels, ≤ 253.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|&c| alnum(c) || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into())
    }
}

/// A name part of a qualified name or label value character set.
fn name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !name_part(name) {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    Ok(())
}

pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !name_part(s) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into());
    }
    Ok(())
}

/// Which rule an object's name follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label,
    /// Any non-empty name without '/' or '%' and not '.' or '..' (path segment names).
    PathSegment,
}

pub fn name(rule: NameRule, name: &str) -> Result<(), String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Err(format!("may not be '{name}'"))
            } else if name.contains('/') || name.contains('%') {
                Err("may not contain '/' or '%'".into())
            } else {
                Ok(())
            }
        }
    }
}

const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// Validate `metadata` common to every kind: name, labels, annotations, finalizers, owners.
pub fn object_meta(meta: &Value, rule: NameRule, namespaced: bool, causes: &mut Vec<Cause>) {
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if let Err(msg) = self::name(rule, name) {
        causes.push(Cause::invalid("metadata.name", name, &msg));
    }
    if namespaced {
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Err(msg) = dns1123_label(ns) {
            causes.push(Cause::invalid("metadata.namespace", ns, &msg));
        }
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Err(msg) = qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", k, &msg));
            }
            match v.as_str() {
                Some(v) => {
                    if let Err(msg) = label_value(v) {
                        causes.push(Cause::invalid(format!("metadata.labels.{k}"), v, &msg));
                    }
                }
                None => causes.push(Cause::invalid(
                    format!("metadata.labels.{k}"),
                    &v.to_string(),
                    "label values must be strings",
                )),
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            if let Err(msg) = qualified_name(&k.to_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", k, &msg));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_SIZE {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!("Too long: must have at most {TOTAL_ANNOTATION_SIZE} bytes"),
            });
        }
    }
    if let Some(fins) = meta.get("finalizers").and_then(Value::as_array) {
        for f in fins {
            let f = f.as_str().unwrap_or_default();
            if let Err(msg) = qualified_name(f) {
                causes.push(Cause::invalid("metadata.finalizers", f, &msg));
            } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
                causes.push(Cause::invalid(
                    "metadata.finalizers",
                    f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        }
    }
    if let Some(owners) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for (i, o) in owners.iter().enumerate() {
            for field in ["apiVersion", "kind", "name", "uid"] {
                if o.get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!(
                        "metadata.ownerReferences[{i}].{field}"
                    )));
                }
            }
            if o.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            causes.push(Cause::invalid(
                "metadata.ownerReferences",
                "",
                "Only one reference can have Controller set to true",
            ));
        }
    }
}

/// Finalizers Kubernetes itself defines, which need no domain prefix.
pub const STANDARD_FINALIZERS: &[&str] = &[
    "kubernetes",
    "orphan",
    "foregroundDeletion",
    "customresourcecleanup.apiextensions.k8s.io",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("A").is_err());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain("-a").is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(qualified_name("example.com/My_name.1").is_ok());
        assert!(qualified_name("/x").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("a b").is_err());
    }
}
