//! The bookkeeping every pass shares: the inputs, the verdicts, the
//! accepted objects, the certificates sites need and Secret lookups. It
//! knows no kind and calls no pass; the pass order is [`crate::compile`]'s.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use postern_api::{Kind, LostClaims, Object, ObjectKey, ProxyTargetSpec};
use postern_snapshot::{
    AcmeChallenge, Certificate, OAuthClientEntry, ProxyUser, Site, Snapshot, SourceObject,
    TunnelEntry,
};

use crate::refusal::Refusal;
use crate::{Inputs, Output, Reason, SecretData, Verdict};

/// One compilation in progress; each pass reads the inputs through it and
/// records a verdict per object.
pub(crate) struct Build<'a> {
    pub(crate) inputs: &'a Inputs,
    verdicts: Vec<Verdict>,
    objects: Vec<SourceObject>,
    pub(crate) certificates: BTreeMap<String, Certificate>,
    /// ProxyTargets by `namespace/name`, made on first use: oauth policies
    /// look up the target they name once each, not by a scan each.
    targets_by_id: OnceCell<BTreeMap<String, &'a Object<ProxyTargetSpec>>>,
    /// The claims each object lost to another namespace (see `claims`).
    lost: BTreeMap<(Kind, ObjectKey), LostClaims>,
}

/// What `recorded` answers for an object with no record.
static NONE_LOST: LostClaims = LostClaims {
    hostnames: Vec::new(),
    users: Vec::new(),
};

impl<'a> Build<'a> {
    pub(crate) fn new(inputs: &'a Inputs) -> Self {
        Build {
            inputs,
            verdicts: Vec::new(),
            objects: Vec::new(),
            certificates: BTreeMap::new(),
            targets_by_id: OnceCell::new(),
            lost: BTreeMap::new(),
        }
    }

    /// The ProxyTarget `namespace/name`, if one is among the inputs.
    pub(crate) fn target(&self, id: &str) -> Option<&'a Object<ProxyTargetSpec>> {
        let inputs = self.inputs;
        self.targets_by_id
            .get_or_init(|| {
                inputs
                    .proxy_targets
                    .iter()
                    .map(|t| (t.key().to_string(), &**t))
                    .collect()
            })
            .get(id)
            .copied()
    }

    /// Seals the snapshot of what the passes built, with every verdict.
    pub(crate) fn finish(
        mut self,
        sites: Vec<Site>,
        users: Vec<ProxyUser>,
        tunnels: Vec<TunnelEntry>,
        oauth_clients: Vec<OAuthClientEntry>,
        acme_challenges: Vec<AcmeChallenge>,
    ) -> Output {
        self.objects.sort();
        for verdict in &mut self.verdicts {
            if let Some(lost) = self.lost.remove(&(verdict.kind, verdict.key.clone())) {
                verdict.lost_claims = lost;
            }
        }
        self.verdicts
            .sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        let (snapshot, json) = Snapshot {
            schema: postern_snapshot::SCHEMA,
            version: String::new(),
            objects: self.objects,
            sites,
            users,
            tunnels,
            oauth_clients,
            certificates: self.certificates.into_values().collect(),
            acme_challenges,
        }
        .seal_to_json();
        Output {
            snapshot,
            json,
            verdicts: self.verdicts,
            acme: Vec::new(),
        }
    }

    /// Records the outcome for `obj`; an accepted object joins the snapshot's
    /// object list so an ack of the snapshot programs this generation.
    pub(crate) fn verdict<S>(
        &mut self,
        kind: Kind,
        obj: &Object<S>,
        outcome: Result<String, Refusal>,
    ) -> bool {
        let (reason, message) = match outcome {
            Ok(message) => (Reason::Accepted, message),
            Err(refusal) => refusal,
        };
        if reason == Reason::Accepted {
            self.objects.push(SourceObject {
                kind: kind.as_str().to_string(),
                namespace: obj.namespace().to_string(),
                name: obj.meta.name.clone(),
                generation: obj.generation(),
            });
        }
        self.verdicts.push(Verdict {
            kind,
            key: obj.key(),
            generation: obj.generation(),
            reason,
            message,
            lost_claims: LostClaims::default(),
        });
        reason == Reason::Accepted
    }

    /// The claims the object's status says it lost before.
    pub(crate) fn recorded(&self, kind: Kind, key: &ObjectKey) -> &'a LostClaims {
        self.inputs
            .lost_claims
            .get(&(kind, key.clone()))
            .unwrap_or(&NONE_LOST)
    }

    /// Sets the claims the object has lost, for its verdict.
    pub(crate) fn lose(&mut self, kind: Kind, key: ObjectKey, lost: LostClaims) {
        if !lost.is_empty() {
            self.lost.insert((kind, key), lost);
        }
    }

    /// Secret `namespace/name`, or why not.
    fn secret(&self, namespace: &str, name: &str) -> Result<&'a SecretData, Refusal> {
        self.inputs
            .secrets
            .get(&ObjectKey::new(namespace, name))
            .ok_or_else(|| {
                (
                    Reason::SecretNotFound,
                    format!("Secret {namespace}/{name} not found"),
                )
            })
    }

    /// The bytes of `key` in Secret `namespace/name`, or why not.
    pub(crate) fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<&'a [u8], Refusal> {
        let secret = self.secret(namespace, name)?;
        match secret.data.get(key) {
            Some(value) if !value.is_empty() => Ok(value),
            Some(_) => Err((
                Reason::SecretNotFound,
                format!("key {key} of Secret {namespace}/{name} is empty"),
            )),
            None => Err((
                Reason::SecretNotFound,
                format!("Secret {namespace}/{name} has no key {key}"),
            )),
        }
    }

    /// Changes an object's verdict to a refusal after the fact (a later
    /// pass found it cannot work) and takes it out of the snapshot.
    pub(crate) fn overrule(&mut self, kind: Kind, key: &ObjectKey, refusal: Refusal) {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        self.objects
            .retain(|o| !(o.kind == kind.as_str() && o.namespace == ns && o.name == name));
        for verdict in &mut self.verdicts {
            if verdict.kind == kind && &verdict.key == key {
                (verdict.reason, verdict.message) = refusal.clone();
            }
        }
    }

    /// Every key and value of Secret `namespace/name`, sorted by key.
    pub(crate) fn secret_entries(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<(&'a str, &'a [u8])>, Refusal> {
        let secret = self.secret(namespace, name)?;
        Ok(secret
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect())
    }

    /// Every value of Secret `namespace/name`, sorted by key.
    pub(crate) fn secret_values(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<&'a [u8]>, Refusal> {
        let secret = self.secret(namespace, name)?;
        Ok(secret.data.values().map(Vec::as_slice).collect())
    }
}

/// Sorts objects oldest first (creation time, then namespace/name): the order
/// in which conflicting claims are granted.
pub(crate) fn oldest_first<S>(objects: &[Arc<Object<S>>]) -> Vec<&Object<S>> {
    let mut sorted: Vec<&Object<S>> = objects.iter().map(|o| &**o).collect();
    sorted.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
    sorted
}
