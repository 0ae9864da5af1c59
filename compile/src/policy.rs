//! The name policy: which namespaces may claim which hostnames and proxy
//! user names, and whether a claim that lost to another namespace may take
//! the name once its holder is gone.
//!
//! An input of compilation (in [`crate::Options`]), read from the
//! operator's `--name-policy` file. It only says who may claim a name; which
//! of several allowed claimants holds it is the claims' rule (the oldest).
//!
//! The most specific pattern matching a name decides: an exact hostname over
//! `*.suffix` (the longer suffix first) over `*`; for users, the longest
//! prefix. Rules with that same pattern add up. A name no rule covers is
//! refused everywhere.

use serde::Deserialize;

use crate::Reason;
use crate::refusal::Refusal;

/// The policy as a file states it, before checking.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    rules: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    namespaces: Vec<String>,
    #[serde(default)]
    takeover: Takeover,
}

/// Whether a claim that lost to another namespace may take the name once
/// the holder is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Takeover {
    /// It stays refused (the default).
    #[default]
    Deny,
    /// The oldest remaining claimant takes the name.
    Allow,
}

/// A checked name policy; the default lets any namespace claim any name,
/// with no takeover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePolicy {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    hostnames: Vec<Pattern>,
    /// User-name prefixes; empty text matches every user.
    users: Vec<String>,
    /// `None`: every namespace.
    namespaces: Option<Vec<String>>,
    takeover: Takeover,
}

/// A hostname pattern as written, and how it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: any name ending with it.
    Suffix(String),
    Any,
}

/// Which kind of name is claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameKind {
    Hostname,
    User,
}

impl NameKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NameKind::Hostname => "hostname",
            NameKind::User => "user",
        }
    }
}

/// A policy file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("name policy: {0}")]
    Parse(String),
    #[error("name policy rule {index}: {message}")]
    Rule { index: usize, message: String },
}

impl Default for NamePolicy {
    fn default() -> Self {
        NamePolicy {
            rules: vec![Rule {
                hostnames: vec![Pattern::Any],
                users: vec![String::new()],
                namespaces: None,
                takeover: Takeover::Deny,
            }],
        }
    }
}

impl NamePolicy {
    /// Reads and checks a policy file's YAML (`rules: [...]`).
    pub fn from_yaml(text: &str) -> Result<NamePolicy, PolicyError> {
        let file: File =
            serde_yaml_ng::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let rules = file
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| {
                Rule::check(rule).map_err(|message| PolicyError::Rule { index, message })
            })
            .collect::<Result<_, _>>()?;
        Ok(NamePolicy { rules })
    }

    /// May namespace `ns` claim `name`? `Ok(takeover)` when it may, with
    /// whether a lost claim of `ns` may take the name over; the refusal
    /// names the deciding pattern, never the namespaces a rule lists.
    pub(crate) fn check(&self, kind: NameKind, name: &str, ns: &str) -> Result<bool, Refusal> {
        let deciding = self
            .rules
            .iter()
            .filter_map(|rule| rule.best_match(kind, name).map(|m| (m, rule)))
            .fold(
                None,
                |best: Option<(Match, Vec<&Rule>)>, (m, rule)| match best {
                    Some((b, mut rules)) if b.rank == m.rank => {
                        rules.push(rule);
                        Some((b, rules))
                    }
                    Some((b, rules)) if b.rank > m.rank => Some((b, rules)),
                    _ => Some((m, vec![rule])),
                },
            );
        let what = kind.as_str();
        let Some((matched, rules)) = deciding else {
            return Err((
                Reason::NameNotAllowed,
                format!("no name policy rule covers {what} {name}"),
            ));
        };
        let granting: Vec<&&Rule> = rules.iter().filter(|r| r.grants(ns)).collect();
        if granting.is_empty() {
            return Err((
                Reason::NameNotAllowed,
                format!(
                    "name policy rule {:?} does not give {what} {name} to namespace {ns}",
                    matched.pattern
                ),
            ));
        }
        Ok(granting.iter().any(|r| r.takeover == Takeover::Allow))
    }
}

