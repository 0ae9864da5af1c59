//! The live user table and every open connection, per user.
//!
//! Each user with open connections has one slot: the revision its
//! connections were admitted under, a count, and a cancellation token every
//! connection of the slot watches. Applying a snapshot that changes a user's
//! revision, or removes the user, cancels and drops the slot, which cuts
//! those connections and no one else's; the next connection opens a fresh
//! slot. A slot is removed when its last connection closes, so the registry
//! holds nothing for idle users.
//!
//! The table swap and the cut happen under the slot lock, and admission
//! checks the revision under the same lock: a connection authenticated
//! against the old table cannot slip in after the cut (it gets
//! [`OpenError::Stale`] and authenticates again). The lock is never held
//! across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::table::{Table, UserEntry};

type Slots = Arc<Mutex<HashMap<String, Arc<Slot>>>>;

/// The table in service and the open connections.
#[derive(Default)]
pub struct Registry {
    table: ArcSwap<Table>,
    slots: Slots,
}

struct Slot {
    revision: String,
    cut: CancellationToken,
    /// Changed only under the slots lock.
    open: std::sync::atomic::AtomicU32,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The user changed since it authenticated: authenticate again.
    Stale,
    /// The user holds `maxConnections` connections already.
    Limit(u32),
}

/// One admitted connection. Dropping it releases the slot.
pub struct Lease {
    slots: Slots,
    user: String,
    slot: Arc<Slot>,
    active: Gauge,
}

impl Registry {
    /// The table in service: lock-free, for authentication.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Swaps the table in and cuts the connections of users whose revision
    /// changed or who are gone. Returns the users cut.
    pub fn apply(&self, table: Table) -> Vec<String> {
        let mut slots = lock(&self.slots);
        let table = Arc::new(table);
        self.table.store(table.clone());
        let mut cut = Vec::new();
        slots.retain(|user, slot| {
            let keep = table.get(user).is_some_and(|u| u.revision == slot.revision);
            if !keep {
                slot.cut.cancel();
                cut.push(user.clone());
            }
            keep
        });
        cut
    }

