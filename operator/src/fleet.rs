//! The data planes and what each has applied.
//!
//! [`Fleet`] holds the data planes connected to this replica: the push
//! server writes it, the admin API shows it. The status writer and the
//! ACME presenter read the whole fleet instead, [`FleetView`], which every
//! replica builds from the data planes' leases (see [`record`]): each
//! replica writes one Lease per data plane connected to it ([`leases`]),
//! every replica watches them all ([`view`]), and the leader computes
//! `Programmed` over every live one, whichever replica its data plane
//! talks to.
//!
//! The API server carries this state, not Redis: the operator has no Redis
//! (only the data planes use one, and not in every install), the API server
//! is already its source of truth and what leader election runs on, and a
//! lease outlives the replica that wrote it, so a new leader reads the same
//! acks the old one did. A plain mutex guards each small map and is never
//! held across an await.

mod coverage;
mod leases;
mod record;
mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use postern_snapshot::sync::TunnelAgents;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use self::coverage::Coverage;
pub use self::leases::LeaseWriter;
pub use self::view::{FleetView, ViewWatcher};
use crate::publish::Published;

/// The last snapshot a data plane refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub version: String,
    pub reason: String,
}

/// One connected data plane.
#[derive(Clone, Debug)]
pub struct Dataplane {
    pub id: String,
    pub addr: SocketAddr,
    /// Which connection this is: a reconnect under the same id replaces the
    /// entry, and the old connection's late updates are then ignored
    /// (0 for a data plane known from its lease).
    pub conn: u64,
    /// What the newest snapshot it acked holds.
    pub acked: Option<Arc<Coverage>>,
    /// Set by a nack, cleared by a later ack: the data plane is serving an
    /// older snapshot than the one it was sent.
    pub nack: Option<Nack>,
    /// Its tunnel agents, as last reported.
    pub agents: Vec<TunnelAgents>,
    /// The resource kinds it implements, from its hello.
    pub capabilities: Vec<String>,
}

/// Every connected data plane, by id.
#[derive(Debug)]
pub struct Fleet {
    dataplanes: Mutex<BTreeMap<String, Dataplane>>,
    next_conn: AtomicU64,
    /// Bumped on every change, to wake the status writer.
    changed: watch::Sender<u64>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            dataplanes: Mutex::default(),
            next_conn: AtomicU64::new(1),
            changed: watch::Sender::new(0),
        }
    }
}

impl Fleet {
    /// Registers a connection and what it implements; returns its number.
    pub fn connect(&self, id: &str, addr: SocketAddr, capabilities: Vec<String>) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let old = self.lock().insert(
            id.to_string(),
            Dataplane {
                id: id.to_string(),
                addr,
                conn,
                acked: None,
                nack: None,
                agents: Vec::new(),
                capabilities,
            },
        );
        if let Some(old) = old {
            tracing::warn!(dataplane = id, old = %old.addr, new = %addr, "data plane id reconnected; the newer connection counts");
        }
        self.bump();
        conn
    }

    pub fn acked(&self, id: &str, conn: u64, published: Arc<Published>) {
        self.update(id, conn, |dp| {
            dp.acked = Some(published.coverage.clone());
            dp.nack = None;
        });
    }

    pub fn agents(&self, id: &str, conn: u64, agents: Vec<TunnelAgents>) {
        self.update(id, conn, |dp| dp.agents = agents);
    }

    pub fn nacked(&self, id: &str, conn: u64, nack: Nack) {
        self.update(id, conn, |dp| dp.nack = Some(nack));
    }

    pub fn disconnect(&self, id: &str, conn: u64) {
        let removed = {
            let mut map = self.lock();
            let ours = map.get(id).is_some_and(|dp| dp.conn == conn);
            ours && map.remove(id).is_some()
        };
        if removed {
            self.bump();
        }
    }

    /// A copy of the current state.
    pub fn dataplanes(&self) -> Vec<Dataplane> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn update(&self, id: &str, conn: u64, f: impl FnOnce(&mut Dataplane)) {
        let updated = match self.lock().get_mut(id) {
            Some(dp) if dp.conn == conn => {
                f(dp);
                true
            }
            _ => false,
        };
        if updated {
            self.bump();
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Dataplane>> {
        self.dataplanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[test]
    fn a_reconnect_replaces_the_old_connection() {
        let fleet = Fleet::default();
        let changes = fleet.subscribe();
        let old = fleet.connect("dp", addr(), Vec::new());
        let new = fleet.connect("dp", addr(), Vec::new());
        assert_eq!(fleet.len(), 1);
        fleet.nacked(
            "dp",
            old,
            Nack {
                version: "v".into(),
                reason: "r".into(),
            },
        );
        assert_eq!(fleet.dataplanes()[0].nack, None, "stale connection ignored");
        fleet.disconnect("dp", old);
        assert_eq!(fleet.len(), 1, "old connection cannot remove the new one");
        fleet.nacked(
            "dp",
            new,
            Nack {
                version: "v".into(),
                reason: "r".into(),
            },
        );
        assert!(fleet.dataplanes()[0].nack.is_some());
        assert!(changes.has_changed().expect("open"));
        fleet.disconnect("dp", new);
        assert!(fleet.is_empty());
    }
}
