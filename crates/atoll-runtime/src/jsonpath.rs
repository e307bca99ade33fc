//! The JSONPath subset CRD printer columns use: `.a.b`, `['a.b']`, `[0]`, `[*]`, and filters
//! `[?(@.type=="Ready")]` (with `==` or `!=` against a string or number). Shared by the API
//! server's printer columns and the work applier's status feedback.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<String>,
        equal: bool,
        value: String,
    },
}

fn parse(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let b = p.as_bytes();
    let mut i = 0;
    let mut steps = Vec::new();
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                i = start;
                // A field name runs to the next unescaped '.' or '['; `\.` is a dot of the
                // name (label keys: `.metadata.labels.app\.kubernetes\.io/name`).
                let mut name = String::new();
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = p[i..].chars().next().unwrap_or_default();
                    name.push(ch);
                    i += ch.len_utf8();
                }
                if name.is_empty() {
                    return Err(format!("empty field name at offset {start} in {path}"));
                }
                steps.push(Step::Field(name));
            }
            b'[' => {
                let end = p[i..]
                    .find(']')
                    .map(|e| e + i)
                    .ok_or_else(|| format!("unclosed '[' in {path}"))?;
                let inner = p[i + 1..end].trim();
                i = end + 1;
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\''))
                {
                    steps.push(Step::Field(q.to_string()));
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|s| s.strip_suffix(')')) {
                    let (lhs, rhs, equal) = if let Some((l, r)) = f.split_once("==") {
                        (l, r, true)
                    } else if let Some((l, r)) = f.split_once("!=") {
                        (l, r, false)
                    } else {
                        return Err(format!("unsupported filter {f} in {path}"));
                    };
                    let lhs = lhs
                        .trim()
                        .strip_prefix("@.")
                        .ok_or_else(|| format!("filter must start with @. in {path}"))?;
                    let value = rhs
                        .trim()
                        .trim_matches(|c| c == '"' || c == '\'')
                        .to_string();
                    steps.push(Step::Filter {
                        path: lhs.split('.').map(String::from).collect(),
                        equal,
                        value,
                    });
                } else {
                    let n = inner
                        .parse()
                        .map_err(|_| format!("unsupported index {inner} in {path}"))?;
                    steps.push(Step::Index(n));
                }
            }
            _ => return Err(format!("unexpected '{}' in {path}", char::from(b[i]))),
        }
    }
    Ok(steps)
}

/// Validate a JSONPath for a CRD printer column.
pub fn check(path: &str) -> Result<(), String> {
    parse(path).map(|_| ())
}

pub fn eval(obj: &Value, path: &str) -> Result<Vec<Value>, String> {
    let steps = parse(path)?;
    let mut cur: Vec<&Value> = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(f) => next.extend(v.get(f.as_str())),
                Step::Index(n) => next.extend(v.get(*n)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter { path, equal, value } => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut x = Some(item);
                        for f in path {
                            x = x.and_then(|x| x.get(f.as_str()));
                        }
                        let s = match x {
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(Value::Null) | None => None,
                            Some(other) => Some(other.to_string()),
                        };
                        if (s.as_deref() == Some(value.as_str())) == *equal {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    Ok(cur.into_iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_printer_column_paths() {
        let o = json!({"spec": {"size": 3, "a.b": "x"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}});
        assert_eq!(eval(&o, ".spec.size").unwrap(), vec![json!(3)]);
        assert_eq!(eval(&o, ".spec['a.b']").unwrap(), vec![json!("x")]);
        assert_eq!(eval(&o, ".spec.a\\.b").unwrap(), vec![json!("x")]);
        assert_eq!(
            eval(&o, ".status.conditions[?(@.type==\"Ready\")].status").unwrap(),
            vec![json!("True")]
        );
        assert_eq!(eval(&o, ".status.conditions[*].type").unwrap().len(), 2);
        assert_eq!(
            eval(&o, ".status.conditions[1].status").unwrap(),
            vec![json!("False")]
        );
        assert!(eval(&o, ".missing.x").unwrap().is_empty());
        assert!(check(".a[").is_err());
        assert!(check("spec").is_err());
    }
}
