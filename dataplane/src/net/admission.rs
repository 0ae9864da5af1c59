//! Who may hold a connection open: one budget for every traffic listener
//! of the process (derived from the open-file limit, so descriptors never
//! run out and the admin listener keeps answering), a cap per listener and
//! a cap per client address. A connection is admitted by taking a
//! [`Permit`]; dropping it gives the place back. Refused connections are
//! closed at once, counted, and logged at most once per listener and
//! interval, however many arrive.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Descriptors kept out of the traffic budget: the admin listener, upstream
/// sockets, files, the sync stream. A quarter of the limit, at most this.
const MAX_RESERVE: u64 = 1024;
/// Refusals are logged at most once per listener per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a connection was refused (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every traffic listener together holds the process's budget.
    Budget,
    /// This listener holds `--max-connections`.
    Listener,
    /// This client address holds `--max-connections-per-client` here.
    Client,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Budget => "budget",
            Refused::Listener => "listener",
            Refused::Client => "client",
        }
    }
}

/// The caps of one listener; 0 means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub per_listener: usize,
    pub per_client: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: &'static str,
    reason: &'static str,
}

/// The process-wide side: the shared budget and the metrics of every
/// listener's admission.
pub struct Connections {
    budget: usize,
    open_total: AtomicUsize,
    open: Family<ListenerLabels, Gauge>,
    refused: Family<RefusedLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
}

impl Connections {
    /// A budget of `budget` traffic connections (0: unlimited).
    pub fn new(budget: usize) -> Arc<Connections> {
        Arc::new(Connections {
            budget,
            open_total: AtomicUsize::new(0),
            open: Family::default(),
            refused: Family::default(),
            accept_errors: Family::default(),
        })
    }

    /// The budget the open-file limit allows: the limit less a reserve for
    /// everything that is not a client connection.
    pub fn budget_for_fd_limit(limit: u64) -> usize {
        let reserve = (limit / 4).min(MAX_RESERVE);
        usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX)
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Client connections held open, by listener",
            self.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections closed on arrival because a cap was reached, by listener and cap",
            self.refused.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accept(2) calls (out of descriptors and the like), by listener",
            self.accept_errors.clone(),
        );
    }

    /// One descriptor more from the budget, for a socket a traffic
    /// connection opens beyond its own (a forward tunnel's upstream), so
    /// that long-lived tunnels, two descriptors each, cannot exhaust the
    /// process. `None` when the budget is spent (counted as a refusal of
    /// `listener`).
    pub fn extra(self: &Arc<Self>, listener: &'static str) -> Option<Slot> {
        let before = self.open_total.fetch_add(1, Ordering::AcqRel);
        if self.budget != 0 && before >= self.budget {
            self.open_total.fetch_sub(1, Ordering::AcqRel);
            self.refused
                .get_or_create(&RefusedLabels {
                    listener,
                    reason: Refused::Budget.as_str(),
                })
                .inc();
            return None;
        }
        Some(Slot(self.clone()))
    }

    /// The admission of one listener. `in_budget`: whether it draws on the
    /// shared budget (traffic listeners do, the admin listener does not).
    pub fn listener(
        self: &Arc<Self>,
        name: &'static str,
        caps: Caps,
        in_budget: bool,
    ) -> Admission {
        let labels = ListenerLabels { listener: name };
        Admission {
            inner: Arc::new(Inner {
                name,
                caps,
                in_budget,
                process: self.clone(),
                open: AtomicUsize::new(0),
                clients: Mutex::new(HashMap::new()),
                gauge: self.open.get_or_create(&labels).clone(),
                accept_errors: self.accept_errors.get_or_create(&labels).clone(),
                refusals: Mutex::new(Refusals::default()),
            }),
        }
    }
}

/// One listener's admission. Cloning shares it.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    caps: Caps,
    in_budget: bool,
    process: Arc<Connections>,
    open: AtomicUsize,
    clients: Mutex<HashMap<IpAddr, usize>>,
    gauge: Gauge,
    accept_errors: Counter,
    refusals: Mutex<Refusals>,
}

/// When a listener last logged a refusal, and how many it has not logged
/// since.
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    unlogged: u64,
}

/// A descriptor of the budget held by [`Connections::extra`]'s caller.
pub struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open_total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place held by one connection; dropping it gives the place back.
pub struct Permit {
    inner: Arc<Inner>,
    /// The client address counted against the per-client cap, if any.
    client: Option<IpAddr>,
}

impl Admission {
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// Takes a place for a connection from `client`. `count_client`:
    /// whether the per-client cap applies (not to a trusted PROXY protocol
    /// peer, whose one address carries many clients).
    pub fn admit(&self, client: IpAddr, count_client: bool) -> Result<Permit, Refused> {
        let inner = &self.inner;
        let result = inner.take(canonical(client), count_client);
        if let Err(reason) = result {
            inner
                .process
                .refused
                .get_or_create(&RefusedLabels {
                    listener: inner.name,
                    reason: reason.as_str(),
                })
                .inc();
            inner.log_refusal(reason);
        }
        result
    }

    /// Counts a failed `accept`.
    pub fn accept_failed(&self) {
        self.inner.accept_errors.inc();
    }

