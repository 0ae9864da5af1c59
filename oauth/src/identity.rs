//! Who logged in, as the upstream identity provider said: what goes into
//! access tokens and session cookies, and what allowlists are checked
//! against. Upstream tokens never leave the login step.

use serde::{Deserialize, Serialize};

/// A user as GitHub or an OIDC provider described them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `github` or `oidc`.
    pub provider: String,
    /// The provider's stable id of the user (GitHub's numeric id, OIDC `sub`).
    pub subject: String,
    /// GitHub login; OIDC `preferred_username`, else `sub`.
    pub login: String,
    /// A verified e-mail address (GitHub's verified primary one; OIDC
    /// `email` when `email_verified` is not false), lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GitHub organisations (logins); OIDC `groups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}
