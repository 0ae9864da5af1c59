//! The consistency check a data plane runs before applying a snapshot.

use std::collections::BTreeSet;

use crate::{AcmeIssuer, PathRule, SiteTls, Snapshot};

/// Why a snapshot was refused. The text is sent back in a NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("unsupported snapshot schema {found} (this build reads {supported})")]
    Schema { found: u32, supported: u32 },
    #[error("version {claimed} does not match the content hash {actual}")]
    Version { claimed: String, actual: String },
    #[error("hostname {0} is served by two sites")]
    DuplicateHostname(String),
    #[error("proxy user {0} appears twice")]
    DuplicateUser(String),
    #[error("route {route}: invalid regular expression: {error}")]
    Regex { route: String, error: String },
    #[error("site {site} refers to missing certificate {certificate}")]
    MissingCertificate { site: String, certificate: String },
    #[error("site {site}: {issuer:?} is not a valid ACME issuer name")]
    AcmeIssuer { site: String, issuer: String },
    #[error("ACME challenge for {0}, which no site serves")]
    AcmeChallenge(String),
    #[error("cannot read snapshot: {0}")]
    Decode(String),
}

impl Snapshot {
    /// Checks what the data plane relies on; the compiler guarantees all of
    /// it, so a failure means a bug or a mismatched build, and the data plane
    /// keeps its last good snapshot.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        self.check_schema()?;
        let actual = self.content_hash();
        if actual != self.version {
            return Err(SnapshotError::Version {
                claimed: self.version.clone(),
                actual,
            });
        }
        self.validate_content()
    }

    /// [`validate`](Self::validate) but for the version, for a snapshot
    /// whose wire form was already checked against it
    /// ([`decode_snapshot`](crate::sync::decode_snapshot) does): hashing
    /// it again would mean serialising it again.
    pub fn validate_content(&self) -> Result<(), SnapshotError> {
        self.check_schema()?;
        self.check_hostnames()?;
        self.check_users()?;
        self.check_routes()?;
        self.check_certificates()?;
        self.check_acme_issuers()?;
        self.check_acme_challenges()
    }

    fn check_schema(&self) -> Result<(), SnapshotError> {
        if self.schema != crate::SCHEMA {
            return Err(SnapshotError::Schema {
                found: self.schema,
                supported: crate::SCHEMA,
            });
        }
        Ok(())
    }

    /// A challenge is answered only for a hostname some site serves, so a
    /// snapshot cannot make the data planes vouch for a name nobody declared.
    fn check_acme_challenges(&self) -> Result<(), SnapshotError> {
        let served: BTreeSet<&str> = self
            .sites
            .iter()
            .flat_map(|s| s.hostnames.iter().map(String::as_str))
            .collect();
        match self
            .acme_challenges
            .iter()
            .find(|c| !served.contains(c.hostname()))
        {
            Some(c) => Err(SnapshotError::AcmeChallenge(c.hostname().to_string())),
            None => Ok(()),
        }
    }

    fn check_hostnames(&self) -> Result<(), SnapshotError> {
        let mut seen = BTreeSet::new();
        for host in self.sites.iter().flat_map(|s| &s.hostnames) {
            if !seen.insert(host.as_str()) {
                return Err(SnapshotError::DuplicateHostname(host.clone()));
            }
        }
        Ok(())
    }

    fn check_users(&self) -> Result<(), SnapshotError> {
        let mut seen = BTreeSet::new();
        for user in &self.users {
            if !seen.insert(user.user.as_str()) {
                return Err(SnapshotError::DuplicateUser(user.user.clone()));
            }
        }
        Ok(())
    }

    fn check_routes(&self) -> Result<(), SnapshotError> {
        for route in self.sites.iter().flat_map(|s| &s.routes) {
            if let PathRule::Regex(re) = &route.path {
                regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| SnapshotError::Regex {
                    route: route.id.clone(),
                    error: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    fn check_certificates(&self) -> Result<(), SnapshotError> {
        let ids: BTreeSet<&str> = self.certificates.iter().map(|c| c.id.as_str()).collect();
        for site in &self.sites {
            let wanted = match &site.tls {
                Some(SiteTls::Secret { certificate }) => Some(certificate),
                Some(SiteTls::Acme { certificate, .. }) => certificate.as_ref(),
                None => None,
            };
            if let Some(certificate) = wanted
                && !ids.contains(certificate.as_str())
            {
                return Err(SnapshotError::MissingCertificate {
                    site: site.id.clone(),
                    certificate: certificate.clone(),
                });
            }
        }
        Ok(())
    }

    /// A named issuer is 1 to 63 of `a-z 0-9 -` and never a built-in name,
    /// which would read back as the built-in issuer.
    fn check_acme_issuers(&self) -> Result<(), SnapshotError> {
        for site in &self.sites {
            let Some(SiteTls::Acme {
                issuer: AcmeIssuer::Named(name),
                ..
            }) = &site.tls
            else {
                continue;
            };
            let well_formed = (1..=63).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !well_formed || AcmeIssuer::parse(name) != AcmeIssuer::Named(name.clone()) {
                return Err(SnapshotError::AcmeIssuer {
                    site: site.id.clone(),
                    issuer: name.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RouteEntry, Site};

    fn site(id: &str, hosts: &[&str]) -> Site {
        Site::new(id, hosts, "http://127.0.0.1:1")
    }

    /// Older data planes hash what they decode: a tunnel that is not a
    /// pool must serialise exactly as before `pool` existed.
    #[test]
    fn a_tunnel_that_is_no_pool_serialises_without_the_field() {
        let entry = |pool| crate::TunnelEntry {
            id: "ns/t".into(),
            mode: crate::TunnelMode::Http,
            hostnames: vec!["t.example.com".into()],
            path_prefix: None,
            tcp_port: None,
            agent_key: "k".into(),
            strip_prefix: true,
            pool,
        };
        let text = |pool| serde_json::to_string(&entry(pool)).expect("json");
        assert!(!text(false).contains("pool"), "{}", text(false));
        assert!(text(true).contains("\"pool\":true"), "{}", text(true));
    }

    #[test]
    fn sealed_snapshot_validates() {
        let snap = Snapshot {
            sites: vec![site("a/a", &["a.example.com"])],
            ..Snapshot::default()
        }
        .seal();
        assert_eq!(snap.validate(), Ok(()));
    }

    #[test]
    fn version_hash_covers_every_field() {
        // The Unsealed serializer lists fields by hand; this catches a field
        // added to Snapshot but not hashed.
        let snap = Snapshot {
            sites: vec![site("a/a", &["a.example.com"])],
            ..Snapshot::default()
        }
        .seal();
        let mut blank = snap.clone();
        blank.version.clear();
        let bytes = serde_json::to_vec(&blank).expect("serialise");
        assert_eq!(&crate::sha256_hex(&bytes)[..32], snap.version);
    }

    #[test]
    fn sealing_to_json_is_sealing_then_encoding() {
        let plain = Snapshot {
            sites: vec![site("a/a", &["a.example.com"])],
            ..Snapshot::default()
        };
        let mut challenged = plain.clone();
        challenged.acme_challenges = vec![crate::AcmeChallenge::Http01 {
            hostname: "a.example.com".into(),
            token: "t".into(),
            key_authorization: "t.k".into(),
        }];
        for snap in [Snapshot::default(), plain, challenged] {
            let (sealed, json) = snap.clone().seal_to_json();
            let expected = snap.seal();
            assert_eq!(sealed, expected);
            assert_eq!(json, expected.to_json().expect("json"));
        }
    }

    #[test]
    fn tampered_content_is_refused() {
        let mut snap = Snapshot {
            sites: vec![site("a/a", &["a.example.com"])],
            ..Snapshot::default()
        }
        .seal();
        snap.sites[0].hostnames[0] = "b.example.com".into();
        assert!(matches!(
            snap.validate(),
            Err(SnapshotError::Version { .. })
        ));
    }

    #[test]
    fn a_challenge_for_a_name_no_site_serves_is_refused() {
        let mut snap = Snapshot {
            sites: vec![crate::Site::new(
                "ns/web",
                &["a.example.com"],
                "http://b:80",
            )],
            acme_challenges: vec![crate::AcmeChallenge::Http01 {
                hostname: "evil.example.com".into(),
                token: "t".into(),
                key_authorization: "t.k".into(),
            }],
            ..Snapshot::default()
        }
        .seal();
        assert_eq!(
            snap.validate(),
            Err(SnapshotError::AcmeChallenge("evil.example.com".into()))
        );
        snap.acme_challenges.clear();
        let snap = snap.seal();
        assert_eq!(snap.validate(), Ok(()));
    }

    #[test]
    fn future_schema_is_refused() {
        let mut snap = Snapshot::default().seal();
        snap.schema = crate::SCHEMA + 1;
        assert!(matches!(snap.validate(), Err(SnapshotError::Schema { .. })));
    }

    #[test]
    fn duplicate_hostnames_are_refused() {
        let snap = Snapshot {
            sites: vec![
                site("a/a", &["x.example.com"]),
                site("a/b", &["x.example.com"]),
            ],
            ..Snapshot::default()
        }
        .seal();
        assert_eq!(
            snap.validate(),
            Err(SnapshotError::DuplicateHostname("x.example.com".into()))
        );
    }

    #[test]
    fn bad_regex_and_missing_certificate_are_refused() {
        let mut s = site("a/a", &["a.example.com"]);
        s.routes.push(RouteEntry {
            id: "a/r".into(),
            path: PathRule::Regex("(".into()),
            methods: vec![],
            priority: 0,
            backend: None,
            auth: None,
        });
        let snap = Snapshot {
            sites: vec![s.clone()],
            ..Snapshot::default()
        }
        .seal();
        assert!(matches!(snap.validate(), Err(SnapshotError::Regex { .. })));

        s.routes.clear();
        s.tls = Some(SiteTls::Secret {
            certificate: "a/tls".into(),
        });
        let snap = Snapshot {
            sites: vec![s],
            ..Snapshot::default()
        }
        .seal();
        assert!(matches!(
            snap.validate(),
            Err(SnapshotError::MissingCertificate { .. })
        ));
    }

    fn acme_site(issuer: AcmeIssuer) -> Site {
        let mut s = site("a/a", &["a.example.com"]);
        s.tls = Some(SiteTls::Acme {
            issuer,
            certificate: None,
        });
        s
    }

    #[test]
    fn acme_issuers_are_plain_strings_on_the_wire() {
        for (issuer, wire) in [
            (AcmeIssuer::Production, "production"),
            (AcmeIssuer::Staging, "staging"),
            (AcmeIssuer::Named("internal-ca".into()), "internal-ca"),
        ] {
            let json = serde_json::to_value(acme_site(issuer.clone())).expect("serialise");
            assert_eq!(json["tls"]["issuer"], wire);
            let back: Site = serde_json::from_value(json).expect("deserialise");
            assert_eq!(back.tls, acme_site(issuer).tls);
        }
    }

    #[test]
    fn named_issuers_must_be_well_formed_and_not_built_in() {
        let snap = |name: &str| {
            Snapshot {
                sites: vec![acme_site(AcmeIssuer::Named(name.into()))],
                ..Snapshot::default()
            }
            .seal()
        };
        assert_eq!(snap("internal-ca").validate(), Ok(()));
        for bad in ["", "production", "staging", "Upper", "a b", &"x".repeat(64)] {
            assert_eq!(
                snap(bad).validate(),
                Err(SnapshotError::AcmeIssuer {
                    site: "a/a".into(),
                    issuer: bad.to_string()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tunnel_modes_and_grant_types_keep_their_wire_names() {
        use crate::{GrantType, TunnelMode};
        assert_eq!(serde_json::json!(TunnelMode::Http), "http");
        assert_eq!(serde_json::json!(TunnelMode::Tcp), "tcp");
        assert!(serde_json::from_str::<TunnelMode>(r#""udp""#).is_err());
        let mut grants = vec![
            GrantType::RefreshToken,
            GrantType::ClientCredentials,
            GrantType::AuthorizationCode,
        ];
        grants.sort();
        assert_eq!(
            serde_json::json!(grants),
            serde_json::json!(["authorization_code", "client_credentials", "refresh_token"])
        );
    }
}
