//! The [`Identity`] an OpenID Connect login yields: from the verified ID
//! token's claims, completed from userinfo when the token has no e-mail.
//! Userinfo is only trusted for the same `sub`.

use ::http::StatusCode;
use ::http::header::AUTHORIZATION;
use serde_json::Value;

use super::PROVIDER;
use super::idtoken::Claims;
use crate::identity::Identity;
use crate::login::http::HttpClient;

pub(super) fn identity_from(c: &Claims) -> Identity {
    Identity {
        provider: PROVIDER.into(),
        subject: c.sub.clone(),
        login: c
            .preferred_username
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| c.sub.clone()),
        email: verified_email(c.email.as_deref(), c.email_verified.as_ref()),
        name: c.name.clone().filter(|n| !n.is_empty()),
        groups: groups(c.groups.as_ref()),
    }
}

/// The address unless the provider says it is unverified (some send the
/// flag as a string).
fn verified_email(email: Option<&str>, verified: Option<&Value>) -> Option<String> {
    let unverified = matches!(verified, Some(Value::Bool(false)))
        || matches!(verified, Some(Value::String(s)) if s.eq_ignore_ascii_case("false"));
    email
        .filter(|e| !e.is_empty() && !unverified)
        .map(str::to_lowercase)
}

fn groups(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// Fills what the ID token lacked from userinfo. Best effort: a failure
/// leaves the identity as the verified ID token made it, and an answer for
/// another `sub` is ignored (OIDC Core §5.3.2).
pub(super) async fn merge_userinfo(
    http: &HttpClient,
    endpoint: &str,
    token: &str,
    identity: &mut Identity,
) {
    let bearer = format!("Bearer {token}");
    let info = match http.get(endpoint, &[(AUTHORIZATION, &bearer)]).await {
        Ok(resp) if resp.status == StatusCode::OK => resp.json::<Claims>().ok(),
        Ok(resp) => {
            tracing::warn!(status = resp.status.as_u16(), "OIDC userinfo refused");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "OIDC userinfo unreachable");
            None
        }
    };
    let Some(info) = info.filter(|i| i.sub == identity.subject) else {
        return;
    };
    identity.email = verified_email(info.email.as_deref(), info.email_verified.as_ref());
    if identity.name.is_none() {
        identity.name = info.name.filter(|n| !n.is_empty());
    }
    if identity.groups.is_empty() {
        identity.groups = groups(info.groups.as_ref());
    }
    if identity.login == identity.subject
        && let Some(user) = info.preferred_username.filter(|u| !u.is_empty())
    {
        identity.login = user;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_reads_claims() {
        let claims: Claims = serde_json::from_value(json!({
            "sub": "s1", "email": "A@B.example", "email_verified": "true",
            "groups": ["g1", 7, "g2"], "name": "",
        }))
        .expect("claims");
        let id = identity_from(&claims);
        assert_eq!(id.login, "s1");
        assert_eq!(id.email.as_deref(), Some("a@b.example"));
        assert_eq!(id.groups, ["g1", "g2"]);
        assert_eq!(id.name, None);
        assert_eq!(verified_email(Some("x@y"), Some(&json!(false))), None);
        assert_eq!(verified_email(Some("x@y"), Some(&json!("FALSE"))), None);
        assert_eq!(groups(Some(&json!("solo"))), ["solo"]);
    }
}
