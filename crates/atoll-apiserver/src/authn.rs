//! Bearer-token authentication, after client certificates (which the TLS layer checks):
//! static tokens from `--token-auth-file`, and bootstrap tokens (`bootstrap.kubernetes.io/token`
//! Secrets in `kube-system`, user `system:bootstrap:<id>`, group `system:bootstrappers`).
//!
//! # Guarantees
//! - A token is accepted only if it matches exactly (compared in constant time) and, for
//!   bootstrap tokens, the Secret allows authentication and has not expired.
//! - A request with a bearer token that does not authenticate gets 401; it never falls back to
//!   anonymous.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use serde_json::Value;

use crate::ApiServer;
use crate::tls::Identity;

/// Tokens read from a kube-apiserver style CSV file: `token,user,uid,"group1,group2"`.
#[derive(Clone, Debug, Default)]
pub struct StaticTokens(HashMap<String, Identity>);

impl StaticTokens {
    pub fn load(path: &Path) -> Result<StaticTokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 || fields[0].is_empty() || fields[1].is_empty() {
                return Err(format!(
                    "{} line {}: expected token,user,uid[,\"group1,group2\"]",
                    path.display(),
                    n + 1
                ));
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            tokens.insert(
                fields[0].clone(),
                Identity {
                    user: fields[1].clone(),
                    groups,
                },
            );
        }
        Ok(StaticTokens(tokens))
    }

    fn find(&self, token: &str) -> Option<Identity> {
        self.0
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map(|(_, id)| id.clone())
    }
}

/// CSV fields with double-quoted fields that may contain commas.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn secret_field(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// A bootstrap token `<id>.<secret>` checked against its Secret in `kube-system`.
fn bootstrap(server: &ApiServer, token: &str) -> Option<Identity> {
    let (id, secret) = token.split_once('.')?;
    let valid = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    if !valid(id, 6) || !valid(secret, 16) {
        return None;
    }
    let entry = server
        .store
        .get(&format!("/core/secrets/kube-system/bootstrap-token-{id}"))?;
    let obj: Value = serde_json::from_slice(&entry.value).ok()?;
    if obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token")
        || obj.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    if secret_field(&obj, "token-id")? != id
        || !constant_time_eq(
            secret_field(&obj, "token-secret")?.as_bytes(),
            secret.as_bytes(),
        )
    {
        return None;
    }
    if secret_field(&obj, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(exp) = secret_field(&obj, "expiration") {
        let exp: jiff::Timestamp = exp.parse().ok()?;
        if exp <= jiff::Timestamp::now() {
            return None;
        }
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    for g in secret_field(&obj, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
    {
        if g.starts_with("system:bootstrappers:") {
            groups.push(g.to_string());
        }
    }
    groups.push("system:authenticated".into());
    Some(Identity {
        user: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// Authenticate a bearer token, or `None` if it is not valid.
pub fn authenticate_token(server: &ApiServer, token: &str) -> Option<Identity> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    server
        .config
        .static_tokens
        .find(token)
        .or_else(|| bootstrap(server, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        assert_eq!(
            split_csv(r#"abc,alice,1,"dev,ops""#),
            ["abc", "alice", "1", "dev,ops"]
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, "# comment\nt1,alice,u1,\"dev,ops\"\nt2,bob,u2\n").unwrap();
        let t = StaticTokens::load(&p).unwrap();
        let alice = t.find("t1").unwrap();
        assert_eq!(alice.user, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert!(t.find("t3").is_none());
        std::fs::write(&p, "onlytoken\n").unwrap();
        assert!(StaticTokens::load(&p).is_err());
    }
}
