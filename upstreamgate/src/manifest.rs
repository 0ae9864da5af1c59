//! The manifest standalone mode writes for a user (`upstreamgate-<user>.yaml`
//! in the manifests folder): the password Secret, the upstream credentials
//! Secret when the URL carried them, and the UserUpstream, as
//! `kubectl apply -f` would read them. Each document is JSON, which YAML
//! readers take as it is, so no value needs YAML quoting rules.

use serde_json::{Value, json};

use crate::UserObjects;

/// The manifest text for `objects`. It holds the passwords: the caller
/// writes it where only the data plane reads.
pub fn manifest(objects: &UserObjects) -> String {
    let name = &objects.name;
    let mut docs = vec![secret(name, json!({"password": objects.password}))];
    if let Some(c) = &objects.credentials {
        docs.push(secret(
            &objects.credentials_name(),
            json!({"username": c.username, "password": c.password}),
        ));
    }
    docs.push(json!({
        "apiVersion": postern_api::API_VERSION,
        "kind": "UserUpstream",
        "metadata": {"name": name},
        "spec": objects.spec,
    }));
    let docs: Vec<String> = docs.iter().map(|doc| format!("{doc:#}\n")).collect();
    format!(
        "# Written by the UpstreamGate-compatible API (POST /upstream).\n{}",
        docs.join("---\n")
    )
}

fn secret(name: &str, string_data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": string_data,
    })
}
