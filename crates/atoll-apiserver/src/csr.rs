//! CertificateSigningRequests (certificates.k8s.io/v1): validation, the `approval`
//! subresource's rules, and the built-in signer for `kubernetes.io/kube-apiserver-client`.
//!
//! # Guarantees
//! - A CSR whose request does not parse, whose signature does not verify, or whose key is weak
//!   (RSA under 2048 bits, or an algorithm other than ECDSA P-256/P-384, Ed25519 or RSA) is
//!   refused with 422 when created.
//! - The requester's identity is recorded by the server (`spec.username`, `spec.groups`);
//!   whatever the client put there is replaced.
//! - A CSR is approved or denied at most once and never both; only an approved, undenied CSR
//!   for our signer is signed, once, with the usages and lifetime checked and capped.

use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde_json::{Value, json};

use crate::error::Cause;
use crate::tls::Pki;

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// The PEM text of `spec.request` (base64 in JSON).
fn request_pem(obj: &Value) -> Option<String> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD
        .decode(str_at(obj, "/spec/request"))
        .ok()?;
    String::from_utf8(b).ok()
}

/// Run `f` on the parsed PEM certificate request.
fn with_request<T>(
    pem_text: &str,
    f: impl FnOnce(&x509_parser::certification_request::X509CertificationRequest) -> Option<T>,
) -> Option<T> {
    use x509_parser::prelude::FromDer;
    let pem = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .ok()?
        .1;
    let csr = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
        .ok()?
        .1;
    f(&csr)
}

/// The CN and the O values of a PEM certificate request's subject.
fn request_subject(pem_text: &str) -> Option<(String, Vec<String>)> {
    with_request(pem_text, |csr| {
        let subject = &csr.certification_request_info.subject;
        let cn = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let orgs = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(String::from))
            .collect();
        Some((cn, orgs))
    })
}

/// Why the key of a CSR is not acceptable, if it is not.
fn weak_key(pem_text: &str) -> Option<String> {
    with_request(pem_text, weak_key_of)
}

fn weak_key_of(
    csr: &x509_parser::certification_request::X509CertificationRequest,
) -> Option<String> {
    match csr.certification_request_info.subject_pki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) if rsa.key_size() < 2048 => {
            Some(format!("RSA keys must be at least 2048 bits, this one has {}", rsa.key_size()))
        }
        Ok(x509_parser::public_key::PublicKey::RSA(_)) => None,
        Ok(x509_parser::public_key::PublicKey::EC(ec)) if ec.key_size() >= 256 => None,
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => Some(format!("elliptic-curve keys must be at least 256 bits, this one has {}", ec.key_size())),
        Ok(_) if csr.certification_request_info.subject_pki.algorithm.algorithm.to_id_string() == "1.3.101.112" => None,
        _ => Some("the key algorithm is not supported (use ECDSA P-256/P-384, Ed25519 or RSA of 2048 bits or more)".into()),
    }
}

