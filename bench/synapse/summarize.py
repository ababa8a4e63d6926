#!/usr/bin/env python3
"""Summarise a compare.sh output directory as Markdown (stdlib only).

    python3 bench/synapse/summarize.py /tmp/tern-vs-synapse-<timestamp>

Reads OUT/plan.tsv (server, workload, runs, tern-bench args), OUT/versions.txt
and every OUT/runs/<server>/<workload>/run<N>/bench.json written by
tern-bench --json, and prints:

  1. the versions and machine;
  2. per server and workload, the median over runs of each figure (each
     column's median on its own, so one row need not be one run);
  3. Tern/Synapse ratios per workload;
  4. every run, for checking the medians and spotting outliers;
  5. warnings: failed runs, lost or duplicated deliveries, errors, other
     processes competing for the CPU.
"""

import json
import statistics
import sys
from pathlib import Path

def load_plan(out):
    plan = []
    lines = (out / "plan.tsv").read_text().splitlines()
    for line in lines[1:]:
        if not line.strip():
            continue
        server, workload, runs, args = line.split("\t")
        plan.append({"server": server, "workload": workload, "runs": int(runs), "args": args})
    return plan


def load_runs(out, server, workload, runs):
    """Returns one dict per planned run: its number, exit code and report (or None)."""
    result = []
    for n in range(1, runs + 1):
        d = out / "runs" / server / workload / f"run{n}"
        rc_file = d / "bench.rc"
        rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
        report = None
        js = d / "bench.json"
        if js.exists():
            try:
                report = json.loads(js.read_text())
            except ValueError:
                report = None
        result.append({"n": n, "rc": rc, "report": report, "dir": d})
    return result