    /// Connections this listener holds now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn take(self: &Arc<Self>, client: IpAddr, count_client: bool) -> Result<Permit, Refused> {
        // Each step reserves, then checks, and undoes what it took on refusal:
        // concurrent accepts can never overshoot a cap together.
        let process = &self.process;
        if self.in_budget {
            let before = process.open_total.fetch_add(1, Ordering::AcqRel);
            if process.budget != 0 && before >= process.budget {
                process.open_total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::Budget);
            }
        }
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if self.caps.per_listener != 0 && before >= self.caps.per_listener {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.release_budget();
            return Err(Refused::Listener);
        }
        let counted = count_client && self.caps.per_client != 0;
        if counted {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            let held = clients.entry(client).or_insert(0);
            if *held >= self.caps.per_client {
                drop(clients);
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.release_budget();
                return Err(Refused::Client);
            }
            *held += 1;
        }
        self.gauge.inc();
        Ok(Permit {
            inner: self.clone(),
            client: counted.then_some(client),
        })
    }

    fn release_budget(&self) {
        if self.in_budget {
            self.process.open_total.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn log_refusal(&self, reason: Refused) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if refusals.logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            refusals.unlogged += 1;
            return;
        }
        refusals.logged = Some(Instant::now());
        let also = std::mem::take(&mut refusals.unlogged);
        drop(refusals);
        tracing::warn!(
            listener = self.name,
            reason = reason.as_str(),
            open = self.open.load(Ordering::Relaxed),
            refused_since_last_report = also,
            "refusing connections: a connection cap is reached"
        );
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let inner = &self.inner;
        if let Some(client) = self.client {
            let mut clients = inner.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = clients.get_mut(&client) {
                *held -= 1;
                if *held == 0 {
                    // The map holds only addresses with open connections.
                    clients.remove(&client);
                }
            }
        }
        inner.open.fetch_sub(1, Ordering::AcqRel);
        inner.release_budget();
        inner.gauge.dec();
    }
}

/// An IPv4 client seen through a dual-stack socket counts as itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn caps(per_listener: usize, per_client: usize) -> Caps {
        Caps {
            per_listener,
            per_client,
        }
    }

    #[test]
    fn the_per_client_cap_counts_each_address_apart() {
        let process = Connections::new(0);
        let http = process.listener("http", caps(0, 2), true);
        let a1 = http.admit(A, true).expect("first");
        let _a2 = http.admit(A, true).expect("second");
        assert_eq!(http.admit(A, true).err(), Some(Refused::Client));
        let _b = http.admit(B, true).expect("another client");
        // A trusted PROXY peer is not counted per address.
        let _t = http.admit(A, false).expect("trusted peer");
        drop(a1);
        let _a3 = http.admit(A, true).expect("a place was given back");
        assert_eq!(http.open(), 4);
    }

    #[test]
    fn the_budget_is_shared_and_the_admin_listener_is_outside_it() {
        let process = Connections::new(3);
        let http = process.listener("http", caps(0, 0), true);
        let proxy = process.listener("proxy", caps(0, 0), true);
        let admin = process.listener("admin", caps(2, 0), false);
        let held: Vec<Permit> = (0..2)
            .map(|_| http.admit(A, true).expect("http"))
            .chain([proxy.admit(B, true).expect("proxy")])
            .collect();
        assert_eq!(http.admit(A, true).err(), Some(Refused::Budget));
        assert_eq!(proxy.admit(B, true).err(), Some(Refused::Budget));
        let _admin = admin.admit(A, true).expect("admin answers at full budget");
        let _admin2 = admin.admit(A, true).expect("admin's second");
        assert_eq!(admin.admit(A, true).err(), Some(Refused::Listener));
        drop(held);
        assert_eq!(process.open_total.load(Ordering::Relaxed), 0);
        assert_eq!(http.open() + proxy.open(), 0);
    }

    #[test]
    fn extra_descriptors_draw_on_the_budget() {
        let process = Connections::new(2);
        let proxy = process.listener("proxy", caps(0, 0), true);
        let client = proxy.admit(A, true).expect("client");
        let upstream = process.extra("proxy").expect("its upstream");
        assert_eq!(proxy.admit(B, true).err(), Some(Refused::Budget));
        assert!(process.extra("proxy").is_none());
        drop((client, upstream));
        assert_eq!(process.open_total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn refusals_give_back_what_they_took() {
        let process = Connections::new(10);
        let http = process.listener("http", caps(1, 0), true);
        let _one = http.admit(A, true).expect("first");
        for _ in 0..5 {
            assert_eq!(http.admit(B, true).err(), Some(Refused::Listener));
        }
        assert_eq!(process.open_total.load(Ordering::Relaxed), 1);
        assert_eq!(http.open(), 1);
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let process = Connections::new(0);
        let http = process.listener("http", caps(0, 1), true);
        let _v4 = http.admit(A, true).expect("v4");
        let mapped = match A {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        assert_eq!(http.admit(mapped, true).err(), Some(Refused::Client));
    }

    #[test]
    fn the_budget_leaves_a_reserve() {
        assert_eq!(Connections::budget_for_fd_limit(20_000), 20_000 - 1024);
        assert_eq!(Connections::budget_for_fd_limit(256), 192);
        assert_eq!(Connections::budget_for_fd_limit(0), 0);
    }
}
