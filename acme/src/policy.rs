//! When to order: pure functions of the stored state and an injected
//! clock, so every rule is unit-tested without a CA.
//!
//! A certificate is renewed once `renew_fraction` of its lifetime is left
//! (a third by default, Let's Encrypt's own advice), or at the start of the
//! window the CA suggests over ARI (RFC 9773) when that is earlier. A
//! failed order backs off exponentially with jitter, capped; the state is
//! persisted with the certificate, so a restart waits out the same back-off.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch: what the state stores, and the clock.
pub type Unix = u64;

/// Tunables of the policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// The share of the lifetime left when renewal starts, in (0, 1).
    pub renew_fraction: f64,
    /// The first retry after a failure; doubles per failure.
    pub retry_base: Duration,
    /// The longest wait between two attempts.
    pub retry_cap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            renew_fraction: 1.0 / 3.0,
            retry_base: Duration::from_secs(60),
            retry_cap: Duration::from_secs(6 * 3600),
        }
    }
}

/// What is stored next to a certificate (annotations or the state folder).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertState {
    pub issuer: String,
    /// The SANs of the stored certificate, sorted; empty: none stored yet.
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub not_before: Unix,
    #[serde(default)]
    pub not_after: Unix,
    #[serde(default)]
    pub renew_after: Unix,
    /// Failed attempts in a row for `attempted`.
    #[serde(default)]
    pub failures: u32,
    /// No new attempt before this.
    #[serde(default)]
    pub retry_after: Unix,
    /// The hostnames and issuer of the failed attempts: a changed spec is
    /// tried at once rather than waiting out the old back-off.
    #[serde(default)]
    pub attempted: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Problem>,
    /// The certificate's ARI id (RFC 9773, `AKI.serial`) when the CA
    /// offers renewal information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_id: Option<String>,
    /// When to ask for the renewal information again (the CA's Retry-After).
    #[serde(default)]
    pub ari_check_after: Unix,
}

/// An ACME problem (RFC 8555 section 6.7), or a local failure with a
/// `type` of our own (`postern:...`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// Why an order is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    NoCertificate,
    HostnamesChanged,
    IssuerChanged,
    Renewal,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::NoCertificate => "issue",
            Why::HostnamesChanged => "hostnames changed",
            Why::IssuerChanged => "issuer changed",
            Why::Renewal => "renew",
        }
    }
}

/// What to do about one certificate now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing until then.
    Keep { until: Unix },
    /// Order now.
    Order(Why),
    /// An order is due but a failure's back-off runs until then.
    Wait { why: Why, until: Unix },
}

/// The decision for a certificate of `hostnames` from `issuer`.
pub fn decide(
    now: Unix,
    hostnames: &[String],
    issuer: &str,
    state: Option<&CertState>,
) -> Decision {
    let Some(state) = state else {
        return Decision::Order(Why::NoCertificate);
    };
    let why = if state.hostnames.is_empty() {
        Why::NoCertificate
    } else if state.hostnames != hostnames {
        Why::HostnamesChanged
    } else if state.issuer != issuer {
        Why::IssuerChanged
    } else if now < state.renew_after {
        return Decision::Keep {
            until: state.renew_after,
        };
    } else {
        Why::Renewal
    };
    let same_attempt = state.attempted == attempt_key(hostnames, issuer);
    if state.failures > 0 && same_attempt && now < state.retry_after {
        return Decision::Wait {
            why,
            until: state.retry_after,
        };
    }
    Decision::Order(why)
}

/// What `attempted` records for an attempt: the hostnames, then the issuer.
pub fn attempt_key(hostnames: &[String], issuer: &str) -> Vec<String> {
    let mut key = hostnames.to_vec();
    key.push(format!("issuer={issuer}"));
    key
}

/// When to renew a certificate valid from `not_before` to `not_after`:
/// `fraction` of the lifetime before the end, or the ARI window's start
/// if the CA suggests an earlier one.
pub fn renew_after(
    not_before: Unix,
    not_after: Unix,
    fraction: f64,
    ari_start: Option<Unix>,
) -> Unix {
    let lifetime = not_after.saturating_sub(not_before) as f64;
    let left = (lifetime * fraction.clamp(0.0, 1.0)) as u64;
    let by_lifetime = not_after.saturating_sub(left);
    match ari_start {
        Some(start) if start < by_lifetime => start.max(not_before),
        _ => by_lifetime,
    }
}

/// The wait after the `failures`-th failure in a row: `retry_base`
/// doubling per failure up to `retry_cap`, then scaled by a jitter in
/// [0.5, 1) (`jitter` is a sample of [0, 1)) so replicas and targets that
/// failed together do not retry together.
pub fn backoff(policy: &Policy, failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let raw = policy.retry_base.saturating_mul(1u32 << doublings);
    let capped = raw.min(policy.retry_cap);
    capped.mul_f64(0.5 + jitter.clamp(0.0, 0.999) / 2.0)
}

