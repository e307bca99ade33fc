//! The CA pin a peering token comes with: `sha256:<hex>` of the CA certificate's
//! SubjectPublicKeyInfo, as kubeadm's `--discovery-token-ca-cert-hash` pins a cluster's CA.
//! The consumer trusts a provider's CA only if it hashes to the pin, and sends the token only
//! to a server that CA vouches for.

/// The pin of a DER certificate; `None` if it does not parse.
pub fn of_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    Some(format!("sha256:{}", hex(digest.as_ref())))
}

/// The pin of the first certificate of a PEM text.
pub fn of_pem(pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    of_der(&pem.contents)
}

/// A pin as given by a person: `sha256:` optional, hex in either case. The error says what is
/// wrong with it.
pub fn normalize(pin: &str) -> Result<String, String> {
    let hexpart = pin.trim();
    let hexpart = hexpart.strip_prefix("sha256:").unwrap_or(hexpart);
    if hexpart.len() != 64 || !hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{pin:?} is not a CA pin: want sha256:<64 hex digits> (what `atoll peer token` prints)"
        ));
    }
    Ok(format!("sha256:{}", hexpart.to_ascii_lowercase()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_name_the_public_key_and_read_in_any_spelling() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["ca".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let pin = of_pem(&cert.pem()).expect("pin");
        assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
        assert_eq!(of_der(cert.der()).as_deref(), Some(pin.as_str()));
        // Another certificate of the same key pins the same.
        let again = rcgen::CertificateParams::new(vec!["other".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        assert_eq!(of_pem(&again.pem()), Some(pin.clone()));
        let bare = pin.trim_start_matches("sha256:").to_ascii_uppercase();
        assert_eq!(normalize(&bare).as_deref(), Ok(pin.as_str()));
        for bad in ["", "sha256:", "sha256:xyz", "md5:00"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert_eq!(of_pem("not pem"), None);
    }
}
