"""The report of bench/run.py (see bench/README.md): latest.png and the summary table printed at the end.

Imports only the standard library at top level (see bench/common.py).
"""

from __future__ import annotations

from pathlib import Path

from common import Result
from converter import transforms_table


def chart(res: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    runs = (res.get("resource") or {}).get("runs") or []
    if runs:
        colors = ["#999999", "#8172b3", "#cccccc", "#4c72b0", "#bbbbbb", "#dd8452", "#55a868"]
        for y, rs in enumerate(runs):
            left = 0.0
            for (name, secs), color in zip(rs["stages_s"].items(), colors, strict=False):
                ax1.barh(
                    [y], [secs], height=0.5, left=left, color=color, label=name.removesuffix("_s") if y == 0 else None
                )
                if secs >= 1.0:
                    ax1.text(left + secs / 2, y, f"{secs:.1f}", ha="center", va="center", fontsize=7)
                left += secs
        labels = [
            f"run {i + 1}: {r['total_s']:.1f} s\noverhead {r['operator_overhead_s']:.1f} s" for i, r in enumerate(runs)
        ]
        ax1.set_yticks(range(len(runs)), labels)
        ax1.invert_yaxis()
        ax1.set_xlabel("seconds")
        ax1.set_title("ShardedDataset apply -> Ready, by stage")
        ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8)
    else:
        ax1.set_axis_off()
    ws = sorted(int(w) for w in res["converter_mib_per_s"])
    ax2.plot(ws, [res["converter_mib_per_s"][str(w)] for w in ws], "o-", label="converter")
    ax2.plot(ws, [res["upper_bound_put_mib_per_s"][str(w)] for w in ws], "s--", label="upper bound: PUT raw objects")
    ax2.plot(ws, [res["upper_bound_put_shard_sized_mib_per_s"][str(w)] for w in ws], "d:", label="PUT shard-sized")
    ax2.plot(ws, [res["upper_bound_get_mib_per_s"][str(w)] for w in ws], "^--", label="upper bound: GET raw objects")
    ax2.axhline(res["baseline"]["mib_per_s"], color="grey", ls=":", label="baseline (2023, 1 process)")
    ax2.set_xticks(ws)
    ax2.set_xlabel("processes / converter workers")
    ax2.set_ylabel("MiB/s")
    ax2.set_ylim(bottom=0)
    ax2.set_title(f"scaling ({res['dataset']['samples']} samples, {res['dataset']['raw_mib']:.0f} MiB)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(res: Result) -> str:
    ub = res["upper_bound"]
    runs: list[tuple[str, Result]] = [("baseline 2023 (1 proc)", res["baseline"])]
    runs += [(f"converter x{w}", r) for w, r in res["converter"].items()]
    for w in res["converter"]:
        runs += [
            (f"upper: PUT raw objs x{w}", ub["put_raw_objects"][w]),
            (f"upper: GET raw objs x{w}", ub["get_raw_objects"][w]),
            (f"PUT shard-sized x{w}", ub["put_shard_sized_objects"][w]),
        ]
    head = ("run", "samples/s", "MiB/s", "wall s", "peak RSS MiB", "client CPU %", "AIS CPU %")
    out = ["{:<26}{:>10}{:>8}{:>8}{:>14}{:>14}{:>11}".format(*head)]
    for name, r in runs:
        rss = r.get("peak_rss_mib", max(r.get("peak_rss_mib_per_worker") or [0]) or "")
        cpu = (r["client_cpu_pct_of_core"], r["ais_cpu_pct_of_core"])
        cells = (r.get("samples_per_s", ""), r["mib_per_s"], round(r["wall_s"], 1), rss, *cpu)
        out.append("{:<26}{!s:>10}{!s:>8}{!s:>8}{!s:>14}{!s:>14}{!s:>11}".format(name, *cells))
    t = res["targets"]
    out += [
        "",
        f"converter/baseline (samples/s, 1 worker): {res['converter_vs_baseline']:.2f}x  (target >= 1.5x: "
        f"{'PASS' if t['converter_vs_baseline_ok'] else 'FAIL'})",
        f"converter/upper bound (MiB/s, 1 worker vs 1-process PUT): {res['converter_vs_upper_bound']:.0%}  "
        f"(target >= 80%: {'PASS' if t['converter_vs_upper_bound_ok'] else 'FAIL'}); vs 1-process GET "
        f"{res['converter_vs_get_bound']:.0%}, vs GET-then-shard-PUT "
        f"{res['converter_vs_get_then_shard_put_bound']:.0%}",
        f"converter peak RSS: {res['converter_peak_rss_mib']:.0f} MiB, by dataset size "
        f"{res['converter_rss_by_samples_mib']} (target <= {t['rss_limit_mib']:.0f} MiB and size-independent: "
        f"{'PASS' if t['converter_rss_ok'] else 'FAIL'})",
    ]
    if res.get("transforms"):
        out.append(transforms_table(res["transforms"]))
    if res.get("resource"):
        for i, rs in enumerate(res["resource"]["runs"]):
            cpu = rs["operator_cpu"]
            out.append(
                f"resource run {i + 1}: apply->Ready {rs['total_s']} s {rs['stages_s']}; overhead "
                f"{rs['operator_overhead_s']} s; operator CPU {cpu['during_conversion_pct_of_core']}% of a core during "
                f"conversion, {cpu['during_dsort_pct_of_core']}% during dSort (idle {cpu['idle_before_pct_of_core']}%)"
            )
        out.append(
            f"operator overhead mean {res['operator_overhead_s']} s, "
            f"max {res['resource']['operator_overhead_max_s']} s "
            f"(target <= 3 s: {'PASS' if t['operator_overhead_ok'] else 'FAIL'})"
        )
    return "\n".join(out)
