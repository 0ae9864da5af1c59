//! OAuthClient: a statically declared client of the authorization server.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SecretKeyRef;

/// OAuth 2.1 grant types a client may use.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// A client of Postern's authorization server. The client id is the object's
/// name; the secret, when set, makes it a confidential client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.grantTypes.exists(g, g == 'client_credentials') || has(self.secretRef)", "message": "client_credentials needs a confidential client (secretRef)"}
]))]
pub struct OAuthClientSpec {
    /// Redirect URIs, compared exactly: https, or http on a loopback host.
    #[schemars(
        length(min = 1, max = 50),
        inner(
            length(max = 2048),
            regex(
                pattern = r"^(https://[^\s#]+|http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?(/[^\s#]*)?)$"
            )
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub redirect_uris: Vec<String>,
    /// Grant types the client may use.
    #[schemars(length(min = 1, max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub grant_types: Vec<GrantType>,
    /// Scopes the client may ask for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(
            length(min = 1, max = 128),
            regex(pattern = r"^[\x21\x23-\x5b\x5d-\x7e]+$")
        )
    )]
    pub scopes: Vec<String>,
    /// The name shown on the consent page. Default: the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub client_name: Option<String>,
    /// The client secret (default key `clientSecret`). Absent: a public client (PKCE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}
