//! Dashboard sessions: a random id in an HttpOnly, SameSite=Strict cookie,
//! and a CSRF token per session that every unsafe call made with the cookie
//! must echo in a header (a page on another origin can make the browser
//! send the cookie, but cannot read the token).
//!
//! A session remembers the digest of the token it was opened with and is
//! checked against the token files on every use: rotating a token ends the
//! sessions it opened. Sessions live in this process only (a restart logs
//! everyone out, which is acceptable for an admin console); they are capped
//! in number and age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::tokens::{Role, Tokens};

/// How long a dashboard login lasts, used or not.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Beyond this many open sessions the oldest is dropped.
const MAX_SESSIONS: usize = 1024;

#[derive(Clone)]
struct Session {
    credential: Credential,
    csrf: String,
    opened: Instant,
}

/// What a session was opened with, checked again on every use.
#[derive(Clone)]
enum Credential {
    /// A token: the session lasts while a token file still grants it.
    Token(String),
    /// A single sign-on: the role its allowlist gave at sign-in.
    SignedOn { role: Role },
}

/// A session found for a cookie.
#[derive(Clone, Debug)]
pub struct Found {
    pub role: Role,
    pub csrf: String,
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for a token already checked; returns (id, csrf).
    pub fn open(&self, token: &str) -> (String, String) {
        self.insert(Credential::Token(token.trim().to_string()))
    }

    /// Opens a session for a user signed on through the provider with
    /// `role`; `who` is for the log only.
    pub fn open_role(&self, role: Role, who: &str) -> (String, String) {
        tracing::debug!(%who, role = role.as_str(), "dashboard session opened");
        self.insert(Credential::SignedOn { role })
    }

    fn insert(&self, credential: Credential) -> (String, String) {
        let (id, csrf) = (random(), random());
        let mut open = self.lock();
        open.retain(|_, s| s.opened.elapsed() < SESSION_TTL);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            id.clone(),
            Session {
                credential,
                csrf: csrf.clone(),
                opened: Instant::now(),
            },
        );
        (id, csrf)
    }

    /// The live session `id` names, with the role its token still grants.
    pub fn find(&self, id: &str, tokens: &Tokens) -> Option<Found> {
        let session = {
            let mut open = self.lock();
            let session = open.get(id)?.clone();
            if session.opened.elapsed() >= SESSION_TTL {
                open.remove(id);
                return None;
            }
            session
        };
        let role = match &session.credential {
            Credential::Token(token) => tokens.role_of(token),
            Credential::SignedOn { role } => Some(*role),
        };
        let Some(role) = role else {
            // The token was rotated away: the session ends with it.
            self.close(id);
            return None;
        };
        Some(Found {
            role,
            csrf: session.csrf,
        })
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        match self.open.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Whether `presented` is the session's CSRF token, in constant time.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_carries_its_role_and_ends_with_its_token() {
        let sessions = Sessions::default();
        let tokens = Tokens::fixed(Some("adm"), Some("rd"));
        let (id, csrf) = sessions.open("rd");
        let found = sessions.find(&id, &tokens).expect("session");
        assert_eq!(found.role, Role::Read);
        assert_eq!(found.csrf, csrf);
        assert!(sessions.find("other", &tokens).is_none());

        let rotated = Tokens::fixed(Some("adm"), Some("rd2"));
        assert!(sessions.find(&id, &rotated).is_none());
        assert!(sessions.find(&id, &tokens).is_none(), "closed for good");
    }

    #[test]
    fn closed_sessions_are_gone_and_csrf_compares_exactly() {
        let sessions = Sessions::default();
        let tokens = Tokens::fixed(Some("adm"), None);
        let (id, csrf) = sessions.open("adm");
        assert!(csrf_matches(&csrf, &csrf));
        assert!(!csrf_matches(&csrf, &csrf[1..]));
        assert!(!csrf_matches(&csrf, ""));
        sessions.close(&id);
        assert!(sessions.find(&id, &tokens).is_none());
    }
}
