"""The benchmarks' output: one ``BENCH {json}`` line per figure, printed and, with ``out``,
appended to a ``.jsonl`` file (``bench/summarize.py`` reads them back)."""
from __future__ import annotations

import json


def emit(line, out=None):
    text = "BENCH " + json.dumps(line, sort_keys=True)
    print(text, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")
