"""Profile the server (and the generator) under load with py-spy, and summarise the samples.

    python -m loadtest profile --rate 3000 --duration 10 --out out/prof   # record + summary
    python -m loadtest profile --summarise out/prof.txt                   # summary only

Recording runs ``py-spy record --subprocesses --format raw`` around ``python -m loadtest run``
(or ``memory`` with ``--memory``), so the orchestrator, the generator processes and the server
are sampled in one go. The summary lists, per process, the functions with the most samples
on-CPU: *self* (the frame was running) and *inclusive* (the frame was on the stack). Time in C
code (syscalls, orjson, the uvloop loop) is attributed to the Python line that called it.
py-spy is installed with ``.venv/bin/pip install py-spy`` (it is in the ``dev`` extra).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys

_LINE = re.compile(r":\d+\)$")


def summarise(path: str, top: int = 25) -> dict:
    procs: collections.Counter = collections.Counter()
    self_c: dict = collections.defaultdict(collections.Counter)
    incl: dict = collections.defaultdict(collections.Counter)
    self_line: dict = collections.defaultdict(collections.Counter)
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(n)
            frames = stack.split(";")
            idx = [i for i, fr in enumerate(frames) if fr.startswith("process ")]
            if not idx:
                continue
            pi = idx[-1]
            label = frames[pi]
            m = re.match(r'process \d+:"(.*)"', label)
            label = m.group(1) if m else label
            fr = [x for x in frames[pi + 1 :] if not x.startswith("thread ")]
            procs[label] += n
            if not fr:
                continue
            self_line[label][fr[-1]] += n
            self_c[label][_LINE.sub(")", fr[-1])] += n
            seen = set()
            for x in fr:
                g = _LINE.sub(")", x)
                if g not in seen:
                    seen.add(g)
                    incl[label][g] += n
    out = {}
    for label, tot in procs.most_common():
        out[label] = {
            "samples": tot,
            "self_pct": [(k, round(100 * v / tot, 1)) for k, v in self_c[label].most_common(top)],
            "self_line_pct": [
                (k, round(100 * v / tot, 1)) for k, v in self_line[label].most_common(top)
            ],
            "inclusive_pct": [
                (k, round(100 * v / tot, 1)) for k, v in incl[label].most_common(top + 15)
            ],
        }
    return out


STARTUP_MARKERS = (
    "_find_and_load",
    "build_parser",
    "load_default_certs",
    "_make_ssl_context",
    "_compile_bytecode",
)
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "_read_exact (")
CATEGORIES = (  # (label, frame substrings: a sample counts where the first match is found)
    ("core: Exchange.apply", ("Exchange.apply (",)),
    ("params validation (pydantic)", ("model_validate", "validate_python")),
    ("gateway: socket writes (Session.flush / write loop)", ("Session.flush", "write_loop")),
    (
        "gateway: fan-out after durability (on_commit: encode, queue per subscriber; replies)",
        ("Gateway.on_commit", "_batch_durable"),
    ),
    (
        "journal (runner commit loop, writer thread)",
        ("CoreRunner._commit_loop", "_worker (concurrent"),
    ),
    ("gateway: request handling (rest of on_text)", ("Session.on_text",)),
    (
        "aiohttp: frame reading and dispatch",
        ("RequestHandler.data_received", "WebSocketResponse.receive", "__anext__"),
    ),
)


def steady_state_breakdown(path: str, process_substr: str = "exchange serve") -> dict:
    """Server samples after start-up (stacks with import/start-up frames dropped, and
    threads blocked in a queue get or a pipe read), split into
    the CATEGORIES (a sample goes to the first category, in that order, whose frame is on its
    stack; the rest is the event loop itself: polling, syscalls, callbacks)."""
    cats: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if process_substr not in stack:
                continue
            if any(m in stack for m in STARTUP_MARKERS):
                continue
            leaf = stack.rsplit(";", 1)[-1]
            if leaf.startswith(IDLE_LEAVES):
                continue  # a thread blocked waiting (py-spy counts blocking reads as active)
            n = int(n)
            total += n
            for label, keys in CATEGORIES:
                if any(k in stack for k in keys):
                    cats[label] += n
                    break
            else:
                cats["event loop and other (uvloop run, syscalls, timers)"] += n
    return {
        "samples": total,
        "pct": {k: round(100 * v / max(total, 1), 1) for k, v in cats.most_common()},
    }


def print_summary(s: dict, top: int = 25) -> None:
    for label, d in s.items():
        print(f"\n=== {label[:110]}\n    samples {d['samples']}")
        for title, key in (
            ("self", "self_pct"),
            ("self, by line", "self_line_pct"),
            ("inclusive", "inclusive_pct"),
        ):
            print(f"  -- {title}")
            for k, v in d[key][:top]:
                print(f"    {v:5.1f}%  {k}")


def register(sub) -> None:
    p = sub.add_parser("profile", help="py-spy the server and generator under load; summarise")
    p.add_argument("--rate", type=float, default=3000)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument(
        "--memory",
        action="store_true",
        help="profile the memory test (--clients subscribers) instead of a run",
    )
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--batch", action="store_true")
    p.add_argument("--sample-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument(
        "--out",
        default="loadtest-profile",
        help="prefix: writes PREFIX.txt (raw), PREFIX.json (summary, run report)",
    )
    p.add_argument(
        "--summarise",
        default=None,
        metavar="RAW",
        help="only summarise an existing py-spy raw file",
    )
    p.add_argument("--top", type=int, default=25)

    def run(a):
        if a.summarise:
            s = summarise(a.summarise, a.top)
            print_summary(s, a.top)
            b = steady_state_breakdown(a.summarise)
            print(f"\n=== server, steady state ({b['samples']} samples)")
            for k, v in b["pct"].items():
                print(f"    {v:5.1f}%  {k}")
            return 0
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(spy):
            print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
            return 2
        raw = a.out + ".txt"
        report = a.out + ".run.json"
        inner = [sys.executable, "-m", "loadtest"]
        if a.memory:
            inner += [
                "memory",
                "--clients",
                str(a.clients),
                "--client-procs",
                "2",
                "--rate",
                str(a.rate),
                "--duration",
                str(a.duration),
                "--firms",
                "5",
            ]
        else:
            inner += ["run", "--rate", str(a.rate), "--duration", str(a.duration)]
        if a.batch:
            inner.append("--batch")
        inner += ["--json", report]
        cmd = [
            spy,
            "record",
            "--subprocesses",
            "-r",
            str(a.sample_rate),
            "--format",
            "raw",
            "-o",
            raw,
            "--",
        ] + inner
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
        s = summarise(raw, a.top)
        print_summary(s, a.top)
        b = steady_state_breakdown(raw)
        print(f"\n=== server, steady state ({b['samples']} samples)")
        for k, v in b["pct"].items():
            print(f"    {v:5.1f}%  {k}")
        with open(a.out + ".json", "w") as f:
            json.dump(
                {
                    "command": "python -m loadtest " + " ".join(sys.argv[1:]),
                    "summary": s,
                    "server_steady_state": b,
                },
                f,
                indent=1,
            )
        return 0

    p.set_defaults(func=run)
