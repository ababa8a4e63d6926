//! Percentiles over a sorted vector, and reading a process's CPU time and
//! memory from `/proc`.
//!
//! A run produces at most a few million samples, so keeping every sample and
//! sorting once is simpler and exact, where a histogram would be approximate.

use serde::Serialize;

/// Summary of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises samples given in microseconds; the result is in milliseconds.
    pub fn from_micros(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let sum: u128 = samples.iter().map(|&s| s as u128).sum();
        Self {
            count: samples.len(),
            mean: sum as f64 / samples.len() as f64 / 1000.0,
            p50: ms(percentile(&samples, 50.0)),
            p95: ms(percentile(&samples, 95.0)),
            p99: ms(percentile(&samples, 99.0)),
            p999: ms(percentile(&samples, 99.9)),
            max: ms(*samples.last().unwrap()),
        }
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest
/// sample such that at least `p` percent of the samples are <= it. Unlike
/// interpolation it always returns a value that was really observed.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// User plus system CPU time so far, in seconds.
    pub cpu_s: f64,
    /// Resident set size now, in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// Linux reports `utime`/`stime` in clock ticks of `USER_HZ`, which is 100 on
/// every mainstream configuration; reading it properly would need libc's
/// `sysconf` just for this constant.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` may be "self").
pub fn sample_process(pid: &str) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces, so
    // count fields from the last ')': after it come field 3 (state), ...,
    // field 14 (utime) at index 11 and field 15 (stime) at index 12.
    let after_comm = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("malformed /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    let cpu_s = (ticks(11)? + ticks(12)?) as f64 / CLOCK_TICKS_PER_SEC;

    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_s,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS, by writing
/// "5" to `/proc/<pid>/clear_refs` (Linux 4.0+, same user or root). Without
/// it the peak would include setup, where the server's password hashing for
/// registrations usually uses more memory than the load itself.
pub fn reset_peak_rss(pid: &str) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU seconds the whole machine has spent busy (all cores, everything but
/// idle and iowait), from the first line of `/proc/stat`. Compared with the
/// server's and our own CPU it shows how much other processes ran meanwhile,
/// which on a small machine skews every figure.
pub fn machine_busy_cpu_s() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty /proc/stat"))?;
    // cpu user nice system idle iowait irq softirq steal ...
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(ticks.len() == 8, "short /proc/stat");
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
    Ok(busy as f64 / CLOCK_TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn summary_is_in_milliseconds() {
        let s = Summary::from_micros(vec![3000, 1000, 2000]);
        assert_eq!(s.count, 3);
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.max, 3.0);
        assert_eq!(s.mean, 2.0);
        assert_eq!(Summary::from_micros(vec![]).count, 0);
    }

    #[test]
    fn reads_own_process() {
        let s = sample_process("self").unwrap();
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib);
        assert!(machine_busy_cpu_s().unwrap() > 0.0);
    }
}
