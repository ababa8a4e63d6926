//! Report pieces shared by the modes that send messages (the default load
//! and fan-out), and the sampling of server, bench and machine CPU around a
//! measured phase. Field names are the contract with scripts and tests.

use std::time::Instant;

use serde::Serialize;

use crate::load::LoadResult;
use crate::stats::{machine_busy_cpu_s, reset_peak_rss, sample_process, ProcSample, Summary};

#[derive(Serialize)]
pub struct SendReport {
    pub attempted: u64,
    pub acked: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub acks_per_sec: f64,
    pub rtt_ms: Summary,
}

#[derive(Serialize)]
pub struct DeliveryReport {
    /// (message, recipient) pairs that should have arrived.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub drain_s: f64,
    pub latency_ms: Summary,
    /// The same per recipient's server (from their user id): with users on
    /// two federating servers, one entry per direction.
    pub by_recipient_server: Vec<ServerLatency>,
}

#[derive(Serialize)]
pub struct ServerLatency {
    pub server: String,
    pub latency_ms: Summary,
}

#[derive(Serialize)]
pub struct SyncReport {
    pub requests: u64,
    pub errors: u64,
    pub limited_timelines: u64,
}

#[derive(Serialize)]
pub struct ProcReport {
    pub pid: u32,
    pub cpu_s: f64,
    /// CPU seconds per wall-clock second of the load phase (1.0 = one core busy).
    pub cores_busy: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Peak RSS (VmHWM) during the load phase, when resetting it at the start
    /// worked (`peak_rss_scope` = "load"); else the peak since the server
    /// started (`peak_rss_scope` = "process lifetime").
    pub peak_rss_kib: u64,
    pub peak_rss_scope: &'static str,
    /// VmHWM at the start of the load: the peak during setup and before.
    pub peak_rss_before_kib: u64,
}

/// A `LoadResult` cut into report sections.
pub struct LoadParts {
    pub sends: SendReport,
    pub delivery: DeliveryReport,
    pub sync: SyncReport,
    /// Per message that reached every recipient, in microseconds.
    pub all_recipients_us: Vec<u64>,
    pub errors: Vec<String>,
    pub lost_sample: Vec<String>,
}

impl LoadParts {
    pub fn new(r: LoadResult) -> Self {
        let elapsed_s = r.send_elapsed.as_secs_f64();
        let received = r.delivery_us.len() as u64;
        Self {
            sends: SendReport {
                attempted: r.attempted,
                acked: r.acked,
                errors: r.send_errors,
                elapsed_s,
                acks_per_sec: r.acked as f64 / elapsed_s,
                rtt_ms: Summary::from_micros(r.send_rtt_us),
            },
            delivery: DeliveryReport {
                expected: r.expected_deliveries,
                received,
                lost: r.lost,
                duplicated: r.duplicated,
                drain_s: r.drain_elapsed.as_secs_f64(),
                latency_ms: Summary::from_micros(r.delivery_us),
                by_recipient_server: r
                    .delivery_by_server
                    .into_iter()
                    .map(|(server, samples)| ServerLatency {
                        server,
                        latency_ms: Summary::from_micros(samples),
                    })
                    .collect(),
            },
            sync: SyncReport {
                requests: r.sync_requests,
                errors: r.sync_errors,
                limited_timelines: r.sync_limited,
            },
            all_recipients_us: r.all_recipients_us,
            errors: r.error_sample,
            lost_sample: r.lost_sample,
        }
    }

    /// Every send acknowledged, every delivery made exactly once, no errors.
    pub fn ok(&self) -> bool {
        self.sends.acked > 0
            && self.sends.errors == 0
            && self.sync.errors == 0
            && self.delivery.lost == 0
            && self.delivery.duplicated == 0
    }
}

/// CPU and memory use over one measured phase.
pub struct PhaseUsage {
    pub server: Option<ProcReport>,
    /// This tool's own CPU: it shares the machine.
    pub bench_cpu_s: f64,
    /// Machine busy time minus server and bench (needs the server's pid).
    pub other_cpu_s: Option<f64>,
}

/// Samples taken at the start of a measured phase. Setup (registration's
/// password hashing above all) is left out by starting it after setup.
pub struct PhaseSampler {
    server_pid: Option<u32>,
    server_before: Option<ProcSample>,
    peak_reset: bool,
    self_before: ProcSample,
    machine_before: f64,
    start: Instant,
}

impl PhaseSampler {
    pub fn start(server_pid: Option<u32>) -> anyhow::Result<Self> {
        let pid = server_pid.map(|p| p.to_string());
        let server_before = pid.as_deref().map(sample_process).transpose()?;
        let peak_reset = pid.as_deref().is_some_and(reset_peak_rss);
        Ok(Self {
            server_pid,
            server_before,
            peak_reset,
            self_before: sample_process("self")?,
            machine_before: machine_busy_cpu_s()?,
            start: Instant::now(),
        })
    }

