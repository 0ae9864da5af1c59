//! Live agent sessions by tunnel. One session is active per tunnel: the
//! oldest that is neither draining nor closed; the others stand by, in the
//! order they connected, and the next one takes over the moment the active
//! one goes (no timer: the registry is asked per stream). Every change
//! bumps a counter that the tcp listeners watch.
//!
//! The lock is a plain mutex, never held across an await.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use hyper::client::conn::http2::SendRequest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::table::Table;
use crate::reverse::ProxyBody;

/// One connected agent.
pub struct Session {
    pub id: String,
    pub remote: SocketAddr,
    pub agent_version: String,
    /// The token's id (the token itself is kept only to re-check it).
    pub jti: String,
    token: String,
    /// Taken out (dropped) to close the connection gracefully: hyper's h2
    /// client ends it once no handle is left and the streams are done.
    sender: Mutex<Option<SendRequest<ProxyBody>>>,
    /// The tunnels this session holds (active or standby).
    tunnels: Mutex<Vec<String>>,
    draining: AtomicBool,
    /// Cancelled to close the connection (key rotated, tunnel deleted).
    pub cut: CancellationToken,
    /// Cancelled by [`Session::close`].
    pub closing: CancellationToken,
    pub connected: Instant,
    /// `connected` on the wall clock, for the shared registry's ordering.
    pub since: SystemTime,
    /// The serving thread (1..) its connection runs on, 0 for none: the
    /// public connections of its tcp tunnels are served there too, so a
    /// stream's bytes never cross threads between client and agent.
    pub home: usize,
}

impl Session {
    pub fn new(
        id: String,
        remote: SocketAddr,
        agent_version: String,
        (token, jti): (String, String),
        sender: SendRequest<ProxyBody>,
    ) -> Session {
        Session {
            id,
            remote,
            agent_version,
            jti,
            token,
            sender: Mutex::new(Some(sender)),
            tunnels: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            cut: CancellationToken::new(),
            closing: CancellationToken::new(),
            connected: Instant::now(),
            since: SystemTime::now(),
            home: crate::net::Cores::home(),
        }
    }

    fn usable(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.sender().is_some_and(|s| !s.is_closed())
    }

    /// A handle to open streams on, unless the session is closing.
    pub fn sender(&self) -> Option<SendRequest<ProxyBody>> {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        sender.clone()
    }

    /// Drops this session's own handle: no new streams, and the
    /// connection ends once the open ones have.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.closing.cancel();
    }

    pub fn tunnels(&self) -> Vec<String> {
        self.tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Every live session, by tunnel id.
pub struct Registry {
    by_tunnel: Mutex<HashMap<String, Vec<Arc<Session>>>>,
    changed: watch::Sender<u64>,
    /// Turns the pool's round robin.
    turn: AtomicUsize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            by_tunnel: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            turn: AtomicUsize::new(0),
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Session>>>> {
        self.by_tunnel.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Adds `session` for `tunnels`; says for each whether it is the active one.
    pub fn attach(&self, session: &Arc<Session>, tunnels: &[String]) -> Vec<bool> {
        let mut map = self.lock();
        let active = tunnels
            .iter()
            .map(|t| {
                let list = map.entry(t.clone()).or_default();
                let first = !list.iter().any(|s| s.usable());
                list.push(session.clone());
                first
            })
            .collect();
        drop(map);
        *session.tunnels.lock().unwrap_or_else(|p| p.into_inner()) = tunnels.to_vec();
        self.bump();
        active
    }

    /// Removes `session` everywhere.
    pub fn detach(&self, session: &Session) {
        let mut map = self.lock();
        map.retain(|_, list| {
            list.retain(|s| s.id != session.id);
            !list.is_empty()
        });
        drop(map);
        self.bump();
    }

    /// No new streams go to `session`; the standby (if any) takes over.
    pub fn drain(&self, session: &Session) {
        session.draining.store(true, Ordering::Relaxed);
        self.bump();
    }

    /// The session that takes new streams of `tunnel`.
    pub fn active(&self, tunnel: &str) -> Option<Arc<Session>> {
        let map = self.lock();
        map.get(tunnel)?.iter().find(|s| s.usable()).cloned()
    }

    /// The session for the next stream of `tunnel`: the active one, or in
    /// a pool (`spec.pool`) each usable session in turn, so a session that
    /// fails its heartbeat or drains drops out and the others carry on.
    pub fn pick(&self, tunnel: &str, pool: bool) -> Option<Arc<Session>> {
        if !pool {
            return self.active(tunnel);
        }
        let map = self.lock();
        let usable: Vec<&Arc<Session>> = map.get(tunnel)?.iter().filter(|s| s.usable()).collect();
        if usable.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some(usable[turn % usable.len()].clone())
    }

    /// When the oldest usable session of `tunnel` connected.
    pub fn since(&self, tunnel: &str) -> Option<SystemTime> {
        let map = self.lock();
        map.get(tunnel)?
            .iter()
            .filter(|s| s.usable())
            .map(|s| s.since)
            .min()
    }

    /// Wakes whoever watches liveness (the shared registry changed).
    pub fn notify(&self) {
        self.bump();
    }

    /// Every session of `tunnel` in connection order, and whether it is
    /// the one taking new streams (the admin API's view).
    pub fn sessions(&self, tunnel: &str) -> Vec<(Arc<Session>, bool)> {
        let map = self.lock();
        let Some(list) = map.get(tunnel) else {
            return Vec::new();
        };
        let active = list.iter().find(|s| s.usable()).map(|s| s.id.clone());
        list.iter()
            .map(|s| (s.clone(), Some(&s.id) == active.as_ref()))
            .collect()
    }

    /// Live sessions of `tunnel` (active and standby).
    pub fn count(&self, tunnel: &str) -> usize {
        let map = self.lock();
        map.get(tunnel)
            .map_or(0, |l| l.iter().filter(|s| s.usable()).count())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// After a snapshot: every session keeps the tunnels its token still
    /// opens under the new keys; a session left with none is cut.
    pub fn revalidate(&self, table: &Table) -> Vec<(String, String, &'static str)> {
        let mut cut = Vec::new();
        let mut map = self.lock();
        for (tunnel, list) in map.iter_mut() {
            list.retain(|s| match table.verify(&s.token, tunnel) {
                Ok(_) => true,
                Err(e) => {
                    cut.push((s.clone(), tunnel.clone(), e.reason()));
                    false
                }
            });
        }
        map.retain(|_, list| !list.is_empty());
        drop(map);
        let mut report = Vec::new();
        for (session, tunnel, reason) in cut {
            let mut held = session.tunnels.lock().unwrap_or_else(|p| p.into_inner());
            held.retain(|t| t != &tunnel);
            if held.is_empty() {
                session.cut.cancel();
            }
            report.push((session.id.clone(), tunnel, reason));
        }
        if !report.is_empty() {
            self.bump();
        }
        report
    }
}
