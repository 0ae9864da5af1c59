//! Claims on names (hostnames, proxy user names): who holds each, and
//! whether one more object may.
//!
//! A claim is checked against the name policy first (`NameNotAllowed`),
//! then against the holders: passes run oldest first, so the older object
//! keeps a name. A claim that finds the name held by an object of another
//! namespace is *lost*; the object's verdict lists it, the operator writes
//! that list into the object's status, and compilation reads it back
//! ([`crate::Inputs::lost_claims`]): a lost claim stays refused after the
//! holder goes away unless the policy allows takeover. Refusals name a
//! holder only when it is in the claimant's own namespace.

use std::collections::{BTreeMap, BTreeSet};

use postern_api::{Kind, LostClaims, ObjectKey};

use crate::Reason;
use crate::build::Build;
use crate::policy::{NameKind, NamePolicy};
use crate::refusal::Refusal;

/// The holders of one kind of name.
pub(crate) struct Holders {
    kind: NameKind,
    by_name: BTreeMap<String, (Kind, ObjectKey)>,
}

/// Checks `key`'s claim on `names` (already refused when they do not
/// parse) and sets the claims it lost for its verdict. Returns the names
/// when the object may hold them all.
pub(crate) fn claim(
    build: &mut Build<'_>,
    holders: &Holders,
    kind: Kind,
    key: &ObjectKey,
    names: Result<BTreeSet<String>, Refusal>,
) -> Result<BTreeSet<String>, Refusal> {
    let recorded = build.recorded(kind, key);
    let recorded = match holders.kind {
        NameKind::Hostname => &recorded.hostnames,
        NameKind::User => &recorded.users,
    };
    let (outcome, lost) = match names {
        // Unreadable names: keep the record as it is until they read again.
        Err(refusal) => (Err(refusal), recorded.clone()),
        Ok(names) => {
            let claim = Claim {
                key: key.clone(),
                names: &names,
                recorded,
            };
            let checked = holders.check(&build.inputs.options.name_policy, &claim);
            (checked.outcome.map(|()| names), checked.lost)
        }
    };
    let lost = match holders.kind {
        NameKind::Hostname => LostClaims {
            hostnames: lost,
            users: Vec::new(),
        },
        NameKind::User => LostClaims {
            hostnames: Vec::new(),
            users: lost,
        },
    };
    build.lose(kind, key.clone(), lost);
    outcome
}

/// One object's claim on some names.
pub(crate) struct Claim<'a> {
    pub(crate) key: ObjectKey,
    /// Normalised names (lowercased hostnames, user names as written).
    pub(crate) names: &'a BTreeSet<String>,
    /// The names the object's status says it lost before.
    pub(crate) recorded: &'a [String],
}

/// What checking a claim found.
pub(crate) struct Checked {
    /// `Ok`: the object may hold every name.
    pub(crate) outcome: Result<(), Refusal>,
    /// The names lost to another namespace, now or before, still claimed
    /// and not open to takeover; sorted.
    pub(crate) lost: Vec<String>,
}

impl Holders {
    pub(crate) fn new(kind: NameKind) -> Self {
        Holders {
            kind,
            by_name: BTreeMap::new(),
        }
    }

    /// Checks a claim without granting it.
    pub(crate) fn check(&self, policy: &NamePolicy, claim: &Claim<'_>) -> Checked {
        let ns = claim.key.namespace.as_str();
        let what = self.kind.as_str();
        let mut refusal: Option<Refusal> = None;
        let mut conflict: Option<Refusal> = None;
        let mut lost = Vec::new();
        for name in claim.names {
            let takeover = match policy.check(self.kind, name, ns) {
                Ok(takeover) => takeover,
                Err(no) => {
                    refusal.get_or_insert(no);
                    false
                }
            };
            let why = match self.by_name.get(name) {
                Some((kind, holder)) if holder.namespace == ns => Some(format!(
                    "{what} {name} is already held by {kind} {}",
                    holder.name
                )),
                Some(_) => {
                    lost.push(name.clone());
                    Some(format!("{what} {name} is held by another object"))
                }
                None if !takeover && claim.recorded.contains(name) => {
                    lost.push(name.clone());
                    Some(format!(
                        "{what} {name} was held in another namespace when this object claimed it, \
                         and the name policy allows no takeover: delete and recreate this object \
                         to claim it anew"
                    ))
                }
                None => None,
            };
            if let Some(why) = why {
                conflict.get_or_insert((self.conflict_reason(), why));
            }
        }
        Checked {
            outcome: match refusal.or(conflict) {
                Some(no) => Err(no),
                None => Ok(()),
            },
            lost,
        }
    }

    /// Grants every name of an accepted claim.
    pub(crate) fn hold(&mut self, kind: Kind, key: &ObjectKey, names: &BTreeSet<String>) {
        for name in names {
            self.by_name.insert(name.clone(), (kind, key.clone()));
        }
    }

    fn conflict_reason(&self) -> Reason {
        match self.kind {
            NameKind::Hostname => Reason::HostnameConflict,
            NameKind::User => Reason::DuplicateUser,
        }
    }
}