/// The state after a failed attempt at `now`.
pub fn failed(
    policy: &Policy,
    previous: Option<&CertState>,
    hostnames: &[String],
    issuer: &str,
    problem: Problem,
    now: Unix,
    jitter: f64,
) -> CertState {
    let mut state = previous.cloned().unwrap_or_else(|| CertState {
        issuer: issuer.to_string(),
        ..CertState::default()
    });
    let key = attempt_key(hostnames, issuer);
    state.failures = if state.attempted == key {
        state.failures.saturating_add(1)
    } else {
        1
    };
    state.attempted = key;
    state.retry_after = now + backoff(policy, state.failures, jitter).as_secs().max(1);
    state.last_error = Some(problem);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn issued(now: Unix) -> CertState {
        CertState {
            issuer: "le".into(),
            hostnames: hosts(&["a.example"]),
            not_before: now,
            not_after: now + 90 * 86400,
            renew_after: renew_after(now, now + 90 * 86400, 1.0 / 3.0, None),
            ..CertState::default()
        }
    }

    #[test]
    fn nothing_stored_orders() {
        assert_eq!(
            decide(0, &hosts(&["a.example"]), "le", None),
            Decision::Order(Why::NoCertificate)
        );
    }

    #[test]
    fn a_fresh_certificate_is_kept_until_a_third_is_left() {
        let state = issued(1000);
        let want = hosts(&["a.example"]);
        assert_eq!(state.renew_after, 1000 + 60 * 86400);
        assert_eq!(
            decide(1000 + 59 * 86400, &want, "le", Some(&state)),
            Decision::Keep {
                until: state.renew_after
            }
        );
        assert_eq!(
            decide(state.renew_after, &want, "le", Some(&state)),
            Decision::Order(Why::Renewal)
        );
    }

    #[test]
    fn changed_hostnames_or_issuer_order_at_once() {
        let state = issued(1000);
        assert_eq!(
            decide(
                1001,
                &hosts(&["a.example", "b.example"]),
                "le",
                Some(&state)
            ),
            Decision::Order(Why::HostnamesChanged)
        );
        assert_eq!(
            decide(1001, &hosts(&["a.example"]), "other", Some(&state)),
            Decision::Order(Why::IssuerChanged)
        );
    }

    #[test]
    fn ari_moves_renewal_earlier_never_later() {
        assert_eq!(renew_after(0, 900, 1.0 / 3.0, Some(100)), 100);
        assert_eq!(renew_after(0, 900, 1.0 / 3.0, Some(800)), 600);
        assert_eq!(renew_after(50, 900, 1.0 / 3.0, Some(10)), 50);
    }

    #[test]
    fn failures_back_off_exponentially_capped_with_jitter() {
        let p = Policy {
            renew_fraction: 1.0 / 3.0,
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(100),
        };
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(&p, 2, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(&p, 3, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(&p, 30, 0.0), Duration::from_secs(50));
        assert!(backoff(&p, 30, 0.99) < Duration::from_secs(100));
        assert!(backoff(&p, 1, 0.99) > backoff(&p, 1, 0.0));
    }

    #[test]
    fn a_failure_waits_then_retries_and_a_new_spec_does_not_wait() {
        let p = Policy::default();
        let want = hosts(&["a.example"]);
        let problem = Problem {
            kind: "urn:ietf:params:acme:error:connection".into(),
            detail: "refused".into(),
        };
        let s1 = failed(&p, None, &want, "le", problem.clone(), 1000, 0.0);
        assert_eq!(s1.failures, 1);
        assert_eq!(s1.retry_after, 1030);
        assert_eq!(
            decide(1010, &want, "le", Some(&s1)),
            Decision::Wait {
                why: Why::NoCertificate,
                until: 1030
            }
        );
        assert_eq!(
            decide(1030, &want, "le", Some(&s1)),
            Decision::Order(Why::NoCertificate)
        );
        let s2 = failed(&p, Some(&s1), &want, "le", problem.clone(), 1030, 0.0);
        assert_eq!((s2.failures, s2.retry_after), (2, 1090));
        let other = hosts(&["b.example"]);
        assert_eq!(
            decide(1031, &other, "le", Some(&s2)),
            Decision::Order(Why::NoCertificate)
        );
        let s3 = failed(&p, Some(&s2), &other, "le", problem, 1031, 0.0);
        assert_eq!(s3.failures, 1, "a new spec starts its own count");
    }

    #[test]
    fn a_failed_renewal_keeps_the_old_certificate_state() {
        let p = Policy::default();
        let old = issued(0);
        let s = failed(
            &p,
            Some(&old),
            &old.hostnames,
            "le",
            Problem::default(),
            old.renew_after,
            0.5,
        );
        assert_eq!(
            (s.not_after, s.hostnames.clone()),
            (old.not_after, old.hostnames.clone())
        );
        assert!(matches!(
            decide(old.renew_after + 1, &old.hostnames, "le", Some(&s)),
            Decision::Wait {
                why: Why::Renewal,
                ..
            }
        ));
    }
}
