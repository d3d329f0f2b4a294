//! Process-level facts from Linux: the open-file limit, and this process's own CPU
//! time and peak memory (so a driver can show the load generator is not the
//! bottleneck).

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: `rl` is a valid rlimit struct; the kernel only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(rl.rlim_cur)
}

/// Asks the kernel to acknowledge received data at once on `socket` (Linux resets
/// this after a while, so it is re-armed after every frame).
pub fn quickack(socket: &impl std::os::fd::AsRawFd) {
    // A failure only means the hint was not applied.
    let _ = set_flag(socket, libc::IPPROTO_TCP, libc::TCP_QUICKACK);
}

/// Sets the boolean socket option `level`/`name` on `socket`.
pub fn set_flag(
    socket: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd (borrowed for the call) and a pointer to a
    // c_int that outlives the call, with its correct length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Clock ticks per second of the `utime`/`stime` fields (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in seconds, parsed from a `/proc/PID/stat` line.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    // The command name may contain spaces and parentheses: fields start after the
    // last ')'. Then state is field 3, utime 14 and stime 15 (1-based).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// This process's CPU time (user + system) in seconds.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_seconds_of(&s))
        .unwrap_or(0.0)
}

/// This process's peak resident memory (VmHWM) in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (my (odd) cmd) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let secs = cpu_seconds_of(line).unwrap();
        assert!((secs - 300.0 / clock_ticks()).abs() < 1e-9);
        assert!(cpu_seconds() >= 0.0);
        assert!(peak_rss_kib() > 0);
    }
}
