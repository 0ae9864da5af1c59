//! One kind's objects as the last watch delivered them, with relists.

use std::collections::BTreeMap;

use postern_api::ObjectKey;

/// Whether two values differ in what compilation reads (an object's status
/// or labels changing must not trigger a recompile).
pub trait SameInput {
    fn same_input(&self, other: &Self) -> bool;
}

/// The current objects of one kind, keyed by namespace/name.
///
/// A watch restart (`Init` .. `InitDone`) lists everything again; the listed
/// objects are buffered and swapped in whole at `InitDone`, so a half-done
/// relist never looks like a wave of deletions.
#[derive(Debug)]
pub struct Store<V> {
    items: BTreeMap<ObjectKey, V>,
    relist: Option<BTreeMap<ObjectKey, V>>,
    synced: bool,
}

impl<V> Default for Store<V> {
    fn default() -> Self {
        Store {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<V: SameInput> Store<V> {
    /// Adds or replaces an object; true when compilation input changed.
    pub fn apply(&mut self, key: ObjectKey, value: V) -> bool {
        let changed = self
            .items
            .get(&key)
            .is_none_or(|old| !old.same_input(&value));
        self.items.insert(key, value);
        changed
    }

    /// Removes an object; true when it was there.
    pub fn delete(&mut self, key: &ObjectKey) -> bool {
        self.items.remove(key).is_some()
    }

    /// A relist starts.
    pub fn restart(&mut self) {
        self.relist = Some(BTreeMap::new());
    }

    /// An object of the relist in progress.
    pub fn relisted(&mut self, key: ObjectKey, value: V) {
        self.relist
            .get_or_insert_with(BTreeMap::new)
            .insert(key, value);
    }

    /// The relist is complete: it replaces the contents. True when
    /// compilation input changed, or this is the first complete list.
    pub fn relist_done(&mut self) -> bool {
        let listed = self.relist.take().unwrap_or_default();
        let changed = !self.synced || !same_inputs(&self.items, &listed);
        self.items = listed;
        self.synced = true;
        changed
    }
}

impl<V> Store<V> {
    /// Whether a complete list has been seen.
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&V> {
        self.items.get(key)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.items.values()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &V)> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn same_inputs<V: SameInput>(a: &BTreeMap<ObjectKey, V>, b: &BTreeMap<ObjectKey, V>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && va.same_input(vb))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SameInput for (u32, &'static str) {
        /// The number is input; the text plays the part of status.
        fn same_input(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    #[test]
    fn apply_reports_only_input_changes() {
        let mut store = Store::default();
        assert!(store.apply(key("a"), (1, "x")));
        assert!(!store.apply(key("a"), (1, "y")), "status-only change");
        assert_eq!(store.get(&key("a")), Some(&(1, "y")), "status kept current");
        assert!(store.apply(key("a"), (2, "y")));
        assert!(store.delete(&key("a")));
        assert!(!store.delete(&key("a")));
    }

    #[test]
    fn relist_swaps_whole_and_reports_differences() {
        let mut store = Store::default();
        store.restart();
        store.relisted(key("a"), (1, ""));
        assert!(!store.synced());
        assert!(store.relist_done(), "first list always counts");
        assert!(store.synced());

        store.restart();
        store.relisted(key("a"), (1, "new status"));
        assert_eq!(store.len(), 1, "old contents stay until the relist is done");
        assert!(!store.relist_done(), "same input");

        store.restart();
        store.relisted(key("b"), (1, ""));
        assert!(store.relist_done(), "a vanished, b appeared");
        assert!(store.get(&key("a")).is_none());
        assert!(store.get(&key("b")).is_some());
    }
}
