//! CEL predicates (`celSelector.celExpressions`): compiled once per expression, evaluated with
//! the variable `managedCluster` bound to the cluster as an object (its JSON), as Open Cluster
//! Management evaluates them.
//!
//! A compile error, or a reference to any variable but `managedCluster`, makes the placement
//! misconfigured; an expression that fails at run time (a missing field, a wrong type) or gives
//! anything but `true` does not select the cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The longest expression accepted: CEL is not Turing-complete, but a hostile placement could
/// still hand the hub a megabyte of it.
pub const MAX_EXPRESSION: usize = 10 * 1024;

/// A compiled expression.
pub struct Expression {
    program: cel::Program,
}

impl Expression {
    /// Compile `source`, or say why it cannot be used.
    pub fn compile(source: &str) -> Result<Expression, String> {
        if source.len() > MAX_EXPRESSION {
            return Err(format!(
                "a CEL expression of {} bytes is longer than the {MAX_EXPRESSION} allowed",
                source.len()
            ));
        }
        if source.trim().is_empty() {
            return Err("a CEL expression is empty".into());
        }
        // The parser reports some inputs by panicking rather than with an error; a placement is
        // untrusted input, so a panic is an error here, not a crashed scheduler.
        let compiled = std::panic::catch_unwind(|| cel::Program::compile(source))
            .map_err(|_| format!("CEL expression {source:?} cannot be parsed"))?;
        let program =
            compiled.map_err(|e| format!("CEL expression {source:?}: compilation failed: {e}"))?;
        let refs = program.references();
        let bound = macro_variables(source);
        if let Some(other) = refs
            .variables()
            .into_iter()
            .find(|v| *v != "managedCluster" && !bound.iter().any(|b| b == v))
        {
            return Err(format!(
                "CEL expression {source:?}: undeclared reference to {other:?} (the only variable is managedCluster)"
            ));
        }
        Ok(Expression { program })
    }

    /// Whether the expression is `true` for a cluster (its JSON).
    pub fn selects(&self, cluster: &serde_json::Value) -> bool {
        let mut ctx = cel::Context::default();
        if ctx.add_variable("managedCluster", cluster).is_err() {
            return false;
        }
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(&ctx)));
        matches!(result, Ok(Ok(cel::Value::Bool(true))))
    }
}

/// The variables comprehension macros bind (`list.exists(c, ...)` binds `c`): the parser
/// reports them among the references, but they are not free.
fn macro_variables(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in ["all", "exists", "exists_one", "map", "filter"] {
        let pat = format!(".{m}(");
        let mut rest = source;
        while let Some(i) = rest.find(&pat) {
            rest = &rest[i + pat.len()..];
            let var: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !var.is_empty() {
                out.push(var);
            }
        }
    }
    out
}

/// Compiled expressions by source, shared by every placement that uses them.
#[derive(Default)]
pub struct Cache(Mutex<HashMap<String, Arc<Result<Expression, String>>>>);

impl Cache {
    pub fn get(&self, source: &str) -> Arc<Result<Expression, String>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(source) {
            return e.clone();
        }
        // Bounded: a stream of distinct expressions must not grow the hub without end.
        if map.len() > 4096 {
            map.clear();
        }
        let e = Arc::new(Expression::compile(source));
        map.insert(source.to_string(), e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_select_on_any_field_and_bad_ones_are_errors() {
        let cluster = json!({
            "metadata": {"name": "member1", "labels": {"env": "prod"}},
            "status": {"clusterClaims": [{"name": "region", "value": "eu-west"}],
                       "version": {"kubernetes": "v1.33.1"}},
        });
        for (src, want) in [
            (r#"managedCluster.metadata.labels["env"] == "prod""#, true),
            (r#"managedCluster.metadata.labels["env"] == "dev""#, false),
            (
                r#"managedCluster.status.clusterClaims.exists(c, c.name == "region" && c.value.startsWith("eu"))"#,
                true,
            ),
            (
                r#"managedCluster.metadata.name.matches("^member[0-9]+$")"#,
                true,
            ),
            // A missing field is an evaluation error: not selected.
            (r#"managedCluster.spec.nothing == 1"#, false),
            // Not a boolean: not selected.
            (r#"managedCluster.metadata.name"#, false),
        ] {
            let e = Expression::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(e.selects(&cluster), want, "{src}");
        }
        for bad in ["1 +", "", "other.x == 1", &"a".repeat(MAX_EXPRESSION + 1)] {
            assert!(Expression::compile(bad).is_err(), "{bad:.40}");
        }
    }
}