    pub fn finish(self) -> anyhow::Result<PhaseUsage> {
        let wall_s = self.start.elapsed().as_secs_f64();
        let self_after = sample_process("self")?;
        let machine_after = machine_busy_cpu_s()?;
        let server_after = self
            .server_pid
            .map(|p| sample_process(&p.to_string()))
            .transpose()?;
        let bench_cpu_s = self_after.cpu_s - self.self_before.cpu_s;
        let server = match (self.server_pid, self.server_before, server_after) {
            (Some(pid), Some(before), Some(after)) => {
                Some(proc_report(pid, before, after, wall_s, self.peak_reset))
            }
            _ => None,
        };
        let other_cpu_s = server
            .as_ref()
            .map(|s| (machine_after - self.machine_before - s.cpu_s - bench_cpu_s).max(0.0));
        Ok(PhaseUsage {
            server,
            bench_cpu_s,
            other_cpu_s,
        })
    }
}

fn proc_report(
    pid: u32,
    before: ProcSample,
    after: ProcSample,
    wall_s: f64,
    peak_reset: bool,
) -> ProcReport {
    let cpu_s = after.cpu_s - before.cpu_s;
    ProcReport {
        pid,
        cpu_s,
        cores_busy: cpu_s / wall_s,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        peak_rss_kib: after.peak_rss_kib,
        peak_rss_scope: if peak_reset {
            "load"
        } else {
            "process lifetime"
        },
        peak_rss_before_kib: before.peak_rss_kib,
    }
}

/// The summary lines about the server and other processes, as the default
/// mode prints them; `phase_s` is the measured phase's nominal length.
pub fn print_usage(
    server: Option<&ProcReport>,
    bench_cpu_s: f64,
    other_cpu_s: Option<f64>,
    phase_s: f64,
) {
    if let Some(p) = server {
        println!(
            "server:   pid {}, {:.2} CPU s ({:.2} cores busy), RSS {:.1} -> {:.1} MiB, peak {:.1} MiB ({}; {:.1} MiB before the load)",
            p.pid,
            p.cpu_s,
            p.cores_busy,
            p.rss_before_kib as f64 / 1024.0,
            p.rss_after_kib as f64 / 1024.0,
            p.peak_rss_kib as f64 / 1024.0,
            p.peak_rss_scope,
            p.peak_rss_before_kib as f64 / 1024.0,
        );
    }
    print!("bench:    {bench_cpu_s:.2} CPU s");
    match other_cpu_s {
        Some(other) => println!("; other processes on this machine: {other:.2} CPU s"),
        None => println!(),
    }
    if other_cpu_s.is_some_and(|o| o > 0.1 * phase_s) {
        println!("warning:  other processes competed for the CPU; figures are not clean");
    }
}

/// The sends, delivery and sync lines of a summary.
pub fn print_traffic(s: &SendReport, d: &DeliveryReport, sync: &SyncReport) {
    println!(
        "sends:    {} acked of {} attempted, {} errors, {:.1} acks/s over {:.2} s",
        s.acked, s.attempted, s.errors, s.acks_per_sec, s.elapsed_s
    );
    println!(
        "send rtt: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.rtt_ms.p50, s.rtt_ms.p99, s.rtt_ms.max
    );
    println!(
        "delivery: {} of {} (message, recipient) pairs; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; drained in {:.2} s",
        d.received, d.expected, d.latency_ms.p50, d.latency_ms.p99, d.latency_ms.p999, d.latency_ms.max, d.drain_s
    );
    if d.by_recipient_server.len() > 1 {
        for to in &d.by_recipient_server {
            let l = &to.latency_ms;
            println!(
                "  to {}: {} pairs; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                to.server, l.count, l.p50, l.p99, l.max
            );
        }
    }
    println!(
        "sync:     {} long-polls, {} errors, {} limited timelines",
        sync.requests, sync.errors, sync.limited_timelines
    );
}

/// Errors, losses and duplicates, loudly.
pub fn print_problems(
    s: &SendReport,
    d: &DeliveryReport,
    sync: &SyncReport,
    errors: &[String],
    lost_sample: &[String],
) {
    for e in errors {
        println!("error:    {e}");
    }
    if d.lost > 0 {
        println!(
            "!!! LOST: {} of {} deliveries never arrived, e.g.:",
            d.lost, d.expected
        );
        for l in lost_sample {
            println!("!!!   {l}");
        }
    }
    if d.duplicated > 0 {
        println!(
            "!!! DUPLICATED: {} deliveries arrived more than once",
            d.duplicated
        );
    }
    if s.errors > 0 || sync.errors > 0 {
        println!(
            "!!! ERRORS: {} failed sends, {} failed syncs",
            s.errors, sync.errors
        );
    }
    if s.acked == 0 {
        println!("!!! NOTHING SENT: no send was acknowledged");
    }
}
