//! The agent's one-line status on stderr, printed when it changes:
//! `connected`, `reconnecting (attempt n, next try in s)`, `refused
//! (reason)`, `draining`. The log (text or JSON) carries the detail.

use std::time::Duration;

use crate::tunnel::protocol::Welcome;

pub struct Status {
    server: String,
}

impl Status {
    pub fn new(server: &str) -> Status {
        Status {
            server: server.to_string(),
        }
    }

    fn say(&self, line: &str) {
        eprintln!("postern agent: {line}");
    }

    pub fn connected(&self, welcome: &Welcome) {
        let tunnels: Vec<String> = welcome
            .accepted
            .iter()
            .map(|a| {
                let role = if a.active { "active" } else { "standby" };
                format!("{} ({}, {role})", a.tunnel, a.mode)
            })
            .collect();
        let mut line = format!(
            "connected to {} as session {}: {}",
            self.server,
            welcome.session,
            tunnels.join(", ")
        );
        if !welcome.refused.is_empty() {
            let refused: Vec<String> = welcome
                .refused
                .iter()
                .map(|r| format!("{}: {}", r.tunnel, r.reason))
                .collect();
            line.push_str(&format!("; refused ({})", refused.join(", ")));
        }
        self.say(&line);
        tracing::info!(server = %self.server, session = %welcome.session, "connected");
    }

    pub fn reconnecting(&self, attempt: u32, delay: Duration, why: &str) {
        self.say(&format!(
            "reconnecting (attempt {attempt}, next try in {:.1}s): {why}",
            delay.as_secs_f64()
        ));
    }

    pub fn refused(&self, why: &str, delay: Duration) {
        self.say(&format!(
            "refused ({why}); next try in {:.1}s",
            delay.as_secs_f64()
        ));
        tracing::warn!(server = %self.server, reason = %why, "refused");
    }

    pub fn draining(&self, limit: Duration) {
        self.say(&format!(
            "draining (in-flight streams get {}s)",
            limit.as_secs()
        ));
    }
}
