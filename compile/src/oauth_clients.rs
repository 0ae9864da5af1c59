//! OAuthClients → client entries: redirect URIs (https, or http on a
//! loopback host), grant types, scopes and the hashed client secret.
//! `client_credentials` needs a secret; client ids are unique.

use std::collections::BTreeMap;

use postern_api::{GrantType as ApiGrant, Kind, OAuthClientSpec, Object, ObjectKey};
use postern_snapshot::{GrantType, OAuthClientEntry, PasswordHash, sha256_hex};

use crate::Reason;
use crate::build::{Build, oldest_first};
use crate::refusal::Refusal;

/// The client id protected hosts use towards their authorization server.
const RESERVED_CLIENT_ID: &str = "postern-guard";

/// Compiles OAuthClients oldest first: the client id is the object's name,
/// and the older object keeps one used in two namespaces.
pub(crate) fn compile(build: &mut Build<'_>) -> Vec<OAuthClientEntry> {
    let mut clients: BTreeMap<String, (ObjectKey, OAuthClientEntry)> = BTreeMap::new();
    let inputs = build.inputs;
    for obj in oldest_first(&inputs.oauth_clients) {
        let outcome = oauth_client(build, obj).and_then(|entry| {
            // Only another namespace can hold the same name: never name it.
            if clients.contains_key(&entry.client_id) {
                return Err((
                    Reason::DuplicateClientId,
                    format!(
                        "client id {} is already used by an OAuthClient of another namespace",
                        entry.client_id
                    ),
                ));
            }
            clients.insert(entry.client_id.clone(), (obj.key(), entry));
            Ok(String::new())
        });
        build.verdict(Kind::OAuthClient, obj, outcome);
    }
    clients.into_values().map(|(_, entry)| entry).collect()
}

fn oauth_client(
    build: &Build<'_>,
    obj: &Object<OAuthClientSpec>,
) -> Result<OAuthClientEntry, Refusal> {
    let ns = obj.namespace();
    let spec = &obj.spec;
    if obj.meta.name == RESERVED_CLIENT_ID {
        return Err((
            Reason::InvalidSpec,
            format!("client id {RESERVED_CLIENT_ID} is reserved for Postern's own browser sign-in"),
        ));
    }
    if spec.redirect_uris.is_empty() || spec.grant_types.is_empty() {
        return Err((
            Reason::InvalidSpec,
            "redirectUris and grantTypes must not be empty".into(),
        ));
    }
    for uri in &spec.redirect_uris {
        let loopback = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
            .iter()
            .any(|p| uri.starts_with(p));
        if !(uri.starts_with("https://") || loopback) || uri.contains('#') {
            return Err((
                Reason::InvalidSpec,
                format!(
                    "redirect URI {uri:?} must be https, or http on a loopback host, without a fragment"
                ),
            ));
        }
    }
    let secret = match &spec.secret_ref {
        Some(r) => {
            let value = build.secret_value(ns, &r.name, r.key_or("clientSecret"))?;
            let salt = sha256_hex(format!("postern-client\0{}", obj.meta.name).as_bytes());
            Some(PasswordHash::new(&salt[..32], value))
        }
        None => None,
    };
    if secret.is_none() && spec.grant_types.contains(&ApiGrant::ClientCredentials) {
        return Err((
            Reason::InvalidSpec,
            "client_credentials needs a confidential client (secretRef)".into(),
        ));
    }
    let mut grant_types: Vec<GrantType> = spec
        .grant_types
        .iter()
        .map(|g| match g {
            ApiGrant::AuthorizationCode => GrantType::AuthorizationCode,
            ApiGrant::RefreshToken => GrantType::RefreshToken,
            ApiGrant::ClientCredentials => GrantType::ClientCredentials,
        })
        .collect();
    grant_types.sort();
    grant_types.dedup();
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v
    };
    Ok(OAuthClientEntry {
        id: obj.key().to_string(),
        client_id: obj.meta.name.clone(),
        client_name: spec.client_name.clone(),
        redirect_uris: sorted(&spec.redirect_uris),
        grant_types,
        scopes: sorted(&spec.scopes),
        secret,
    })
}
