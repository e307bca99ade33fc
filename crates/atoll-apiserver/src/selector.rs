//! Label and field selectors: parsing (from untrusted query strings) and matching.
//!
//! The grammar is kube-apiserver's: label requirements `k`, `!k`, `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`, joined by commas; field requirements `f=v`,
//! `f==v`, `f!=v` with `\,` `\=` `\\` escapes in values.

use std::collections::BTreeMap;

use crate::validation;

#[derive(Clone, Debug, PartialEq)]
pub enum LabelOp {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: LabelOp,
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

struct Lexer<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.at).copied()
    }
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.s[self.at..].starts_with(tok.as_bytes()) {
            self.at += tok.len();
            true
        } else {
            false
        }
    }
    /// A key or value: anything up to whitespace or an operator character.
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let start = self.at;
        while self.at < self.s.len() {
            match self.s[self.at] {
                b',' | b'=' | b'!' | b'(' | b')' | b'<' | b'>' => break,
                c if c.is_ascii_whitespace() => break,
                _ => self.at += 1,
            }
        }
        // Bytes up to an ASCII delimiter are always a char boundary.
        std::str::from_utf8(&self.s[start..self.at]).unwrap_or("")
    }
    fn done(&mut self) -> bool {
        self.peek().is_none()
    }
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    if key.is_empty() {
        return err("a key is required");
    }
    if let Err(msg) = validation::qualified_name(key) {
        return err(format!("invalid label key \"{key}\": {msg}"));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if let Err(msg) = validation::label_value(value) {
        return err(format!("invalid label value: \"{value}\": {msg}"));
    }
    Ok(())
}

