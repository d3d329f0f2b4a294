//! The process's open-file limit: every connection is a file descriptor.

/// Raises the soft limit to the hard one (at start-up, before any
/// connection); warns if the kernel refuses.
pub fn raise_to_hard_limit() {
    let Some(mut lim) = limit() else {
        return;
    };
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!("could not raise the open-file limit");
        }
    }
}

/// The soft limit now (the highest descriptor number is one below it), 1024
/// if it cannot be read.
pub fn soft_limit() -> u32 {
    limit().map_or(1024, |lim| u32::try_from(lim.rlim_cur).unwrap_or(u32::MAX))
}

fn limit() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let mut lim = super::limit().expect("readable");
        let hard = lim.rlim_max;
        // Start below the hard limit (lowering is always allowed; other
        // tests of this process open a few sockets at most).
        lim.rlim_cur = hard / 2;
        // SAFETY: setrlimit only reads the struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        assert!(u64::from(super::soft_limit()) < hard);
        super::raise_to_hard_limit();
        // (Linux keeps the hard limit within `fs.nr_open`: never unlimited.)
        assert_eq!(
            u64::from(super::soft_limit()),
            hard.min(u64::from(u32::MAX))
        );
    }
}
