//! The tunnels of one snapshot, ready for the hot path: keys parsed once,
//! path prefixes longest first. Built on the apply thread, swapped whole.

use std::collections::HashMap;
use std::sync::Arc;

use postern_snapshot::{Snapshot, TunnelEntry, TunnelMode};

use super::auth::{AgentKey, AuthError, Claims};

/// One programmed tunnel.
pub struct Programmed {
    pub entry: TunnelEntry,
    key: Result<AgentKey, AuthError>,
}

impl Programmed {
    /// Whether `other` lets the same agent keep serving unchanged: same
    /// shape and key.
    pub fn same_as(&self, other: &TunnelEntry) -> bool {
        &self.entry == other
    }
}

/// Every tunnel of the snapshot in service.
#[derive(Default)]
pub struct Table {
    tunnels: HashMap<String, Arc<Programmed>>,
    /// `(prefix, tunnel id)`, longest prefix first.
    prefixes: Vec<(String, String)>,
    /// tcp tunnels: `(id, port)`, sorted.
    pub tcp: Vec<(String, u16)>,
}

impl Table {
    pub fn build(snapshot: &Snapshot) -> Table {
        let mut table = Table::default();
        for entry in &snapshot.tunnels {
            let key = AgentKey::parse(&entry.agent_key);
            if let Err(e) = &key {
                tracing::warn!(tunnel = %entry.id, error = %e, "tunnel key unusable; its agents are refused");
            }
            if let Some(prefix) = &entry.path_prefix {
                table.prefixes.push((prefix.clone(), entry.id.clone()));
            }
            if let (TunnelMode::Tcp, Some(port)) = (entry.mode, entry.tcp_port) {
                table.tcp.push((entry.id.clone(), port));
            }
            let programmed = Programmed {
                entry: entry.clone(),
                key,
            };
            table.tunnels.insert(entry.id.clone(), Arc::new(programmed));
        }
        table
            .prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        table.tcp.sort();
        table
    }

    /// Every programmed tunnel's id, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        let mut ids: Vec<&str> = self.tunnels.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids.into_iter()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Programmed>> {
        self.tunnels.get(id)
    }

    /// Checks an agent's token for tunnel `id`.
    pub fn verify(&self, token: &str, id: &str) -> Result<Claims, AuthError> {
        let programmed = self.tunnels.get(id).ok_or(AuthError::UnknownTunnel)?;
        match &programmed.key {
            Ok(key) => key.verify(token, id),
            Err(e) => Err(e.clone()),
        }
    }

    /// The tunnel owning `path` by prefix (whole segments: `/t/a` takes
    /// `/t/a` and `/t/a/x`, not `/t/ab`).
    pub fn by_prefix(&self, path: &str) -> Option<&Arc<Programmed>> {
        self.prefixes
            .iter()
            .find(|(p, _)| {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            })
            .and_then(|(_, id)| self.tunnels.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, prefix: &str) -> TunnelEntry {
        TunnelEntry {
            id: id.into(),
            mode: TunnelMode::Http,
            hostnames: vec![],
            path_prefix: Some(prefix.into()),
            tcp_port: None,
            agent_key: "0123456789abcdef0123".into(),
            strip_prefix: true,
            pool: false,
        }
    }

    #[test]
    fn prefixes_match_whole_segments_longest_first() {
        let snapshot = Snapshot {
            tunnels: vec![entry("ns/a", "/t/a"), entry("ns/deep", "/t/a/deep")],
            ..Snapshot::default()
        };
        let table = Table::build(&snapshot);
        let id = |p: &str| table.by_prefix(p).map(|t| t.entry.id.clone());
        assert_eq!(id("/t/a"), Some("ns/a".into()));
        assert_eq!(id("/t/a/x"), Some("ns/a".into()));
        assert_eq!(id("/t/a/deep/x"), Some("ns/deep".into()));
        assert_eq!(id("/t/ab"), None);
        assert_eq!(
            table.verify("x", "ns/none").map(|_| ()),
            Err(AuthError::UnknownTunnel)
        );
    }
}