pub fn validate(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if str_at(obj, "/spec/signerName").is_empty() {
        causes.push(Cause::required("spec.signerName"));
    }
    match request_pem(obj) {
        None => causes.push(Cause::invalid(
            "spec.request",
            "",
            "must be a base64-encoded PEM CERTIFICATE REQUEST",
        )),
        Some(pem) => match CertificateSigningRequestParams::from_pem(&pem) {
            Err(e) => causes.push(Cause::invalid(
                "spec.request",
                "",
                &format!("the certificate request is not valid: {e}"),
            )),
            Ok(_) => {
                if let Some(why) = weak_key(&pem) {
                    causes.push(Cause::invalid("spec.request", "", &why));
                }
            }
        },
    }
    let allowed = [
        "signing",
        "digital signature",
        "content commitment",
        "key encipherment",
        "key agreement",
        "data encipherment",
        "cert sign",
        "crl sign",
        "encipher only",
        "decipher only",
        "any",
        "server auth",
        "client auth",
        "code signing",
        "email protection",
        "s/mime",
        "ipsec end system",
        "ipsec tunnel",
        "ipsec user",
        "timestamping",
        "ocsp signing",
        "microsoft sgc",
        "netscape sgc",
    ];
    for (i, u) in obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let u = u.as_str().unwrap_or_default();
        if !allowed.contains(&u) {
            causes.push(Cause::not_supported(
                format!("spec.usages[{i}]"),
                u,
                &[
                    "client auth",
                    "digital signature",
                    "key encipherment",
                    "server auth",
                ],
            ));
        }
    }
    if let Some(secs) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        && secs < 600
    {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            &secs.to_string(),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    // Conditions: Approved and Denied are exclusive, and neither may be taken back.
    let conds = |v: &Value| -> Vec<String> {
        v.pointer("/status/conditions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("type").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let now = conds(obj);
    if now.iter().any(|t| t == "Approved") && now.iter().any(|t| t == "Denied") {
        causes.push(Cause::invalid(
            "status.conditions",
            "",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(old) = old {
        for t in conds(old) {
            if (t == "Approved" || t == "Denied") && !now.contains(&t) {
                causes.push(Cause::forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type \"{t}\""),
                ));
            }
        }
        if old.get("spec") != obj.get("spec") {
            causes.push(Cause::forbidden(
                "spec",
                "a certificate signing request's spec is immutable",
            ));
        }
        let (had, has) = (
            str_at(old, "/status/certificate"),
            str_at(obj, "/status/certificate"),
        );
        if !had.is_empty() && had != has {
            causes.push(Cause::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
}

pub fn condition_column(obj: &Value) -> Value {
    let mut parts: Vec<String> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("type").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        parts.push("Pending".into());
    }
    if !str_at(obj, "/status/certificate").is_empty() {
        parts.push("Issued".into());
    }
    Value::String(parts.join(","))
}

/// What the signer decides for a CSR.
/// How long a decided CSR is kept, and an undecided one (kube-controller-manager's cleaner).
const DECIDED_KEPT: i64 = 3600;
const PENDING_KEPT: i64 = 24 * 3600;

/// Whether a CSR is due for removal, as kube-controller-manager's CSR cleaner decides: approved,
/// denied or failed more than an hour ago, pending for more than a day, or its certificate has
/// expired. Without CSRs going away, every join and renewal of every cluster stays stored.
pub fn due_for_cleanup(csr: &Value, now: jiff::Timestamp) -> bool {
    let at = |s: &str| s.parse::<jiff::Timestamp>().ok();
    let age_since = |t: Option<jiff::Timestamp>| t.map(|t| now.as_second() - t.as_second());
    let created = at(str_at(csr, "/metadata/creationTimestamp"));
    let decided = csr
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| ["Approved", "Denied", "Failed"].contains(&c["type"].as_str().unwrap_or("")))
        .map(|c| {
            at(c["lastUpdateTime"].as_str().unwrap_or(""))
                .or_else(|| at(c["lastTransitionTime"].as_str().unwrap_or("")))
                .or(created)
        })
        .max();
    let expired_certificate = || {
        use base64::Engine;
        let Some(b64) = csr.pointer("/status/certificate").and_then(Value::as_str) else {
            return false;
        };
        let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        x509_parser::pem::parse_x509_pem(&pem)
            .ok()
            .and_then(|(_, p)| {
                p.parse_x509()
                    .ok()
                    .map(|c| c.validity().not_after.timestamp())
            })
            .is_some_and(|not_after| not_after < now.as_second())
    };
    match decided {
        Some(t) => age_since(t).is_some_and(|a| a > DECIDED_KEPT) || expired_certificate(),
        None => age_since(created).is_some_and(|a| a > PENDING_KEPT),
    }
}

pub enum Outcome {
    /// Not for us, not approved, denied, failed or already issued: nothing to do.
    Skip,
    /// The status to write: a certificate, or a `Failed` condition.
    Status(Value),
}

/// Sign an approved CSR for `kubernetes.io/kube-apiserver-client` with the cluster CA.
pub fn sign(pki: &Pki, csr: &Value, max_seconds: i64) -> Outcome {
    let has = |t: &str| {
        csr.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|c| c["type"] == t))
    };
    if str_at(csr, "/spec/signerName") != CLIENT_SIGNER
        || !has("Approved")
        || has("Denied")
        || has("Failed")
        || !str_at(csr, "/status/certificate").is_empty()
    {
        return Outcome::Skip;
    }
    let mut status = csr.get("status").cloned().unwrap_or(json!({}));
    let fail = |mut status: Value, why: &str| {
        let cond = json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": why,
                          "lastUpdateTime": crate::object::now(), "lastTransitionTime": crate::object::now()});
        match status.get_mut("conditions").and_then(Value::as_array_mut) {
            Some(a) => a.push(cond),
            None => status["conditions"] = json!([cond]),
        }
        Outcome::Status(status)
    };
    let usages: Vec<&str> = csr
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !usages.contains(&"client auth")
        || usages
            .iter()
            .any(|u| !["client auth", "digital signature", "key encipherment"].contains(u))
    {
        return fail(
            status,
            "kubernetes.io/kube-apiserver-client certificates need usage \"client auth\" and allow only \"digital signature\" and \"key encipherment\" besides",
        );
    }
    let Some(pem) = request_pem(csr) else {
        return fail(status, "the request is not PEM");
    };
    let mut req = match CertificateSigningRequestParams::from_pem(&pem) {
        Ok(r) => r,
        Err(e) => return fail(status, &format!("the request is not valid: {e}")),
    };
    // rcgen keeps one value per attribute type: the groups (O) are taken from the request
    // as it is, not from rcgen's reading of it, which would keep only the last.
    match request_subject(&pem) {
        Some((cn, orgs)) => match atoll_runtime::client_subject(&cn, &orgs) {
            Ok(dn) => req.params.distinguished_name = dn,
            Err(why) => return fail(status, &why),
        },
        None => return fail(status, "the request's subject cannot be read"),
    }
    let lifetime = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(max_seconds)
        .max(600)
        // The signer's own limit (kube-controller-manager's --cluster-signing-duration) wins,
        // even below the 10 minutes a request may ask for: short-lived test setups rely on it.
        .min(max_seconds.max(1));
    let now = time::OffsetDateTime::now_utc();
    req.params.not_before = now - time::Duration::minutes(5);
    req.params.not_after = now + time::Duration::seconds(lifetime);
    req.params.is_ca = rcgen::IsCa::ExplicitNoCa;
    req.params.key_usages = usages
        .iter()
        .filter_map(|u| match *u {
            "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    req.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    req.params.subject_alt_names.clear();
    match pki.sign_request(&req) {
        Ok(cert_pem) => {
            use base64::Engine;
            status["certificate"] =
                json!(base64::engine::general_purpose::STANDARD.encode(cert_pem));
            Outcome::Status(status)
        }
        Err(e) => fail(status, &format!("signing failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now: jiff::Timestamp, seconds_ago: i64) -> String {
        (now - jiff::SignedDuration::from_secs(seconds_ago)).to_string()
    }

    /// A certificate valid until `not_after` (seconds since the epoch), base64 PEM.
    fn certificate(not_after: i64) -> String {
        use base64::Engine;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_after - 600).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    #[test]
    fn old_csrs_are_due_for_cleanup_as_kube_controller_manager_decides() {
        let now = jiff::Timestamp::now();
        let csr = |created: i64, cond: Option<(&str, i64)>, cert: Option<String>| {
            let mut c = json!({"metadata": {"creationTimestamp": at(now, created)}, "status": {}});
            if let Some((t, ago)) = cond {
                c["status"]["conditions"] =
                    json!([{"type": t, "status": "True", "lastUpdateTime": at(now, ago)}]);
            }
            if let Some(cert) = cert {
                c["status"]["certificate"] = json!(cert);
            }
            c
        };
        assert!(
            !due_for_cleanup(&csr(3600 * 23, None, None), now),
            "pending for less than a day"
        );
        assert!(
            due_for_cleanup(&csr(3600 * 25, None, None), now),
            "pending for more than a day"
        );
        let valid = Some(certificate(now.as_second() + 3600));
        assert!(!due_for_cleanup(
            &csr(7200, Some(("Approved", 600)), valid.clone()),
            now
        ));
        assert!(due_for_cleanup(
            &csr(7200, Some(("Approved", 3700)), valid),
            now
        ));
        assert!(due_for_cleanup(
            &csr(7200, Some(("Denied", 3700)), None),
            now
        ));
        assert!(!due_for_cleanup(
            &csr(7200, Some(("Failed", 60)), None),
            now
        ));
        let expired = Some(certificate(now.as_second() - 10));
        assert!(
            due_for_cleanup(&csr(700, Some(("Approved", 600)), expired), now),
            "its certificate has expired"
        );
    }
}
