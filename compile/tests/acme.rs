//! What the compiler says about ACME targets: requests only for accepted
//! targets, issuer names checked, wildcards split out, stored certificates
//! served, challenges kept only for the names being validated.

mod fixtures;

use std::collections::BTreeMap;

use fixtures::*;
use postern_api::{AcmeChallengeType, AcmeTls, Kind, ObjectKey, TlsConfig};
use postern_compile::{CHALLENGES_KEY, Inputs, Reason, SecretData, compile};
use postern_snapshot::{AcmeChallenge, SiteTls};

fn acme_target(
    name: &str,
    hosts: &[&str],
    issuer: &str,
) -> postern_api::Object<postern_api::ProxyTargetSpec> {
    let mut t = target(name, hosts);
    t.spec.tls = Some(TlsConfig {
        secret_ref: None,
        acme: Some(AcmeTls {
            issuer: issuer.into(),
            challenge: Some(AcmeChallengeType::TlsAlpn01),
        }),
    });
    t
}

fn http01(host: &str) -> AcmeChallenge {
    AcmeChallenge::Http01 {
        hostname: host.into(),
        token: "tok".into(),
        key_authorization: "tok.thumb".into(),
    }
}

#[test]
fn accepted_targets_yield_one_request_each_and_unknown_issuers_are_refused() {
    let inputs = Inputs {
        proxy_targets: vec![
            acme_target(
                "web",
                &["b.example.com", "a.example.com", "*.w.example.com"],
                "staging",
            )
            .into(),
            acme_target("nope", &["n.example.com"], "elsewhere").into(),
        ],
        ..Inputs::default()
    };
    let out = compile(&inputs);
    let nope = out
        .verdicts
        .iter()
        .find(|v| v.key.name == "nope")
        .expect("verdict");
    assert_eq!(nope.reason, Reason::UnknownIssuer);
    assert_eq!(out.acme.len(), 1);
    let request = &out.acme[0];
    assert_eq!(
        (request.kind, request.key.clone()),
        (Kind::ProxyTarget, ObjectKey::new(NS, "web"))
    );
    assert_eq!(request.hostnames, ["a.example.com", "b.example.com"]);
    assert_eq!(request.wildcards, ["*.w.example.com"]);
    assert_eq!(request.challenge, AcmeChallengeType::TlsAlpn01);
    assert_eq!(request.secret, "web-acme-tls");
}

#[test]
fn the_stored_certificate_is_served_and_challenges_are_filtered() {
    let cert = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
    let mut data = BTreeMap::from([
        ("tls.crt".to_string(), cert.as_bytes().to_vec()),
        (
            "tls.key".to_string(),
            b"-----BEGIN PRIVATE KEY-----".to_vec(),
        ),
    ]);
    let listed =
        serde_json::to_vec(&[http01("a.example.com"), http01("other.example.com")]).expect("json");
    data.insert(CHALLENGES_KEY.to_string(), listed);
    let inputs = Inputs {
        proxy_targets: vec![acme_target("web", &["a.example.com"], "production").into()],
        secrets: BTreeMap::from([(
            ObjectKey::new(NS, "web-acme-tls"),
            SecretData { kind: None, data },
        )]),
        acme_challenges: vec![http01("stray.example.com")],
        ..Inputs::default()
    };
    let snapshot = compile(&inputs).snapshot;
    assert_eq!(snapshot.acme_challenges, vec![http01("a.example.com")]);
    assert!(matches!(
        &snapshot.sites[0].tls,
        Some(SiteTls::Acme { certificate: Some(id), .. }) if id == "team/web-acme-tls"
    ));
    assert_eq!(snapshot.validate(), Ok(()));
}
