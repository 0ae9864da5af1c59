#!/usr/bin/env python3
"""Where each update's time went in a `spine` run with SPINE_LOG set.

    SPINE_LOG='warn,postern_operator=debug,postern=debug' \
        target/release/spine 10000 20 2> spine.err
    e2e/bench/spine_stages.py spine.err 10000

Reads the update start times and log paths the benchmark printed, lines
each update up with the operator's and data planes' timing logs, and
prints p50 / mean / max per stage in milliseconds:

  watch            update sent -> the operator's watch saw the input change
  settle           debounce wait (0 unless a burst, or a first compile that
                   refused an object anew and was held)
  inputs           copying the index into compilation inputs
  compile          compile() including sealing (hashing) the snapshot
  encode           the sync frame from the sealed snapshot
  build            inputs -> publishable snapshot, on the blocking pool
  sent             published -> written to the last data plane's socket
  dp_decode        a data plane's JSON decode (the slower of the two)
  dp_apply         a data plane's validate + swap (the slower)
  handled          published -> the last data plane applied it
  seen             last apply -> the benchmark's poll saw both versions
"""
import datetime
import re
import sys

LINE = re.compile(r"(\S+Z)\s+\w+\s+(\S+): (.*)")
UPDATE = re.compile(r"size (\d+): update \d+ \(\S+\) at (\S+)Z took ([\d.]+) ms")
FIELD = re.compile(r"(\w+)=([\d.]+)")


def stamp(text):
    return datetime.datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def load(path):
    out = []
    for line in open(path):
        m = LINE.match(line)
        if m:
            out.append((stamp(m.group(1)), m.group(3)))
    return out


def fields(message):
    return {k: float(v) for k, v in FIELD.findall(message)}


def first(log, after, text):
    return next(((t, m) for t, m in log if t >= after and text in m), None)


def main(err, size):
    day = datetime.date.today().isoformat()
    updates, operator, planes = [], None, []
    for line in open(err):
        m = UPDATE.match(line)
        if m and m.group(1) == size:
            updates.append((stamp(f"{day}T{m.group(2)}"), float(m.group(3))))
        if line.startswith(f"size {size}: operator log "):
            operator = load(line.split(" log ", 1)[1].strip())
        if line.startswith(f"size {size}: data plane log "):
            planes.append(load(line.split(" log ", 1)[1].strip()))
    rows = []
    for start, total in updates:
        watched = first(operator, start, "input changed")
        if not watched:
            continue
        rebuilt = first(operator, watched[0], "rebuilt seq")
        built = first(operator, watched[0], "built snapshot")
        if not rebuilt or not built:
            continue
        published = rebuilt[0]
        sent = [t for t, m in operator if t >= published - 0.001 and "sent snapshot" in m][:2]
        handled = [first(p, published, "snapshot frame handled") for p in planes]
        if None in handled or not sent:
            continue
        r, b = fields(rebuilt[1]), fields(built[1])
        h = [(t, fields(m)) for t, m in handled]
        last = max(t for t, _ in h)
        rows.append({
            "total": total,
            "watch": (watched[0] - start) * 1000,
            "settle": r["settle_ms"],
            "inputs": r["inputs_ms"],
            "compile": b["compile_ms"],
            "encode": b["encode_ms"],
            "build": r["build_ms"],
            "sent": (max(sent) - published) * 1000,
            "dp_decode": max(f["decode_ms"] for _, f in h),
            "dp_apply": max(f["apply_ms"] for _, f in h),
            "handled": (last - published) * 1000,
            "seen": (start + total / 1000 - last) * 1000,
        })
    if not rows:
        sys.exit("no update lined up with the logs: was SPINE_LOG set?")
    print(f"{len(rows)} updates at {size} ProxyTargets (ms)")
    print("| stage | p50 | mean | max |")
    print("|---|---:|---:|---:|")
    for key in rows[0]:
        v = sorted(r[key] for r in rows)
        print(f"| {key} | {v[len(v) // 2]:.1f} | {sum(v) / len(v):.1f} | {v[-1]:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
