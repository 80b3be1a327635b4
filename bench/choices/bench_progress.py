"""tqdm vs rich.progress: import time and per-update overhead.

Workload: 1,000,000 trivial items, progress updated once per 1000 items
(1000 updates).  Output goes to /dev/null (rich forced into terminal mode so
it really renders).  Also shows the per-item cost if you naively wrap every
item (tqdm(iterable) / rich track()).

Run:  .venv/bin/python bench/choices/bench_progress.py [--out results/progress.md]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

N = 1_000_000
STEP = 1000


def import_ms(stmt: str, repeats: int = 7) -> tuple[float, float]:
    """Return (best in-process import ms via -X importtime,
    best wall ms of `python -c stmt` minus `python -c pass`)."""
    imp, wall, base = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", stmt],
            check=True,
            capture_output=True,
            text=True,
        )
        wall.append(time.perf_counter() - t0)
        # top-level entries (no nesting indent) imported by stmt; sum their cumulative µs
        total = 0
        for line in p.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m and m.group(3) == " ":
                total += int(m.group(2))
        imp.append(total / 1000)
    # subtract the interpreter-startup imports that `-c pass` also does
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True
    )
    startup = sum(
        int(m.group(2))
        for m in re.finditer(r"import time:\s+(\d+) \|\s+(\d+) \|( )(\S+)\n", p.stderr + "\n")
    )
    return min(imp) - startup / 1000, (min(wall) - min(base)) * 1000


def run_loop(update=None) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    acc = 0
    for i in range(N):
        acc += i
        if i % STEP == STEP - 1 and update is not None:
            update()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole process

    from importlib.metadata import version

    from rich.console import Console
    from rich.progress import Progress, track
    from tqdm import tqdm

    def best(fn):
        runs = [fn() for _ in range(args.repeats)]
        return min(r[0] for r in runs), min(r[1] for r in runs)

    run_loop(lambda: None)  # warm-up
    base = best(lambda: run_loop(lambda: None))  # same loop, no-op update callback

    def tqdm_run():
        bar = tqdm(total=N, file=sink)
        r = run_loop(lambda: bar.update(STEP))
        bar.close()
        return r

    def rich_run():
        with Progress(console=Console(file=sink, force_terminal=True, width=100)) as prog:
            task = prog.add_task("calls", total=N)
            r = run_loop(lambda: prog.update(task, advance=STEP))
        return r

    def rich_advance_run():
        with Progress(console=Console(file=sink, force_terminal=True, width=100)) as prog:
            task = prog.add_task("calls", total=N)
            r = run_loop(lambda: prog.advance(task, STEP))
        return r

    res = {
        "tqdm bar.update(1000)": best(tqdm_run),
        "rich Progress.update(task, advance=1000)": best(rich_run),
        "rich Progress.advance(task, 1000)": best(rich_advance_run),
    }

    # Direct per-update cost: K update calls back to back (rendering is rate
    # limited to ~10/s by both libraries, so this is bookkeeping + amortised render).
    K = 50_000

    def direct(make, upd, close):
        obj = make()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(K):
            upd(obj)
        w, c = time.perf_counter() - t0, time.process_time() - c0
        close(obj)
        return w / K, c / K

    def mk_rich():
        p = Progress(console=Console(file=sink, force_terminal=True, width=100))
        p.start()
        return p, p.add_task("calls", total=K * STEP)

    direct_res = {
        "tqdm bar.update(1000)": best(
            lambda: direct(
                lambda: tqdm(total=K * STEP, file=sink),
                lambda b: b.update(STEP),
                lambda b: b.close(),
            )
        ),
        "rich Progress.update(task, advance=1000)": best(
            lambda: direct(
                mk_rich, lambda pt: pt[0].update(pt[1], advance=STEP), lambda pt: pt[0].stop()
            )
        ),
        "rich Progress.advance(task, 1000)": best(
            lambda: direct(mk_rich, lambda pt: pt[0].advance(pt[1], STEP), lambda pt: pt[0].stop())
        ),
    }

    # naive per-item wrapping, 200k items
    M = 200_000

    def per_item(wrap):
        t0 = time.process_time()
        acc = 0
        for i in wrap(range(M)):
            acc += i
        return time.process_time() - t0

    t_plain = min(per_item(lambda it: it) for _ in range(3))
    t_tqdm = min(per_item(lambda it: tqdm(it, file=sink)) for _ in range(3))
    t_track = min(
        per_item(lambda it: track(it, console=Console(file=sink, force_terminal=True, width=100)))
        for _ in range(2)
    )

    imp_tqdm = import_ms("from tqdm import tqdm")
    imp_rich = import_ms("from rich.progress import Progress")

    out = [
        f"tqdm {version('tqdm')}, rich {version('rich')}. Loop: {N:,} trivial items, update "
        f"every {STEP} "
        f"items = {N // STEP} updates, best of {args.repeats}; output to /dev/null (rich with "
        "force_terminal). "
        f"Baseline loop with a no-op update callback: {base[1] * 1e3:.0f} ms CPU.\n",
        f"| variant | **µs per update** (direct, {K:,} calls, process CPU incl. rich refresh "
        "thread) "
        f"| µs per update (wall) | 1M-item loop CPU ms | loop extra vs baseline CPU ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (_w, c) in res.items():
        dw, dc = direct_res[name]
        out.append(
            f"| {name} | {dc * 1e6:.2f} | {dw * 1e6:.2f} | {c * 1e3:.0f} | "
            f"{(c - base[1]) * 1e3:+.1f} |"
        )
    out += [
        "",
        "| import | in-process ms (-X importtime, best of 7) | extra process wall ms |",
        "|---|---:|---:|",
        f"| `from tqdm import tqdm` | {imp_tqdm[0]:.1f} | {imp_tqdm[1]:.1f} |",
        f"| `from rich.progress import Progress` | {imp_rich[0]:.1f} | {imp_rich[1]:.1f} |",
        "",
        f"Naive per-item wrapping ({M:,} items): tqdm(iterable) "
        f"{(t_tqdm - t_plain) / M * 1e9:.0f} ns/item, rich track() "
        f"{(t_track - t_plain) / M * 1e9:.0f} ns/item "
        f"(plain loop {t_plain / M * 1e9:.0f} ns/item).",
    ]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
