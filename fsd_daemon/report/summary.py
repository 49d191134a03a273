"""The report's numbers as a few lines of text and as JSON (``summary.json``)."""

from __future__ import annotations

import statistics
from datetime import datetime, timezone
from typing import Any

from fsd_daemon.mixin import names
from fsd_daemon.report.analysis import NEVER_USED_BUSY_RATIO, Analysis
from fsd_daemon.report.data import ReportData

RIGHTSIZING_ASSUMPTION = (
    "assumes the requests could be spread evenly over the replicas and a replica works as fast "
    "with a larger share, so the same throughput needs as many replicas as were busy at once "
    "on average (rounded up)"
)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def as_json(data: ReportData, analysis: Analysis) -> dict[str, Any]:
    fractions = analysis.states.fractions() if analysis.states else None
    return {
        "start": data.start,
        "end": data.end,
        "resolution_seconds": data.step,
        "gpu_rate_window": data.gpu_rate_window,
        "jobs": data.jobs,
        "steps": [
            {
                "job": s.job,
                "index": s.index,
                "start": s.start,
                "seconds": s.seconds,
                "median_finish_seconds": s.median_finish - s.start,
                "tail_seconds": s.tail_seconds,
                "tail_share": s.tail_share,
                "waiting_share": s.waiting_share,
                "slowest_replica": s.slowest,
                "replicas": len(s.finishes),
            }
            for s in analysis.steps
        ],
        "never_busy_replicas": [
            {"job": j, names.REPLICA: r} for j, r in analysis.never_busy_replicas
        ],
        "states": None
        if fractions is None or analysis.states is None
        else {
            "unit": analysis.states.unit,
            "asleep": fractions[0],
            "busy": fractions[1],
            "idle": fractions[2],
        },
        "idle_gpu_hours": [
            {"role": role, "job": job, "hours": hours}
            for (role, job), hours in sorted(analysis.idle_gpu_hours.items())
        ],
        "never_used_gpus": [
            {"instance": inst, "gpu": gpu, "owner": owner}
            for (inst, gpu), owner in analysis.never_used_gpus
        ],
        "rightsizing": [
            {
                "job": r.job,
                "replicas": r.replicas,
                "mean_busy_replicas": r.mean_busy_replicas,
                "needed_replicas": r.needed_replicas,
                "tokens_per_second": r.tokens_per_second,
            }
            for r in analysis.rightsizing
        ],
        "rightsizing_assumption": RIGHTSIZING_ASSUMPTION,
        "not_drawn": list(data.missing),
    }


def lines(data: ReportData, analysis: Analysis) -> list[str]:
    out = [f"range: {_utc(data.start)} .. {_utc(data.end)} (every {data.step:g} s)"]
    if data.jobs:
        out.append(f"jobs: {', '.join(data.jobs)}")
    if analysis.steps:
        tails = [s.tail_seconds for s in analysis.steps]
        tail_share = _mean(s.tail_share for s in analysis.steps)
        waiting_share = _mean(s.waiting_share for s in analysis.steps)
        out.append(
            f"rollout steps: {len(analysis.steps)}; the slowest replica kept a step waiting "
            f"{statistics.median(tails):.1f} s (median; max {max(tails):.1f} s) after the median "
            f"replica finished; tail share of GPU time {tail_share:.0%}, "
            f"waiting share {waiting_share:.0%}"
        )
    elif data.running:
        out.append("rollout steps: none complete in the range")
    for job, replica in analysis.never_busy_replicas:
        out.append(f"replica {replica} of job {job} ran no request in the range")
    if analysis.states is not None:
        asleep, busy, idle = analysis.states.fractions()
        out.append(
            f"rollout {analysis.states.unit}: busy {busy:.0%}, awake but idle {idle:.0%}, "
            f"asleep {asleep:.0%}"
        )
    for (role, job), hours in sorted(analysis.idle_gpu_hours.items(), key=lambda kv: -kv[1]):
        out.append(f"idle GPU-hours: {hours:.3f} for role {role}" + (f", job {job}" if job else ""))
    if analysis.never_used_gpus:
        listed = ", ".join(
            f"{inst} gpu {gpu} ({owner.replace('|', ' ').strip()})"
            for (inst, gpu), owner in analysis.never_used_gpus
        )
        out.append(
            f"GPUs held but (almost) never busy (< {NEVER_USED_BUSY_RATIO:.0%} of the time): "
            f"{len(analysis.never_used_gpus)}: {listed}"
        )
    for r in analysis.rightsizing:
        out.append(
            f"rightsizing, job {r.job}: on average {r.mean_busy_replicas:.2f} of {r.replicas} "
            f"rollout replicas were busy ({r.tokens_per_second:.0f} tokens/s): "
            f"{r.needed_replicas} replica(s) would give the same throughput "
            f"({RIGHTSIZING_ASSUMPTION})"
        )
    for part in data.missing:
        out.append(f"not drawn: {part}")
    return out


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