impl LabelSelector {
    pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
        let mut lx = Lexer {
            s: input.as_bytes(),
            at: 0,
        };
        let mut reqs = Vec::new();
        if lx.done() {
            return Ok(LabelSelector(reqs));
        }
        loop {
            reqs.push(Self::requirement(&mut lx)?);
            if lx.done() {
                break;
            }
            if !lx.eat(",") {
                return err(format!(
                    "found '{}', expected: ',' or end of string",
                    char::from(lx.peek().unwrap_or(b'?'))
                ));
            }
        }
        Ok(LabelSelector(reqs))
    }

    fn requirement(lx: &mut Lexer) -> Result<LabelRequirement, SelectorError> {
        if lx.eat("!") {
            let key = lx.word().to_string();
            check_key(&key)?;
            return Ok(LabelRequirement {
                key,
                op: LabelOp::NotExists,
            });
        }
        let key = lx.word().to_string();
        check_key(&key)?;
        let op = if lx.eat("==") || lx.eat("=") {
            let v = lx.word().to_string();
            check_value(&v)?;
            LabelOp::Equals(v)
        } else if lx.eat("!=") {
            let v = lx.word().to_string();
            check_value(&v)?;
            LabelOp::NotEquals(v)
        } else if lx.eat(">") || lx.eat("<") {
            let gt = lx.s[lx.at - 1] == b'>';
            let v = lx.word();
            let Ok(n) = v.parse::<i64>() else {
                return err(format!(
                    "for 'Gt', 'Lt' operators, the value must be an integer, got \"{v}\""
                ));
            };
            if gt {
                LabelOp::GreaterThan(n)
            } else {
                LabelOp::LessThan(n)
            }
        } else {
            // `in` / `notin` are words; peek without consuming a key-like token otherwise.
            let save = lx.at;
            let w = lx.word();
            match w {
                "in" | "notin" => {
                    let not = w == "notin";
                    if !lx.eat("(") {
                        return err(format!("expected '(' after '{w}'"));
                    }
                    let mut values = Vec::new();
                    loop {
                        let v = lx.word().to_string();
                        check_value(&v)?;
                        values.push(v);
                        if lx.eat(")") {
                            break;
                        }
                        if !lx.eat(",") {
                            return err("expected ',' or ')' in a set of values");
                        }
                    }
                    if not {
                        LabelOp::NotIn(values)
                    } else {
                        LabelOp::In(values)
                    }
                }
                "" => {
                    lx.at = save;
                    LabelOp::Exists
                }
                other => {
                    return err(format!(
                        "found '{other}', expected: '=', '!=', '==', 'in', 'notin'"
                    ));
                }
            }
        };
        Ok(LabelRequirement { key, op })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::Equals(x) => v == Some(x),
                LabelOp::NotEquals(x) => v != Some(x),
                LabelOp::In(xs) => v.is_some_and(|v| xs.contains(v)),
                LabelOp::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
                LabelOp::GreaterThan(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                LabelOp::LessThan(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    /// The selector of a `matchLabels`/`matchExpressions` object (metav1.LabelSelector).
    pub fn from_json(v: &serde_json::Value) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(|m| m.as_object()) {
            for (k, v) in m {
                reqs.push(LabelRequirement {
                    key: k.clone(),
                    op: LabelOp::Equals(v.as_str().unwrap_or_default().to_string()),
                });
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(|m| m.as_array()) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e["operator"].as_str().unwrap_or_default() {
                    "In" => LabelOp::In(values),
                    "NotIn" => LabelOp::NotIn(values),
                    "Exists" => LabelOp::Exists,
                    "DoesNotExist" => LabelOp::NotExists,
                    other => {
                        return err(format!("{other:?} is not a valid label selector operator"));
                    }
                };
                reqs.push(LabelRequirement { key, op });
            }
        }
        Ok(LabelSelector(reqs))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// A parsed field selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    pub fn parse(input: &str) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in split_unescaped(input, ',') {
            let (field, value, equal) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], &part[i + 2..], false)
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], &part[i + 2..], true)
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], &part[i + 1..], true)
            } else {
                return err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if field.is_empty() {
                return err(format!(
                    "invalid selector: '{part}': a field name is required"
                ));
            }
            reqs.push(FieldRequirement {
                field: field.to_string(),
                value: unescape(value)?,
                equal,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Match with a function that gives an object's value for a field (None: no such field).
    pub fn matches(&self, field_value: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| {
            let v = field_value(&r.field).unwrap_or_default();
            (v == r.value) == r.equal
        })
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    parts.push(cur);
    parts
}

fn find_unescaped(s: &str, op: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i..].starts_with(op.as_bytes()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return err(format!("invalid escape sequence \\{e}")),
                None => return err("trailing backslash"),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_parse_and_match() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app in (web, db)", true),
            ("app notin (web,db)", false),
            ("missing notin (x)", true),
            ("app=web,tier=back", false),
            (" app = web , tier in (front) ", true),
            ("n>4", true),
            ("n<5", false),
            ("example.com/team", false),
        ] {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for sel in [
            "app=",
            "=web",
            "app in web",
            "app in (a",
            "app=web,",
            "a b",
            "-bad=x",
            "app=x y",
            "n>x",
        ] {
            if sel == "app=" {
                // An empty value is valid: `app=` selects an empty label.
                assert!(LabelSelector::parse(sel).is_ok());
                continue;
            }
            assert!(
                LabelSelector::parse(sel).is_err(),
                "{sel} should be rejected"
            );
        }
    }

    #[test]
    fn field_selectors_parse_with_escapes() {
        let s = FieldSelector::parse(r"metadata.name=a\,b,status.phase!=Running").unwrap();
        assert_eq!(s.0[0].value, "a,b");
        assert!(!s.0[1].equal);
        assert!(s.matches(|f| match f {
            "metadata.name" => Some("a,b".into()),
            "status.phase" => Some("Pending".into()),
            _ => None,
        }));
        assert!(FieldSelector::parse("novalue").is_err());
        assert!(FieldSelector::parse(r"a=b\x").is_err());
    }
}
