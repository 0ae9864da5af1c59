//! One order against one CA: every hostname of the request in one
//! certificate (multi-SAN), the challenges handed to a [`Presenter`] that
//! returns once every data plane answers them, then a fresh ECDSA P-256
//! key and CSR. Nothing here decides *when* to order ([`crate::policy`]).

use std::time::Duration;

use futures::future::BoxFuture;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use postern_api::AcmeChallengeType;
use postern_compile::AcmeRequest;
use postern_snapshot::AcmeChallenge;
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256,
};

use crate::policy::{Problem, Unix};

/// Makes challenges answerable by every data plane.
pub trait Presenter: Send + Sync {
    /// Publishes `challenges` for `request` (replacing any it had) and
    /// resolves once every connected data plane answers them.
    fn present<'a>(
        &'a self,
        request: &'a AcmeRequest,
        challenges: Vec<AcmeChallenge>,
    ) -> BoxFuture<'a, Result<(), Problem>>;
    /// Drops the challenges of `request`.
    fn withdraw<'a>(&'a self, request: &'a AcmeRequest) -> BoxFuture<'a, ()>;
}

/// An issued certificate.
#[derive(Clone)]
pub struct Issued {
    /// The chain, leaf first, PEM.
    pub cert_pem: String,
    /// PKCS#8 PEM of the fresh P-256 key.
    pub key_pem: String,
    pub not_before: Unix,
    pub not_after: Unix,
}

/// How long the CA gets to validate and to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(200))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// Orders a certificate for `request.hostnames` on `account`.
pub async fn order(
    account: &Account,
    request: &AcmeRequest,
    presenter: &dyn Presenter,
) -> Result<Issued, Problem> {
    let identifiers: Vec<Identifier> = request
        .hostnames
        .iter()
        .map(|h| Identifier::Dns(h.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(problem)?;
    let kind = match request.challenge {
        AcmeChallengeType::Http01 => ChallengeType::Http01,
        AcmeChallengeType::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    // Collect the challenges of pending authorizations first, publish them
    // all at once, and only then tell the CA: it may validate immediately.
    let mut challenges = Vec::new();
    let mut ready_urls = Vec::new();
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(problem)?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let hostname = authz.identifier().to_string();
            let challenge = authz.challenge(kind.clone()).ok_or_else(|| Problem {
                kind: "postern:noChallenge".into(),
                detail: format!("the CA offers no {:?} challenge for {hostname}", kind),
            })?;
            let key_authorization = challenge.key_authorization();
            challenges.push(match request.challenge {
                AcmeChallengeType::Http01 => AcmeChallenge::Http01 {
                    hostname,
                    token: challenge.token.clone(),
                    key_authorization: key_authorization.as_str().to_string(),
                },
                AcmeChallengeType::TlsAlpn01 => {
                    let (cert_pem, key_pem) =
                        alpn_certificate(&hostname, key_authorization.digest().as_ref())?;
                    AcmeChallenge::TlsAlpn01 {
                        hostname,
                        cert_pem,
                        key_pem,
                    }
                }
            });
            ready_urls.push(challenge.url.clone());
        }
    }
    let outcome =
        validate_and_finalize(&mut order, request, presenter, challenges, &ready_urls).await;
    presenter.withdraw(request).await;
    outcome
}

async fn validate_and_finalize(
    order: &mut instant_acme::Order,
    request: &AcmeRequest,
    presenter: &dyn Presenter,
    challenges: Vec<AcmeChallenge>,
    ready_urls: &[String],
) -> Result<Issued, Problem> {
    if !challenges.is_empty() {
        presenter.present(request, challenges).await?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(problem)?;
            let kind = match request.challenge {
                AcmeChallengeType::Http01 => ChallengeType::Http01,
                AcmeChallengeType::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            if let Some(mut challenge) = authz.challenge(kind)
                && ready_urls.contains(&challenge.url)
            {
                challenge.set_ready().await.map_err(problem)?;
            }
        }
    }
    let status = match order.poll_ready(&POLL).await {
        Ok(status) => status,
        Err(instant_acme::Error::Api(p)) => return Err(challenge_problem(order, Some(p)).await),
        Err(e) => return Err(problem(e)),
    };
    if status != OrderStatus::Ready {
        return Err(challenge_problem(order, None).await);
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(local)?;
    let mut params = CertificateParams::new(request.hostnames.clone()).map_err(local)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(local)?;
    order.finalize_csr(csr.der()).await.map_err(problem)?;
    let cert_pem = order.poll_certificate(&POLL).await.map_err(problem)?;
    let (not_before, not_after) = validity(&cert_pem)?;
    Ok(Issued {
        cert_pem,
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
    })
}

/// The most telling error of a failed order: a challenge's own problem
/// (what the CA saw when it connected), else the order's.
async fn challenge_problem(
    order: &mut instant_acme::Order,
    order_error: Option<instant_acme::Problem>,
) -> Problem {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        if let Some(p) = authz.challenges.iter().find_map(|c| c.error.clone()) {
            return from_problem(&p);
        }
    }
    match order_error {
        Some(p) => from_problem(&p),
        None => Problem {
            kind: "urn:ietf:params:acme:error:unauthorized".into(),
            detail: "the order became invalid".into(),
        },
    }
}

/// The RFC 8737 certificate: self-signed, the one SAN, the critical
/// acmeIdentifier extension holding the key authorization's SHA-256.
fn alpn_certificate(hostname: &str, digest: &[u8]) -> Result<(String, String), Problem> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(local)?;
    let mut params = CertificateParams::new(vec![hostname.to_string()]).map_err(local)?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(local)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// notBefore and notAfter of the leaf of a PEM chain.
pub fn validity(chain_pem: &str) -> Result<(Unix, Unix), Problem> {
    let bad = |detail: String| Problem {
        kind: "postern:badCertificate".into(),
        detail,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("not X.509: {e}")))?;
    let v = cert.validity();
    let unix = |t: &x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    Ok((unix(&v.not_before), unix(&v.not_after)))
}