    /// Admits one connection of `user` if its revision is current and its
    /// limit allows. `active` is the user's gauge, held up while leased.
    pub fn open(&self, user: &UserEntry, active: Gauge) -> Result<Lease, OpenError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut slots = lock(&self.slots);
        let current = self.table.load();
        if current
            .get(&user.user)
            .is_none_or(|u| u.revision != user.revision)
        {
            return Err(OpenError::Stale);
        }
        let slot = slots.entry(user.user.clone()).or_insert_with(|| {
            Arc::new(Slot {
                revision: user.revision.clone(),
                cut: CancellationToken::new(),
                open: 0.into(),
            })
        });
        let open = slot.open.load(Relaxed);
        if let Some(max) = user.max_connections
            && open >= max
        {
            return Err(OpenError::Limit(max));
        }
        slot.open.store(open + 1, Relaxed);
        active.inc();
        Ok(Lease {
            slots: self.slots.clone(),
            user: user.user.clone(),
            slot: slot.clone(),
            active,
        })
    }

    /// Open connections of `user` under its current revision.
    pub fn open_count(&self, user: &str) -> u32 {
        lock(&self.slots)
            .get(user)
            .map_or(0, |s| s.open.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Cuts every open connection of `user` (the admin API's action) and
    /// returns how many there were. The user's next connection opens a
    /// fresh slot; the cut ones' leases find theirs gone and leave it be.
    pub fn cut_user(&self, user: &str) -> u32 {
        let Some(slot) = lock(&self.slots).remove(user) else {
            return 0;
        };
        // Counted before the cut: the cut connections, on other threads,
        // drop their leases (and the count) as soon as it lands.
        let open = slot.open.load(std::sync::atomic::Ordering::Relaxed);
        slot.cut.cancel();
        open
    }

    /// Users with at least one open connection.
    pub fn slot_count(&self) -> usize {
        lock(&self.slots).len()
    }
}

impl Lease {
    /// Cancelled when this user's connections must close.
    pub fn cut(&self) -> &CancellationToken {
        &self.slot.cut
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.active.dec();
        let mut slots = lock(&self.slots);
        let open = self.slot.open.load(Relaxed).saturating_sub(1);
        self.slot.open.store(open, Relaxed);
        if open == 0
            && slots
                .get(&self.user)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            slots.remove(&self.user);
        }
    }
}

fn lock(slots: &Mutex<HashMap<String, Arc<Slot>>>) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
    // Every critical section leaves the map consistent, even on a panic.
    slots.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_snapshot::{DestinationRules, PasswordHash, ProxyUser, Snapshot, Upstream};

    fn user(name: &str, revision: &str, max: Option<u32>) -> ProxyUser {
        ProxyUser {
            id: format!("default/{name}"),
            user: name.into(),
            password: PasswordHash::new("s", b"pw"),
            upstream: Upstream::Direct,
            destinations: DestinationRules::default(),
            allow_internal_networks: Vec::new(),
            max_connections: max,
            revision: revision.into(),
        }
    }

    fn table(users: Vec<ProxyUser>) -> Table {
        Table::build(&Snapshot {
            users,
            ..Snapshot::default()
        })
    }

    #[test]
    fn a_revision_change_cuts_only_that_user() {
        let reg = Registry::default();
        reg.apply(table(vec![
            user("alice", "1", None),
            user("bob", "1", None),
        ]));
        let t = reg.table();
        let (alice, bob) = (t.get("alice").expect("a"), t.get("bob").expect("b"));
        let a = reg.open(alice, Gauge::default()).expect("open");
        let b = reg.open(bob, Gauge::default()).expect("open");
        let cut = reg.apply(table(vec![
            user("alice", "2", None),
            user("bob", "1", None),
        ]));
        assert_eq!(cut, ["alice"]);
        assert!(a.cut().is_cancelled());
        assert!(!b.cut().is_cancelled());
        // The old entry is stale; the new one opens a fresh slot.
        assert_eq!(
            reg.open(alice, Gauge::default()).err(),
            Some(OpenError::Stale)
        );
        let fresh = reg.table().get("alice").expect("a").clone();
        let a2 = reg.open(&fresh, Gauge::default()).expect("open");
        assert!(!a2.cut().is_cancelled());
        drop(a);
        assert_eq!(
            reg.open_count("alice"),
            1,
            "the old lease does not touch the new slot"
        );
        drop((a2, b));
        assert_eq!(reg.slot_count(), 0);
    }

    #[test]
    fn removal_cuts_and_limits_hold() {
        let reg = Registry::default();
        reg.apply(table(vec![user("alice", "1", Some(2))]));
        let alice = reg.table().get("alice").expect("a").clone();
        let gauge = Gauge::default();
        let l1 = reg.open(&alice, gauge.clone()).expect("1");
        let l2 = reg.open(&alice, gauge.clone()).expect("2");
        assert_eq!(
            reg.open(&alice, gauge.clone()).err(),
            Some(OpenError::Limit(2))
        );
        assert_eq!(gauge.get(), 2);
        drop(l2);
        let l3 = reg.open(&alice, gauge.clone()).expect("room again");
        assert_eq!(reg.apply(table(vec![])), ["alice"]);
        assert!(l1.cut().is_cancelled() && l3.cut().is_cancelled());
        drop((l1, l3));
        assert_eq!(gauge.get(), 0);
        assert_eq!(reg.slot_count(), 0);
    }

    #[test]
    fn no_leak_after_many_connections() {
        let reg = Registry::default();
        reg.apply(table(vec![user("alice", "1", None)]));
        let alice = reg.table().get("alice").expect("a").clone();
        let leases: Vec<_> = (0..1000)
            .map(|_| reg.open(&alice, Gauge::default()).expect("open"))
            .collect();
        assert_eq!(reg.open_count("alice"), 1000);
        drop(leases);
        assert_eq!(reg.slot_count(), 0);
    }
}