/// A rule's best match for one name: its rank (higher is more specific)
/// and the pattern as written, for messages.
#[derive(Clone, Debug)]
struct Match {
    rank: (u8, usize),
    pattern: String,
}

impl Rule {
    fn check(file: RuleFile) -> Result<Rule, String> {
        if file.hostnames.is_empty() && file.users.is_empty() {
            return Err("give hostnames or users".into());
        }
        let hostnames = file
            .hostnames
            .iter()
            .map(|h| Pattern::parse(h))
            .collect::<Result<_, _>>()?;
        let users = file
            .users
            .into_iter()
            .map(|u| user_prefix(&u))
            .collect::<Result<_, _>>()?;
        if file.namespaces.is_empty() {
            return Err("namespaces must list namespaces, or \"*\" for all".into());
        }
        let namespaces = if file.namespaces.iter().any(|n| n == "*") {
            None
        } else {
            for ns in &file.namespaces {
                if !is_namespace(ns) {
                    return Err(format!("{ns:?} is not a namespace name"));
                }
            }
            Some(file.namespaces)
        };
        Ok(Rule {
            hostnames,
            users,
            namespaces,
            takeover: file.takeover,
        })
    }

    fn best_match(&self, kind: NameKind, name: &str) -> Option<Match> {
        match kind {
            NameKind::Hostname => self
                .hostnames
                .iter()
                .filter_map(|p| p.rank(name).map(|rank| (rank, p)))
                .max_by_key(|(rank, _)| *rank)
                .map(|(rank, p)| Match {
                    rank,
                    pattern: p.to_string(),
                }),
            NameKind::User => self
                .users
                .iter()
                .filter(|prefix| name.starts_with(prefix.as_str()))
                .max_by_key(|prefix| prefix.len())
                .map(|prefix| Match {
                    rank: (1, prefix.len()),
                    pattern: if prefix.is_empty() {
                        "*".into()
                    } else {
                        format!("{prefix}*")
                    },
                }),
        }
    }

    fn grants(&self, ns: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == ns))
    }
}

impl Pattern {
    fn parse(raw: &str) -> Result<Pattern, String> {
        if raw == "*" {
            return Ok(Pattern::Any);
        }
        let host = crate::checks::hostname(raw).map_err(|(_, message)| message)?;
        Ok(match host.strip_prefix('*') {
            Some(suffix) => Pattern::Suffix(suffix.to_string()),
            None => Pattern::Exact(host),
        })
    }

    /// How specifically this pattern matches `host`, if it does.
    fn rank(&self, host: &str) -> Option<(u8, usize)> {
        match self {
            Pattern::Exact(exact) => (exact == host).then_some((3, exact.len())),
            Pattern::Suffix(suffix) => host.ends_with(suffix.as_str()).then_some((2, suffix.len())),
            Pattern::Any => Some((0, 0)),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(host) => f.write_str(host),
            Pattern::Suffix(suffix) => write!(f, "*{suffix}"),
            Pattern::Any => f.write_str("*"),
        }
    }
}

/// A user-name prefix: `*` (every user), or characters user names may hold
/// followed by an optional `*`.
fn user_prefix(raw: &str) -> Result<String, String> {
    let prefix = raw.strip_suffix('*').unwrap_or(raw);
    let valid = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
    if valid && prefix.len() <= 64 {
        Ok(prefix.to_string())
    } else {
        Err(format!(
            "{raw:?} is not a user-name prefix ({})",
            postern_api::user_name::RULE
        ))
    }
}

/// A DNS label, as Kubernetes namespace names are.
fn is_namespace(ns: &str) -> bool {
    (1..=63).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

#[cfg(test)]
mod tests;
