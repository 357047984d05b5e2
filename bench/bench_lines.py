"""The benchmarks' output: one ``BENCH {json}`` line per figure, printed and, with ``out``,
appended to a ``.jsonl`` file (``bench/summarize.py`` reads them back)."""
from __future__ import annotations

import json
import os

from scl_amp_tf.provenance import cpu_name, made


def provenance():
    """Where and when a figure was made: the CPU (:func:`cpu_name`), date, the library's commit
    (``+modified`` when its files differ from it): :func:`scl_amp_tf.provenance.made` with the CPU
    alone as the machine."""
    return made(machine=cpu_name())


def emit(line, out=None):
    text = "BENCH " + json.dumps(line, sort_keys=True)
    print(text, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")


def read(path, figure=None):
    """The lines written by :func:`emit` to ``path`` (none if it does not exist), as dicts;
    ``figure``: only those of that figure."""
    rows = []
    if path and os.path.exists(path):
        for line in open(path):
            if line.startswith("BENCH "):
                row = json.loads(line[len("BENCH "):])
                if figure is None or row.get("figure") == figure:
                    rows.append(row)
    return rows


def matches(record, key, defaults=None):
    """Whether a line's fields include ``key``. ``defaults``: fields that must match even where
    ``key`` or the line leaves them out, either side then holding the default (options added after
    lines were written)."""
    defaults = defaults or {}
    return (all(record.get(k, defaults.get(k)) == v for k, v in key.items())
            and all(record.get(k, d) == key.get(k, d) for k, d in defaults.items()))


def written(path, key, defaults=None):
    """Whether ``path`` already holds a line that :func:`matches` ``key`` (a resumable benchmark
    skips that run)."""
    return any(matches(r, key, defaults) for r in read(path))


def exact_accuracy(record):
    """A line's accuracy as correct / num_test: a line holds it rounded to 4 digits, which (under
    10,000 test images) still tells the count of correct images exactly."""
    n = record["num_test"]
    if n >= 10_000:
        raise ValueError(f"{n} test images: 4 digits of accuracy no longer give the count of correct ones")
    return round(record["test_accuracy"] * n) / n
