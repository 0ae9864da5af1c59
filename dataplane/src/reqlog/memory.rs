//! The in-memory store: a bounded ring of the newest records (one process
//! only), and the per-minute counts every store keeps locally.
//!
//! Only the writer task pushes; queries scan a copy of the matching
//! records' handles, so the lock is held for a scan, never across an await.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Minute;
use super::filter::Filter;
use super::record::Record;

/// The newest `capacity` records younger than `retention_ms`.
pub struct Ring {
    records: Mutex<VecDeque<Arc<Record>>>,
    capacity: usize,
    retention_ms: u64,
}

impl Ring {
    pub fn new(capacity: usize, retention_ms: u64) -> Ring {
        Ring {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(1 << 16))),
            capacity: capacity.max(1),
            retention_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Record>>> {
        // Records are only pushed and popped whole: a poisoned ring is consistent.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch, oldest first, dropping what falls out by size or age.
    pub fn push(&self, batch: &[Arc<Record>], now_ms: u64) {
        let mut ring = self.lock();
        for record in batch {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(record.clone());
        }
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        while ring.front().is_some_and(|r| r.time < cutoff) {
            ring.pop_front();
        }
    }

    /// The newest matching records first, at most `filter.limit`.
    pub fn query(&self, filter: &Filter, now_ms: u64) -> Vec<Record> {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        self.lock()
            .iter()
            .rev()
            .take_while(|r| r.time >= cutoff)
            .filter(|r| filter.matches(r))
            .take(filter.limit)
            .map(|r| Record::clone(r))
            .collect()
    }

    /// Distinct client addresses of `host` among the records held (exact).
    pub fn visitors(&self, host: &str, now_ms: u64) -> u64 {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let ring = self.lock();
        let clients: HashSet<_> = ring
            .iter()
            .filter(|r| r.time >= cutoff && r.host == host)
            .map(|r| r.client)
            .collect();
        clients.len() as u64
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Requests and errors for each of the last 60 minutes of this process.
pub struct Minutes {
    /// Slot `minute % 60`: (the minute it counts, total, errors).
    slots: Mutex<[(u64, u64, u64); 60]>,
}

impl Default for Minutes {
    fn default() -> Self {
        Minutes {
            slots: Mutex::new([(0, 0, 0); 60]),
        }
    }
}

impl Minutes {
    pub fn count(&self, record: &Record) {
        let minute = record.time / 60_000;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[(minute % 60) as usize];
        if minute < slot.0 {
            // Older than the hour the slot counts (a late record): gone.
            return;
        }
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u64::from(record.is_error());
    }

    /// The 60 minutes up to and including `now_ms`'s, oldest first.
    pub fn last_hour(&self, now_ms: u64) -> Vec<Minute> {
        let slots = *self.slots.lock().unwrap_or_else(|p| p.into_inner());
        hour_of(now_ms, |minute| {
            let slot = slots[(minute % 60) as usize];
            if slot.0 == minute {
                (slot.1, slot.2)
            } else {
                (0, 0)
            }
        })
    }
}

/// The 60 minutes up to `now_ms`'s, oldest first, counted by `counts`.
pub fn hour_of(now_ms: u64, mut counts: impl FnMut(u64) -> (u64, u64)) -> Vec<Minute> {
    let current = now_ms / 60_000;
    (current.saturating_sub(59)..=current)
        .map(|minute| {
            let (total, errors) = counts(minute);
            Minute {
                minute: minute * 60_000,
                total,
                errors,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::record;
    use super::*;

    fn batch(records: Vec<Record>) -> Vec<Arc<Record>> {
        records.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_by_size() {
        let ring = Ring::new(3, u64::MAX);
        let records = (1..=5)
            .map(|t| record(t, "a.test", "10.0.0.1", 200))
            .collect();
        ring.push(&batch(records), 5);
        assert_eq!(ring.len(), 3);
        let times: Vec<u64> = ring
            .query(&Filter::default(), 5)
            .iter()
            .map(|r| r.time)
            .collect();
        assert_eq!(times, [5, 4, 3]);
    }

    #[test]
    fn the_ring_forgets_by_age() {
        let ring = Ring::new(100, 1000);
        ring.push(&batch(vec![record(100, "a", "10.0.0.1", 200)]), 100);
        ring.push(&batch(vec![record(1500, "a", "10.0.0.1", 200)]), 1500);
        assert_eq!(ring.len(), 1);
        // Queries also skip what aged out since the last push.
        assert!(ring.query(&Filter::default(), 2600).is_empty());
    }

    #[test]
    fn queries_filter_and_limit_newest_first() {
        let ring = Ring::new(100, u64::MAX);
        let records = (0..10)
            .map(|t| {
                let host = if t % 2 == 0 { "even.test" } else { "odd.test" };
                record(t, host, "10.0.0.1", 200 + t as u16)
            })
            .collect();
        ring.push(&batch(records), 10);
        let filter = Filter {
            host: Some("even.test".into()),
            limit: 2,
            ..Filter::default()
        };
        let times: Vec<u64> = ring.query(&filter, 10).iter().map(|r| r.time).collect();
        assert_eq!(times, [8, 6]);
    }

    #[test]
    fn visitors_are_distinct_clients_of_the_host() {
        let ring = Ring::new(100, u64::MAX);
        let records = ["10.0.0.1", "10.0.0.2", "10.0.0.1", "::1"]
            .iter()
            .map(|ip| record(1, "a.test", ip, 200))
            .chain([record(1, "b.test", "10.0.0.9", 200)])
            .collect();
        ring.push(&batch(records), 1);
        assert_eq!(ring.visitors("a.test", 1), 3);
        assert_eq!(ring.visitors("b.test", 1), 1);
        assert_eq!(ring.visitors("c.test", 1), 0);
    }

    #[test]
    fn minutes_count_totals_and_errors_for_the_last_hour() {
        let minutes = Minutes::default();
        let hour = 3_600_000;
        for (time, status) in [
            (hour, 200),
            (hour + 1, 502),
            (hour + 60_000, 404),
            (1000, 500),
        ] {
            minutes.count(&record(time, "a", "10.0.0.1", status));
        }
        let last = minutes.last_hour(hour + 60_000);
        assert_eq!(last.len(), 60);
        assert_eq!(last[59].minute, hour + 60_000);
        assert_eq!((last[59].total, last[59].errors), (1, 0));
        assert_eq!((last[58].total, last[58].errors), (2, 1));
        // Minute 0 shares minute 60's slot, and came late: not counted.
        assert_eq!(last.iter().map(|m| m.total).sum::<u64>(), 3);
    }
}
