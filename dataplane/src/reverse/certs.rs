//! Server certificates chosen by SNI, from a store built once per snapshot.
//!
//! The store maps hostnames to parsed keys: a site's `tls.secretRef`
//! certificate, or the certificate ACME issued for it (`SiteTls::Acme` with
//! a certificate id: the operator adds issued certificates to the snapshot
//! like any other, so ACME needs no change here). An SNI that no site
//! serves gets no certificate, so the handshake fails, never another
//! site's certificate, unless a default certificate was configured.

use std::collections::HashMap;
use std::sync::Arc;

use postern_snapshot::{Certificate, SiteTls, Snapshot};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a PEM certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate: {0}")]
    Cert(String),
    #[error("private key: {0}")]
    Key(String),
}

/// Parses a PEM chain and key into a signing-ready key.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let certified = unchecked_key(cert_pem, key_pem)?;
    certified
        .keys_match()
        .map_err(|e| CertError::Key(format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

/// [`certified_key`] without the check that key and certificate match:
/// that check parses the certificate with webpki, which refuses the
/// critical acmeIdentifier extension of a TLS-ALPN-01 certificate.
pub fn unchecked_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Cert("no certificate in PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::Key(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CertError::Key(e.to_string()))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Certificates by hostname.
#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Parsed keys by certificate id and content, reused by the next build.
    parsed: HashMap<String, (u64, Arc<CertifiedKey>)>,
}

impl CertStore {
    /// Builds the store for `snapshot`, reusing keys `previous` already parsed.
    pub fn build(
        snapshot: &Snapshot,
        default: Option<Arc<CertifiedKey>>,
        previous: &CertStore,
    ) -> CertStore {
        let mut store = CertStore {
            default,
            ..CertStore::default()
        };
        for site in &snapshot.sites {
            let id = match &site.tls {
                Some(SiteTls::Secret { certificate }) => certificate,
                Some(SiteTls::Acme {
                    certificate: Some(certificate),
                    ..
                }) => certificate,
                _ => continue,
            };
            let Some(key) = store.key(snapshot, id, previous, &site.id) else {
                continue;
            };
            for host in &site.hostnames {
                match host.strip_prefix("*.") {
                    Some(parent) => store.wildcard.insert(parent.to_string(), key.clone()),
                    None => store.exact.insert(host.clone(), key.clone()),
                };
            }
        }
        store
    }

    fn key(
        &mut self,
        snapshot: &Snapshot,
        id: &str,
        previous: &CertStore,
        site: &str,
    ) -> Option<Arc<CertifiedKey>> {
        // Certificates are sorted by id.
        let index = snapshot
            .certificates
            .binary_search_by(|c| c.id.as_str().cmp(id))
            .ok()?;
        let cert = &snapshot.certificates[index];
        let stamp = fingerprint(cert);
        let cached = [&self.parsed, &previous.parsed]
            .into_iter()
            .find_map(|cache| {
                cache
                    .get(id)
                    .filter(|(s, _)| *s == stamp)
                    .map(|(_, k)| k.clone())
            });
        if let Some(key) = cached {
            self.parsed.insert(id.to_string(), (stamp, key.clone()));
            return Some(key);
        }
        match certified_key(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()) {
            Ok(key) => {
                let key = Arc::new(key);
                self.parsed.insert(id.to_string(), (stamp, key.clone()));
                Some(key)
            }
            Err(e) => {
                tracing::warn!(site, certificate = id, error = %e, "unusable certificate; its hosts fail TLS handshakes");
                None
            }
        }
    }

    /// The key for an SNI name (any case), else the default.
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).cloned().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).cloned()
            })
        });
        found.or_else(|| self.default.clone())
    }
}

fn fingerprint(cert: &Certificate) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cert.cert_pem.hash(&mut h);
    cert.key_pem.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_snapshot::{BackendEndpoint, Site};

    fn cert(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    fn snapshot() -> Snapshot {
        let (a_cert, a_key) = cert(&["a.example.com"]);
        let (w_cert, w_key) = cert(&["*.wild.example"]);
        let site = |id: &str, host: &str, cert: &str| Site {
            id: id.into(),
            hostnames: vec![host.into()],
            backend: BackendEndpoint::new("http://127.0.0.1:1"),
            tls: Some(SiteTls::Secret {
                certificate: cert.into(),
            }),
            ..Site::default()
        };
        Snapshot {
            sites: vec![
                site("ns/a", "a.example.com", "ns/a-tls"),
                site("ns/w", "*.wild.example", "ns/w-tls"),
            ],
            certificates: vec![
                Certificate {
                    id: "ns/a-tls".into(),
                    cert_pem: a_cert,
                    key_pem: a_key,
                },
                Certificate {
                    id: "ns/w-tls".into(),
                    cert_pem: w_cert,
                    key_pem: w_key,
                },
            ],
            ..Snapshot::default()
        }
    }

    #[test]
    fn sni_picks_the_site_certificate_and_unknown_gets_none() {
        let store = CertStore::build(&snapshot(), None, &CertStore::default());
        let a = store.resolve(Some("A.Example.com")).expect("a");
        let w = store.resolve(Some("x.wild.example")).expect("wildcard");
        assert!(!Arc::ptr_eq(&a, &w));
        assert!(store.resolve(Some("b.example.com")).is_none());
        assert!(store.resolve(Some("a.b.wild.example")).is_none());
        assert!(store.resolve(None).is_none());
    }

    #[test]
    fn a_default_certificate_answers_the_rest() {
        let (c, k) = cert(&["default.invalid"]);
        let default = Arc::new(certified_key(c.as_bytes(), k.as_bytes()).expect("key"));
        let store = CertStore::build(&snapshot(), Some(default.clone()), &CertStore::default());
        let got = store.resolve(Some("unknown.example")).expect("default");
        assert!(Arc::ptr_eq(&got, &default));
    }

    #[test]
    fn unchanged_certificates_are_not_parsed_again() {
        let snap = snapshot();
        let first = CertStore::build(&snap, None, &CertStore::default());
        let second = CertStore::build(&snap, None, &first);
        let (a1, a2) = (
            first.resolve(Some("a.example.com")).expect("a"),
            second.resolve(Some("a.example.com")).expect("a"),
        );
        assert!(Arc::ptr_eq(&a1, &a2));
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let (c, _) = cert(&["a.example"]);
        let (_, other_key) = cert(&["b.example"]);
        assert!(matches!(
            certified_key(c.as_bytes(), other_key.as_bytes()),
            Err(CertError::Key(_))
        ));
    }
}