/// The RFC 9773 identifier of the leaf of a PEM chain, if it has an AKI.
pub fn ari_id(chain_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).ok()?;
    let der = rustls_pki_types::CertificateDer::from(pem.contents.as_slice());
    instant_acme::CertificateIdentifier::try_from(&der)
        .ok()
        .map(|id| id.to_string())
}

/// The start of the renewal window the CA suggests for `id` and when to
/// ask again; `None` when the directory offers no ARI or the call fails.
pub async fn ari_window(account: &Account, id: &str) -> Option<(Unix, Unix)> {
    // The identifier deserialises from a borrowed string; base64url and
    // '.' need no JSON escaping.
    let quoted = format!("\"{id}\"");
    let parsed: instant_acme::CertificateIdentifier<'_> = serde_json::from_str(&quoted).ok()?;
    match account.renewal_info(&parsed).await {
        Ok((info, retry)) => {
            let start = u64::try_from(info.suggested_window.start.unix_timestamp()).unwrap_or(0);
            let again = crate::manager::now() + retry.as_secs().clamp(60, 86_400);
            Some((start, again))
        }
        Err(e) => {
            tracing::debug!(error = %e, "no ACME renewal information");
            None
        }
    }
}

/// An instant-acme error as a problem: the CA's own when it sent one.
pub fn problem(e: instant_acme::Error) -> Problem {
    match e {
        instant_acme::Error::Api(p) => from_problem(&p),
        other => Problem {
            kind: "postern:acmeClient".into(),
            detail: other.to_string(),
        },
    }
}

fn from_problem(p: &instant_acme::Problem) -> Problem {
    let mut detail = p.detail.clone().unwrap_or_default();
    for sub in &p.subproblems {
        if let Some(d) = &sub.detail {
            detail.push_str("; ");
            detail.push_str(d);
        }
    }
    Problem {
        kind: p.r#type.clone().unwrap_or_else(|| "about:blank".into()),
        detail,
    }
}

fn local(e: rcgen::Error) -> Problem {
    Problem {
        kind: "postern:keyGeneration".into(),
        detail: e.to_string(),
    }
}