def figures(r):
    """The figures of one report, flat; None where absent."""
    s, d, srv = r["sends"], r["delivery"], r.get("server") or {}
    acked = s["acked"]
    cpu = srv.get("cpu_s")
    return {
        "acks_per_sec": s["acks_per_sec"],
        "acked": acked,
        "send_elapsed_s": s["elapsed_s"],
        "send_errors": s["errors"],
        "send_p50": s["rtt_ms"]["p50"],
        "send_p99": s["rtt_ms"]["p99"],
        "deliv_p50": d["latency_ms"]["p50"],
        "deliv_p99": d["latency_ms"]["p99"],
        "deliv_p999": d["latency_ms"]["p999"],
        "deliv_max": d["latency_ms"]["max"],
        "expected": d["expected"],
        "received": d["received"],
        "lost": d["lost"],
        "dup": d["duplicated"],
        "drain_s": d["drain_s"],
        "sync_errors": r["sync"]["errors"],
        "limited": r["sync"]["limited_timelines"],
        "cpu_s": cpu,
        "cores": srv.get("cores_busy"),
        "cpu_ms_per_msg": (cpu * 1000.0 / acked) if cpu is not None and acked else None,
        "peak_rss_mib": srv["peak_rss_kib"] / 1024.0 if "peak_rss_kib" in srv else None,
        "peak_rss_scope": srv.get("peak_rss_scope"),
        "other_cpu_s": r.get("other_cpu_s"),
        "bench_cpu_s": r.get("bench_cpu_s"),
        "ok": r.get("ok"),
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def f(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    """a/b; where a is the smaller, also says how many times smaller."""
    if a is None or b is None or a <= 0 or b <= 0:
        return "–"
    r = a / b
    text = f"{r:.3g}×"
    if r < 1:
        text += f" (1/{b / a:.3g})"
    return text


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py OUTPUT_DIR")
    out = Path(sys.argv[1])
    plan = load_plan(out)
    versions = (out / "versions.txt").read_text().splitlines() if (out / "versions.txt").exists() else []

    p = print
    p("## Tern vs Synapse\n")
    for v in versions:
        p(f"- {v}")
    p()
    p("Workloads (tern-bench arguments):\n")
    for e in plan:
        p(f"- **{e['workload']}** on {e['server']}: `{e['args']}`")
    p()

    rows = []  # (entry, runs, figures list, medians)
    warnings = []
    for e in plan:
        runs = load_runs(out, e["server"], e["workload"], e["runs"])
        figs = []
        for run in runs:
            label = f"{e['server']}/{e['workload']}/run{run['n']}"
            if run["report"] is None:
                warnings.append(f"{label}: no JSON report (tern-bench exit {run['rc']}); see {run['dir']}/bench.out")
                continue
            fg = figures(run["report"])
            fg["n"] = run["n"]
            fg["rc"] = run["rc"]
            figs.append(fg)
            if run["rc"] not in (0, None) or not fg["ok"]:
                warnings.append(
                    f"{label}: FAILED (exit {run['rc']}): lost {fg['lost']}, duplicated {fg['dup']}, "
                    f"send errors {fg['send_errors']}, sync errors {fg['sync_errors']}"
                )
            for err in run["report"].get("errors", [])[:3]:
                warnings.append(f"{label}: error: {err}")
            # The load phase is the send phase plus the drain; more than a
            # tenth of a core used by others over it means competition.
            wall = fg["send_elapsed_s"] + fg["drain_s"]
            if fg["other_cpu_s"] is not None and fg["other_cpu_s"] > 0.1 * wall:
                warnings.append(
                    f"{label}: other processes used {fg['other_cpu_s']:.1f} CPU s during the "
                    f"{wall:.0f} s load ({fg['other_cpu_s'] / wall:.2f} cores); figures not clean"
                )
            if fg["peak_rss_scope"] not in (None, "load"):
                warnings.append(f"{label}: peak RSS is over the process lifetime, not the load phase")
            if fg["limited"]:
                warnings.append(f"{label}: {fg['limited']} limited (gapped) sync timelines")
        keys = figs[0].keys() if figs else []
        med = {k: median([fg[k] for fg in figs]) for k in keys if k not in ("peak_rss_scope", "ok")}
        if figs:
            med["lost_total"] = sum(fg["lost"] for fg in figs)
            med["dup_total"] = sum(fg["dup"] for fg in figs)
        rows.append((e, runs, figs, med))

    p("### Medians over runs\n")
    p(
        "Each column is the median over that row's runs on its own; lost / dup are totals over all runs. "
        "Times in ms; server CPU and peak RSS are over the load phase only (setup excluded).\n"
    )
    p(
        "| server | workload | runs ok | acked msgs/s | send phase s | send RTT p50 / p99 "
        "| delivery p50 / p99 / p99.9 / max | lost / dup (all runs) | server CPU s (cores) "
        "| server CPU ms per msg | server peak RSS MiB | other CPU s |"
    )
    p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for e, runs, figs, m in rows:
        ok = sum(1 for fg in figs if fg["ok"] and fg["rc"] in (0, None))
        if not figs:
            p(f"| {e['server']} | {e['workload']} | 0/{len(runs)} | – | – | – | – | – | – | – | – | – |")
            continue
        p(
            f"| {e['server']} | {e['workload']} | {ok}/{len(runs)} | {f(m['acks_per_sec'])} | {f(m['send_elapsed_s'])} "
            f"| {f(m['send_p50'])} / {f(m['send_p99'])} "
            f"| {f(m['deliv_p50'])} / {f(m['deliv_p99'])} / {f(m['deliv_p999'])} / {f(m['deliv_max'])} "
            f"| {m['lost_total']} / {m['dup_total']} | {f(m['cpu_s'])} ({f(m['cores'], 2)}) "
            f"| {f(m['cpu_ms_per_msg'], 2)} | {f(m['peak_rss_mib'], 0)} | {f(m['other_cpu_s'], 2)} |"
        )
    p()

    by = {(e["server"], e["workload"]): m for e, _, figs, m in rows if figs}
    workloads = []
    for e in plan:
        if e["workload"] not in workloads:
            workloads.append(e["workload"])
    ratio_rows = [w for w in workloads if ("tern", w) in by and ("synapse", w) in by]
    if ratio_rows:
        p("### Tern ÷ Synapse (medians)\n")
        p(
            "Throughput: above 1× means Tern acknowledged more messages per second. "
            "Latency and CPU per message: below 1× means Tern is lower (better).\n"
        )
        p(
            "| workload | acked msgs/s | send RTT p50 | send RTT p99 | delivery p50 | delivery p99 "
            "| delivery max | server CPU per msg | server peak RSS |"
        )
        p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for w in ratio_rows:
            t, s = by[("tern", w)], by[("synapse", w)]
            p(
                f"| {w} | {ratio(t['acks_per_sec'], s['acks_per_sec'])} "
                f"| {ratio(t['send_p50'], s['send_p50'])} | {ratio(t['send_p99'], s['send_p99'])} "
                f"| {ratio(t['deliv_p50'], s['deliv_p50'])} | {ratio(t['deliv_p99'], s['deliv_p99'])} "
                f"| {ratio(t['deliv_max'], s['deliv_max'])} | {ratio(t['cpu_ms_per_msg'], s['cpu_ms_per_msg'])} "
                f"| {ratio(t['peak_rss_mib'], s['peak_rss_mib'])} |"
            )
        p()

    p("### Every run\n")
    p(
        "| server | workload | run | exit | acked (msgs/s) | send phase s | send RTT p50 / p99 "
        "| delivery p50 / p99 / p99.9 / max | delivered / expected | lost / dup | drain s "
        "| server CPU s (cores) | peak RSS MiB | other CPU s |"
    )
    p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for e, runs, figs, _ in rows:
        for fg in figs:
            p(
                f"| {e['server']} | {e['workload']} | {fg['n']} | {fg['rc']} "
                f"| {fg['acked']:,} ({f(fg['acks_per_sec'])}) | {f(fg['send_elapsed_s'])} "
                f"| {f(fg['send_p50'])} / {f(fg['send_p99'])} "
                f"| {f(fg['deliv_p50'])} / {f(fg['deliv_p99'])} / {f(fg['deliv_p999'])} / {f(fg['deliv_max'])} "
                f"| {fg['received']:,} / {fg['expected']:,} | {fg['lost']} / {fg['dup']} | {f(fg['drain_s'])} "
                f"| {f(fg['cpu_s'])} ({f(fg['cores'], 2)}) | {f(fg['peak_rss_mib'], 0)} | {f(fg['other_cpu_s'], 2)} |"
            )
    p()

    notes = out / "notes.txt"
    if notes.exists():
        warnings.extend(l for l in notes.read_text().splitlines() if l.strip())
    if warnings:
        p("### Warnings\n")
        for w in warnings:
            p(f"- {w}")
        p()


if __name__ == "__main__":
    main()
