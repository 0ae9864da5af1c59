//! The process's open-file limit, raised at start-up from the soft to the
//! hard limit: every connection and every relay holds descriptors, and a
//! distribution's default soft limit (often 1024) runs out long before the
//! machine does.

/// Raises the soft `RLIMIT_NOFILE` to the hard one. Returns (before,
/// after), or `None` where the limit cannot be read or changed.
#[cfg(target_os = "linux")]
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current?;
    let Some(hard) = limit.maximum else {
        return Some((before, before));
    };
    if before >= hard {
        return Some((before, before));
    }
    let raised = rustix::process::Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    setrlimit(Resource::Nofile, raised).ok()?;
    Some((
        before,
        getrlimit(Resource::Nofile).current.unwrap_or(before),
    ))
}

#[cfg(not(target_os = "linux"))]
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    None
}

/// The soft `RLIMIT_NOFILE` now (`None`: unknown or unlimited).
#[cfg(target_os = "linux")]
pub fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(target_os = "linux"))]
pub fn fd_limit() -> Option<u64> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use rustix::process::{Resource, getrlimit};

    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let hard = getrlimit(Resource::Nofile).maximum;
        let (before, after) = raise_fd_limit().expect("readable limit");
        assert!(after >= before);
        if let Some(hard) = hard {
            assert_eq!(after, hard);
        }
        assert_eq!(getrlimit(Resource::Nofile).current, Some(after));
    }
}
