"""JSON encode/decode/validate benchmark for 1000 call records.

Run:  .venv/bin/python bench/choices/bench_json.py [--out results/json.md]
Reports CPU microseconds per 1000 records (best and median of N repeats, GC on unless --no-gc).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import make_records

# --------------------------------------------------------------------------
# Schema (single source for the msgspec Struct and the hand-written checks)
# --------------------------------------------------------------------------


class Transfer(msgspec.Struct):
    from_operator: int
    to_operator: int
    at: str
    reason: str


STR_FIELDS = [
    "call_id",
    "session_id",
    "started_at",
    "answered_at",
    "ended_at",
    "direction",
    "status",
    "caller_number",
    "callee_number",
    "caller_name",
    "callee_name",
    "operator_name",
    "operator_login",
    "department",
    "queue_name",
    "city",
    "region",
    "trunk",
    "codec",
    "hangup_cause",
    "disposition",
    "summary",
    "recording_url",
    "crm_deal_title",
]
OPT_STR_FIELDS = ["comment", "transfer_reason", "customer_email"]
INT_FIELDS = [
    "id",
    "account_id",
    "operator_id",
    "queue_id",
    "department_id",
    "duration_sec",
    "billsec",
    "wait_sec",
    "hold_sec",
    "talk_sec",
    "ring_count",
    "transfer_count",
    "mos_x100",
    "jitter_ms",
    "packet_loss_ppm",
    "cost_kopecks",
    "crm_deal_id",
    "csat",
    "started_at_unix",
    "ended_at_unix",
]
BOOL_FIELDS = [
    "is_answered",
    "is_missed",
    "is_recorded",
    "is_transferred",
    "is_internal",
    "is_callback",
    "is_spam",
    "has_voicemail",
]
INT_LIST_FIELDS = ["segment_durations", "ivr_path"]
STR_LIST_FIELDS = ["tags", "dtmf"]
DICT_LIST_FIELDS = ["transfers"]

_fields: list[tuple[str, Any]] = (
    [(n, str) for n in STR_FIELDS]
    + [(n, str | None) for n in OPT_STR_FIELDS]
    + [(n, int) for n in INT_FIELDS]
    + [(n, bool) for n in BOOL_FIELDS]
    + [(n, list[int]) for n in INT_LIST_FIELDS]
    + [(n, list[str]) for n in STR_LIST_FIELDS]
    + [(n, list[Transfer]) for n in DICT_LIST_FIELDS]
)
assert len(_fields) == 60
Call = msgspec.defstruct("Call", _fields)  # strict=True is msgspec's default


# --------------------------------------------------------------------------
# Hand-written validation after orjson.loads.  Semantics chosen to match the
# msgspec strict decode: bool is NOT accepted as int, every list element is
# checked, nested dicts are checked, missing keys fail, extra keys ignored.
# The unrolled version is what a person would write by hand (one line per
# field); it is generated from the schema only so it cannot drift.
# --------------------------------------------------------------------------


class ValidationError(ValueError):
    pass


def _gen_unrolled() -> Callable[[Any], dict]:
    L = [
        "def validate_call(d):",
        "    if type(d) is not dict: raise ValidationError('not an object')",
        "    try:",
    ]
    for n in STR_FIELDS:
        L.append(f"        if type(d[{n!r}]) is not str: raise ValidationError({n!r})")
    for n in OPT_STR_FIELDS:
        L.append(f"        v = d[{n!r}]")
        L.append(f"        if v is not None and type(v) is not str: raise ValidationError({n!r})")
    for n in INT_FIELDS:
        L.append(f"        if type(d[{n!r}]) is not int: raise ValidationError({n!r})")
    for n in BOOL_FIELDS:
        L.append(f"        if type(d[{n!r}]) is not bool: raise ValidationError({n!r})")
    for n, t in [(n, "int") for n in INT_LIST_FIELDS] + [(n, "str") for n in STR_LIST_FIELDS]:
        L.append(f"        v = d[{n!r}]")
        L.append(f"        if type(v) is not list: raise ValidationError({n!r})")
        L.append("        for x in v:")
        L.append(f"            if type(x) is not {t}: raise ValidationError({n!r})")
    L += [
        "        v = d['transfers']",
        "        if type(v) is not list: raise ValidationError('transfers')",
        "        for t in v:",
        "            if (type(t) is not dict or type(t['from_operator']) is not int",
        "                    or type(t['to_operator']) is not int or type(t['at']) is not str",
        "                    or type(t['reason']) is not str):",
        "                raise ValidationError('transfers')",
        "    except KeyError as e:",
        "        raise ValidationError(f'missing {e}') from None",
        "    return d",
    ]
    src = "\n".join(L)
    ns: dict[str, Any] = {"ValidationError": ValidationError}
    exec(compile(src, "<validate_call>", "exec"), ns)
    fn = ns["validate_call"]
    fn.source = src  # type: ignore[attr-defined]
    return fn


validate_unrolled = _gen_unrolled()

_SCALAR_CHECKS = (
    [(n, str) for n in STR_FIELDS]
    + [(n, int) for n in INT_FIELDS]
    + [(n, bool) for n in BOOL_FIELDS]
)
_LIST_CHECKS = [(n, int) for n in INT_LIST_FIELDS] + [(n, str) for n in STR_LIST_FIELDS]


def validate_loop(d: Any) -> dict:
    """Table-driven variant (shorter code, slower)."""
    if type(d) is not dict:
        raise ValidationError("not an object")
    try:
        for n, t in _SCALAR_CHECKS:
            if type(d[n]) is not t:
                raise ValidationError(n)
        for n in OPT_STR_FIELDS:
            v = d[n]
            if v is not None and type(v) is not str:
                raise ValidationError(n)
        for n, t in _LIST_CHECKS:
            v = d[n]
            if type(v) is not list or any(type(x) is not t for x in v):
                raise ValidationError(n)
        v = d["transfers"]
        if type(v) is not list:
            raise ValidationError("transfers")
        for t in v:
            if (
                type(t) is not dict
                or type(t["from_operator"]) is not int
                or type(t["to_operator"]) is not int
                or type(t["at"]) is not str
                or type(t["reason"]) is not str
            ):
                raise ValidationError("transfers")
    except KeyError as e:
        raise ValidationError(f"missing {e}") from None
    return d


# --------------------------------------------------------------------------
# Timing helper
# --------------------------------------------------------------------------


def bench(fn: Callable[[], Any], repeats: int, min_time: float) -> tuple[float, float]:
    """Return (best, median) CPU seconds (this thread) per call.  CPU time rather than wall time
    so that other processes on a shared machine do not inflate the numbers."""
    fn()  # warm-up
    n = 1
    while True:
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        dt = time.thread_time() - t0
        if dt >= min_time / 4:
            break
        n *= 2
    n = max(1, int(n * (min_time / max(dt, 1e-9))))
    runs = []
    for _ in range(repeats):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        runs.append((time.thread_time() - t0) / n)
    return min(runs), statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.25, help="seconds per repeat")
    ap.add_argument("--no-gc", action="store_true", help="disable the cyclic GC while timing")
    args = ap.parse_args()
    gc.enable()

    recs = make_records(1000)

    # ---- encode -----------------------------------------------------------
    enc = msgspec.json.Encoder()
    encoders: dict[str, Callable[[], bytes]] = {
        "json.dumps(ensure_ascii=False).encode()": lambda: json.dumps(
            recs, ensure_ascii=False
        ).encode("utf-8"),
        "json.dumps(ensure_ascii=False, compact separators).encode()": lambda: json.dumps(
            recs, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8"),
        "orjson.dumps": lambda: orjson.dumps(recs),
        "msgspec.json.encode": lambda: msgspec.json.encode(recs),
        "msgspec.json.Encoder().encode (reused)": lambda: enc.encode(recs),
    }
    # Correctness: same data back, bytes, non-ASCII not escaped.
    for name, f in encoders.items():
        out = f()
        assert isinstance(out, bytes), name
        assert b"\\u04" not in out, name
        assert "Москва".encode() in out, name
        assert orjson.loads(out) == recs, name
    page_size = len(orjson.dumps(recs))

    structs = msgspec.convert(recs, list[Call])
    encoders["msgspec encode of list[Call] Structs (reused Encoder)"] = lambda: enc.encode(structs)
    assert orjson.loads(enc.encode(structs)) == recs

    # ---- decode lines -------------------------------------------------------
    lines = [orjson.dumps(r) for r in recs]
    blob = b"\n".join(lines) + b"\n"
    mdec = msgspec.json.Decoder()
    decoders: dict[str, Callable[[], Any]] = {
        "json.loads per line": lambda: [json.loads(ln) for ln in lines],
        "orjson.loads per line": lambda: [orjson.loads(ln) for ln in lines],
        "msgspec Decoder().decode per line (untyped)": lambda: [mdec.decode(ln) for ln in lines],
        "msgspec Decoder().decode_lines(blob) (untyped)": lambda: mdec.decode_lines(blob),
    }
    for name, f in decoders.items():
        assert f() == recs, name

    # ---- typed decode + validation ----------------------------------------
    sdec = msgspec.json.Decoder(Call)
    typed: dict[str, Callable[[], Any]] = {
        "msgspec Decoder(Call).decode per line (strict Struct)": lambda: [
            sdec.decode(ln) for ln in lines
        ],
        "msgspec Decoder(Call).decode_lines(blob)": lambda: sdec.decode_lines(blob),
        "orjson.loads + hand-written checks (unrolled)": lambda: [
            validate_unrolled(orjson.loads(ln)) for ln in lines
        ],
        "orjson.loads + table-driven checks (loop)": lambda: [
            validate_loop(orjson.loads(ln)) for ln in lines
        ],
        "json.loads + hand-written checks (unrolled)": lambda: [
            validate_unrolled(json.loads(ln)) for ln in lines
        ],
    }
    assert [
        msgspec.to_builtins(s)
        for s in typed["msgspec Decoder(Call).decode per line (strict Struct)"]()
    ] == recs
    assert typed["orjson.loads + hand-written checks (unrolled)"]() == recs
    assert typed["orjson.loads + table-driven checks (loop)"]() == recs

    # Both validators must reject the same bad inputs.
    good = dict(recs[0])
    bad_cases = {
        "bool in int field": {**good, "duration_sec": True},
        "str in int field": {**good, "duration_sec": "12"},
        "int in bool field": {**good, "is_spam": 0},
        "missing key": {k: v for k, v in good.items() if k != "city"},
        "bad list element": {**good, "segment_durations": [1, "2"]},
        "bad nested dict": {
            **good,
            "transfers": [{"from_operator": 1, "to_operator": "x", "at": "", "reason": ""}],
        },
        "null in non-optional str": {**good, "city": None},
    }
    for case, obj in bad_cases.items():
        raw = orjson.dumps(obj)
        for vname, v in (("unrolled", validate_unrolled), ("loop", validate_loop)):
            try:
                v(orjson.loads(raw))
            except ValidationError:
                pass
            else:
                raise AssertionError(f"{vname} accepted {case}")
        try:
            sdec.decode(raw)
        except msgspec.ValidationError:
            pass
        else:
            raise AssertionError(f"msgspec accepted {case}")
    validate_unrolled(orjson.loads(orjson.dumps({**good, "comment": None, "extra": 1})))
    sdec.decode(orjson.dumps({**good, "comment": None, "extra": 1}))

    # ---- run --------------------------------------------------------------
    if args.no_gc:
        gc.collect()
        gc.disable()
    out: list[str] = []
    out.append(
        f"Python {sys.version.split()[0]}, orjson {orjson.__version__}, msgspec "
        f"{msgspec.__version__}; "
        f"1000 records x 60 keys, page = {page_size:,} bytes UTF-8 JSON; "
        f"{args.repeats} repeats x ~{args.min_time}s of thread CPU time, GC "
        f"{'DISABLED' if args.no_gc else 'enabled'}.\n"
    )
    for title, group, base in (
        ("Encode list of 1000 dicts -> UTF-8 bytes", encoders, "orjson.dumps"),
        ("Decode 1000 JSON lines -> dicts", decoders, "orjson.loads per line"),
        (
            "Decode 1000 JSON lines with type validation",
            typed,
            "msgspec Decoder(Call).decode per line (strict Struct)",
        ),
    ):
        res = {}
        for name, f in group.items():
            res[name] = bench(f, args.repeats, args.min_time)
            print(f"  {name}: best {res[name][0] * 1e6:,.0f} us", file=sys.stderr)
        out.append(f"\n#### {title}\n")
        out.append(f"| variant | best µs / 1000 rec | median µs / 1000 rec | vs {base} (best) |")
        out.append("|---|---:|---:|---:|")
        for name, (b, m) in res.items():
            out.append(f"| {name} | {b * 1e6:,.0f} | {m * 1e6:,.0f} | {b / res[base][0]:.2f}x |")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        (args.out.parent / "validate_call_generated.py.txt").write_text(
            validate_unrolled.source + "\n"
        )


if __name__ == "__main__":
    main()
