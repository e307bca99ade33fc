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
        .or_else(|| service_account(server, token, &[API_AUDIENCE]))
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

/// The audience tokens for this API server carry by default.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Signs and verifies service-account tokens (ES256 JWTs), as kube-apiserver's
/// `--service-account-signing-key-file` does.
///
/// # Guarantees
/// - A token verifies only with this key, before its `exp`, after its `nbf`, for one of the
///   audiences asked for, and while its service account exists with the uid it was issued for:
///   deleting the service account revokes its tokens.
pub struct TokenSigner {
    key: ring::signature::EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenSigner {
    /// From a PKCS#8 DER private key (P-256).
    pub fn from_pkcs8(der: &[u8]) -> Result<TokenSigner, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &rng,
        )
        .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        use ring::signature::KeyPair;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = b64url(&digest.as_ref()[..16]);
        Ok(TokenSigner { key, kid })
    }

    /// Load `path` (PEM), creating a new key there if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<TokenSigner, String> {
        let pem = match std::fs::read_to_string(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
                let pem = key.serialize_pem();
                crate::tls::write_private(path, &pem).map_err(|e| e.to_string())?;
                pem
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        TokenSigner::from_pkcs8(key.serialized_der())
    }

    /// A signed token for a service account; bound to a pod (its name and uid) if `pod` is
    /// given, as the kubelet's projected tokens are: it is valid only while that pod exists.
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        lifetime_secs: i64,
        pod: Option<(&str, &str)>,
    ) -> Result<(String, i64), String> {
        let now = jiff::Timestamp::now().as_second();
        let exp = now + lifetime_secs;
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let mut claims = serde_json::json!({
            "aud": audiences, "exp": exp, "iat": now, "nbf": now, "iss": ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        if let Some((pod_name, pod_uid)) = pod {
            claims["kubernetes.io"]["pod"] = serde_json::json!({"name": pod_name, "uid": pod_uid});
        }
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "signing failed".to_string())?;
        Ok((format!("{signing_input}.{}", b64url(sig.as_ref())), exp))
    }

    /// Verify a token's signature and times; returns its claims.
    fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()?,
        )
        .ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        use ring::signature::KeyPair;
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public.verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()?,
        )
        .ok()?;
        let now = jiff::Timestamp::now().as_second();
        let (exp, nbf) = (
            claims.get("exp")?.as_i64()?,
            claims.get("nbf").and_then(Value::as_i64).unwrap_or(0),
        );
        if exp <= now || nbf > now + 60 || claims.get("iss").and_then(Value::as_str) != Some(ISSUER)
        {
            return None;
        }
        Some(claims)
    }
}

/// A service-account token valid for one of `audiences`, whose account still exists.
pub fn service_account(server: &ApiServer, token: &str, audiences: &[&str]) -> Option<Identity> {
    let signer = server.config.token_signer.as_ref()?;
    let claims = signer.verify(token)?;
    let aud: Vec<&str> = claims
        .get("aud")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !audiences.iter().any(|a| aud.contains(a)) {
        return None;
    }
    let ns = claims.pointer("/kubernetes.io/namespace")?.as_str()?;
    let name = claims
        .pointer("/kubernetes.io/serviceaccount/name")?
        .as_str()?;
    let uid = claims
        .pointer("/kubernetes.io/serviceaccount/uid")?
        .as_str()?;
    let entry = server
        .store
        .get(&format!("/core/serviceaccounts/{ns}/{name}"))?;
    let sa: Value = serde_json::from_slice(&entry.value).ok()?;
    if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        || sa.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    // A token bound to a pod lives with the pod: gone, replaced (another uid), or past its
    // deletion's grace period, it is no longer valid (as kube-apiserver checks).
    if let Some(bound) = claims.pointer("/kubernetes.io/pod") {
        let pod_name = bound.get("name")?.as_str()?;
        let pod_uid = bound.get("uid")?.as_str()?;
        let entry = server.store.get(&format!("/core/pods/{ns}/{pod_name}"))?;
        let pod: Value = serde_json::from_slice(&entry.value).ok()?;
        if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod_uid) {
            return None;
        }
        if let Some(deleted) = pod
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            && deleted < jiff::Timestamp::now()
        {
            return None;
        }
    }
    Some(Identity {
        user: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    })
}

#[cfg(test)]
mod jwt_tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let key = rcgen::KeyPair::generate().unwrap();
        let signer = TokenSigner::from_pkcs8(key.serialized_der()).unwrap();
        let (token, _) = signer
            .issue("ns", "bot", "uid-1", &[API_AUDIENCE.to_string()], 600, None)
            .unwrap();
        let claims = signer.verify(&token).expect("verifies");
        assert_eq!(claims["sub"], "system:serviceaccount:ns:bot");
        let mut bad = token.clone();
        bad.push('A');
        assert!(signer.verify(&bad).is_none());
        let other =
            TokenSigner::from_pkcs8(rcgen::KeyPair::generate().unwrap().serialized_der()).unwrap();
        assert!(
            other.verify(&token).is_none(),
            "another key does not verify it"
        );
    }
}
