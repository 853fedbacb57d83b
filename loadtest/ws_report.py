"""The sweep's markdown report and its latency-versus-rate plot."""

from __future__ import annotations

import os


def _fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(steps: list[dict], exec_cols: bool = True) -> str:
    head = (
        "| offered /s | achieved /s | served /s | ack p50 | p90 | p99 | p99.9 | max (ms) |"
        + (" exec p50 | exec p99 (ms) |" if exec_cols else "")
        + " errors | rejects | server CPU | server us/msg | gen. CPU us/msg | sustained |"
    )
    sep = "|" + "---|" * (head.count("|") - 1)
    rows = [head, sep]
    for s in steps:
        a = s["ack_latency_ms"]
        e = s["exec_latency_ms"]
        rows.append(
            f"| {s['offered_rate']:.0f} | {s['achieved_rate']:.0f} | "
            f"{s.get('served_rate', s['achieved_rate']):.0f} | {_fmt(a['p50'])} | "
            f"{_fmt(a['p90'])} | {_fmt(a['p99'])} | {_fmt(a['p999'])} | {_fmt(a['max'])} |"
            + (f" {_fmt(e['p50'])} | {_fmt(e['p99'])} |" if exec_cols else "")
            + f" {s['errors']} | {s['rejects']} | "
            f"{_fmt(s.get('server_cpu_util'))} | {_fmt(s.get('server_cpu_us_per_order'), 1)} | "
            f"{_fmt(s['generator_cpu_us_per_order'], 1)} | "
            f"{'yes' if s.get('sustained') else 'no'} |"
        )
    return "\n".join(rows)


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(13, 5), dpi=100, gridspec_kw={"width_ratios": [3, 2]}
    )
    top = 0.0
    for steps, name, color in (
        (out["steps"], "exchange", "tab:blue"),
        (out.get("echo_steps") or [], "echo baseline", "tab:gray"),
    ):
        pts = [s for s in steps if s["ack_latency_ms"]["p50"] is not None]
        if not pts:
            continue
        x = [s["offered_rate"] for s in pts]
        top = max(top, max(x))
        ax.plot(
            x, [s["ack_latency_ms"]["p50"] for s in pts], "o-", color=color, label=f"{name} ack p50"
        )
        ax.plot(
            x,
            [s["ack_latency_ms"]["p99"] for s in pts],
            "s--",
            color=color,
            label=f"{name} ack p99",
        )
        if name == "exchange":
            ex = [s for s in pts if s["exec_latency_ms"]["p99"] is not None]
            if ex:
                ax.plot(
                    [s["offered_rate"] for s in ex],
                    [s["exec_latency_ms"]["p99"] for s in ex],
                    "^:",
                    color="tab:orange",
                    label="exchange exec report p99",
                )
        ax2.plot(x, [s["achieved_rate"] for s in pts], "o-", color=color, label=name)
    ax.axhline(10, color="tab:red", lw=0.8, ls=":", label="10 ms target")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (orders/s)")
    ax.set_ylabel("latency from intended send time (ms, log)")
    ax.set_title("Latency versus offered rate (open loop)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax2.plot([0, top], [0, top], color="black", lw=0.6, ls=":", label="achieved = offered")
    ax2.set_xlabel("offered rate (msgs/s)")
    ax2.set_ylabel("achieved rate (replies/s)")
    ax2.set_title("Throughput")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_report(out: dict, md_path: str, png_path: str) -> None:
    plot(out, png_path)
    env = out["environment"]
    lines = [
        "# Served exchange load test: sweep",
        "",
        f"Command: `{out['command']}`  ",
        f"Started {env['started_utc']}, Python {env['python']}, {env['cpus']} CPUs, "
        f"load average before {tuple(round(x, 2) for x in env['loadavg_before'])}; "
        f"{out['firms']} firms (one connection each), {out['generator_procs']} generator "
        f"process(es), {out['duration_seconds']:.0f} s per step.",
        "",
        f"* saturation rate (highest served: answered without OVERLOADED): "
        f"**{out['saturation_rate']:.0f} orders/s**",
        f"* echo ceiling (same client, same schedule): **{_fmt(out['echo_ceiling_rate'], 0)} "
        f"msgs/s**; ratio **{_fmt(out['ratio_to_echo'], 3)}**",
        f"* highest offered rate sustained with p99 ack <= 10 ms: "
        f"**{out['max_sustained_rate_p99_10ms']:.0f} orders/s**",
        "",
        f"![latency versus rate]({os.path.basename(png_path)})",
        "",
        "## Exchange",
        "",
        table(out["steps"]),
        "",
    ]
    if out.get("echo_steps"):
        lines += ["## Echo baseline", "", table(out["echo_steps"], exec_cols=False), ""]
    lines += [
        "Latency is measured from each message's intended send time on a fixed schedule "
        "(open loop), so queueing in the generator or the server is included. "
        "`sustained` = achieved >= 95 % of offered, every request answered, errors <= 0.1 %. "
        "Server CPU is the server process's CPU seconds over the step's wall time (1.0 = one "
        "core).",
        "",
    ]
    with open(md_path, "w") as f:
        f.write("\n".join(lines))
