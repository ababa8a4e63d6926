//! Operating-system facts the connection-heavy modes need: our own open-file
//! limit, and a server's threads, open descriptors and TCP connections, all
//! read from `/proc` (Linux only, same machine).

use anyhow::Context;
use serde::Serialize;

/// Our open-file limit before and after raising it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NofileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every open long-poll is
/// one socket here, and the usual soft limit of 1024 would cap the test far
/// below the server's limits.
pub fn raise_nofile_limit() -> anyhow::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let soft_before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
    }
    Ok(NofileLimit {
        soft_before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// "Max open files" of another process as (soft, hard) text, from
/// `/proc/<pid>/limits`; "unlimited" stays text, so no parsing.
pub fn nofile_limit_of(pid: u32) -> anyhow::Result<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .context("no `Max open files` in /proc/<pid>/limits")?;
    let mut fields = line.split_whitespace();
    let soft = fields.next().unwrap_or("?").to_string();
    let hard = fields.next().unwrap_or("?").to_string();
    Ok((soft, hard))
}

/// Open file descriptors of `pid`: an accepted connection is one each, so
/// this counts connections the server has really taken off its listen queue.
pub fn open_fds(pid: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Thread count of `pid` (`Threads:` in `/proc/<pid>/status`).
pub fn threads(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .context("no `Threads:` in /proc/<pid>/status")
}

/// ESTABLISHED TCP connections whose local port is `port`, i.e. the server
/// ends of connections to a server listening there (IPv4 and IPv6). Counts
/// connections still in the listen queue too, hence also `open_fds`.
pub fn established_on_port(port: u16) -> anyhow::Result<u64> {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue; // no IPv6 in this kernel
        };
        n += count_established(&text, port);
    }
    Ok(n)
}

/// Lines look like `  0: 0100007F:1F90 0100007F:C350 01 ...`: local
/// address:port and remote address:port in hex, then the state (01 =
/// ESTABLISHED).
fn count_established(table: &str, port: u16) -> u64 {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut f = line.split_whitespace().skip(1);
            let local_port = f
                .next()
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let state = f.nth(1);
            local_port == Some(port) && state == Some("01")
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_established_server_ends() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
            1: 0100007F:1F90 0100007F:C350 01 00000000:00000000\n\
            2: 0100007F:C350 0100007F:1F90 01 00000000:00000000\n\
            3: 0100007F:1F90 0100007F:C351 06 00000000:00000000\n";
        // Only line 1: line 0 listens, line 2 is the client end, line 3 is TIME_WAIT.
        assert_eq!(count_established(table, 0x1F90), 1);
    }

    #[test]
    fn reads_own_limits() {
        let lim = raise_nofile_limit().unwrap();
        assert_eq!(lim.soft, lim.hard);
        assert!(open_fds(std::process::id()).unwrap() > 0);
        assert!(threads(std::process::id()).unwrap() >= 1);
        nofile_limit_of(std::process::id()).unwrap();
    }
}
