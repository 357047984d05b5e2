"""bench/targets.py reads the reproduced tables right: the recipe's mean over the seeds CE also has,
the paired wins, the gap to the target, and the cells not run yet; the ``--report`` tables of
bench/self_training.py and bench/pretrain_few_shot.py pair their runs right; bench/reproduced_tables.py
summarises the reproduced tables right (each table's figure: test accuracy, Table V's class average,
Table IV's few-shot accuracy on backbone features; the paper's recipe over its own seeds; only its
own block rewritten)."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench_module(monkeypatch, name):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))  # as `python bench/NAME.py` has it
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(cell, method, seed, accuracy):
    return {"cell": cell, "method": method, "seed": seed, "test_accuracy": accuracy}


def test_targets_table_from_reproduced_runs(tmp_path, capsys, monkeypatch):
    runs = [_run("20shot", "ce", 0, 0.90), _run("20shot", "ce", 1, 0.94),
            _run("20shot", "scl_amp_recipe", 0, 0.92), _run("20shot", "scl_amp_recipe", 1, 0.93),
            _run("20shot", "scl_amp_recipe", 2, 0.99),  # no CE for seed 2: not paired, left out
            _run("20shot", "scl_amp", 0, 0.50)]
    def conditions(steps):  # as reproduce writes them: the budget's steps, the student's twice them
        return {"settings": {"steps": steps}, "row_settings": {"scl_amp_self_training": {"steps": 2 * steps}}}

    at = {"conditions": conditions(12800)}
    (tmp_path / "table_3.json").write_text(json.dumps({**at, "runs": runs}))
    wafer_runs = [_run("50shot", "ce", 0, 0.80), _run("50shot", "scl_amp_recipe", 0, 0.90),
                  _run("50shot", "scl_amp_self_training", 0, 0.975),
                  _run("20shot", "scl_amp_recipe", 0, 0.99)]  # no CE of this cell yet: not a row of this budget
    (tmp_path / "table_6.json").write_text(json.dumps({**at, "runs": wafer_runs}))
    # kept from earlier budgets: a cell the current table cannot pair comes from the one of the most
    # steps that pairs it (25,600 before 3,200: by number, not by name)
    for steps, accuracy in ((25600, 0.91), (3200, 0.5)):
        earlier = [_run("20shot", "ce", 0, 0.85), _run("20shot", "scl_amp_recipe", 0, accuracy),
                   _run("50shot", "ce", 0, 0.1), _run("50shot", "scl_amp_recipe", 0, 0.2)]  # not read
        if steps == 3200:  # the self-training row only there
            earlier.append(_run("20shot", "scl_amp_self_training", 0, 0.95))
        (tmp_path / f"table_6_{steps}steps.json").write_text(json.dumps({"conditions": conditions(steps),
                                                                         "runs": earlier}))
    (tmp_path / "table_6_cpu-3200steps.json").write_text("not a kept table")  # not table_6_<number>steps.json
    demo = tmp_path / "demo.jsonl"
    demo.write_text("\n".join("BENCH " + json.dumps(r) for r in [
        {"figure": "accuracy", "tag": "t", "method": "scl_amp", "seed": 0, "test_accuracy": 0.80, "epochs": 15},
        {"figure": "accuracy", "tag": "t", "method": "scl_amp", "seed": 1, "test_accuracy": 0.70},
        {"figure": "accuracy", "tag": "t", "method": "ce", "seed": 0, "test_accuracy": 0.60},
        {"figure": "accuracy", "tag": "t", "method": "ce", "seed": 1, "test_accuracy": 0.75},
        {"figure": "accuracy", "tag": "other", "method": "scl_amp", "seed": 2, "test_accuracy": 0.99}]) + "\n")

    targets = _bench_module(monkeypatch, "targets")
    targets.main(["--results", str(tmp_path), "--demo_lines", str(demo), "--demo_tag", "t"])
    lines = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()}

    # recipe seeds 0, 1: mean 92.5, sample std 0.707; CE 92.0 ± 2.83; 1 of 2 better; 95 - 92.5 = -2.5
    assert lines["NEU, 20 / class"] == (
        "| NEU, 20 / class | 95.0 | 12,800 | 92.50 ± 0.71 | -2.50 | 92.00 ± 2.83 | 1 of 2 | 0,1 |")
    assert "not run yet" in lines["NEU, 10 / class"]
    assert lines["MixedWM38 (89 % copy), 20 / class"] == (  # not paired in table_6.json: from the 25,600-step one
        "| MixedWM38 (89 % copy), 20 / class | 92.3 | 25,600 | 91.00 | -1.30 | 85.00 | 1 of 1 | 0 |")
    assert lines["MixedWM38 (89 % copy), 20 / class, + self-training on the unlabeled maps"] == (
        "| MixedWM38 (89 % copy), 20 / class, + self-training on the unlabeled maps | 92.3 | 6,400 (teacher 3,200) | "
        "95.00 | +2.70 | 85.00 | 1 of 1 | 0 |")
    assert lines["MixedWM38 (89 % copy), 50 / class"] == (
        "| MixedWM38 (89 % copy), 50 / class | 96.9 | 12,800 | 90.00 | -6.90 | 80.00 | 1 of 1 | 0 |")
    # the self-training row only where it was run
    assert lines["MixedWM38 (89 % copy), 50 / class, + self-training on the unlabeled maps"] == (
        "| MixedWM38 (89 % copy), 50 / class, + self-training on the unlabeled maps | 96.9 | 25,600 (teacher 12,800) | "
        "97.50 | +0.60 | "
        "80.00 | 1 of 1 | 0 |")
    assert not any("self-training" in key for key in lines if "NEU" in key)
    assert lines["demo (`configs/demo.cfg`)"] == (
        "| demo (`configs/demo.cfg`) | 90.0 in 180 s | 15 epochs | 75.00 ± 7.07 | -15.00 | 67.50 ± 10.61 | 1 of 2 "
        "| 0,1 |")


def test_update_rewrites_only_the_targets_block(tmp_path, capsys, monkeypatch):
    (tmp_path / "table_3.json").write_text(json.dumps({"conditions": {"settings": {"steps": 12800}}, "runs": [
        _run("20shot", "ce", 0, 0.90), _run("20shot", "scl_amp_recipe", 0, 0.95)]}))
    start, end = "<!-- targets-start -->", "<!-- targets-end -->"
    doc, crlf = tmp_path / "DOC.md", tmp_path / "CRLF.md"
    doc.write_text(f"before\n{start}\n| stale | table |\n{end}\nmiddle\n<!-- targets-end-old -->\nafter\n")
    crlf.write_bytes(f"a\r\n{start}\r\nstale\r\n{end}\r\nb\r\n".encode())
    targets = _bench_module(monkeypatch, "targets")
    args = ["--results", str(tmp_path), "--demo_lines", str(tmp_path / "none.jsonl")]
    targets.main(args + ["--update", str(doc), str(crlf)])
    text = doc.read_text()
    assert text.startswith(f"before\n{start}\n| cell | target % |")
    assert text.endswith(f"|\n{end}\nmiddle\n<!-- targets-end-old -->\nafter\n")  # only the block changes
    assert "stale" not in text
    assert "| NEU, 20 / class | 95.0 | 12,800 | 95.00 | +0.00 | 90.00 | 1 of 1 | 0 |\n" in text
    raw = crlf.read_bytes()
    assert raw.startswith(f"a\r\n{start}\r\n| cell |".encode()) and raw.endswith(f"|\r\n{end}\r\nb\r\n".encode())
    assert b"stale" not in raw and raw.count(b"\n") == raw.count(b"\r\n")  # the file's line endings kept
    capsys.readouterr()
    targets.main(args)  # the printed table is the block's
    assert capsys.readouterr().out in text
    targets.main(args + ["--update", str(doc)])  # idempotent
    assert capsys.readouterr().out.strip().endswith("DOC.md: unchanged") and doc.read_text() == text
    # a missing, doubled or stray marker, or the markers swapped: an error, and no file changes
    for bad in ("no markers\n", f"{start}\n{end}\n{start}\n{end}\n", f"{start}\n{start}\n{end}\n",
                f"{start}\n{end}\n{end}\n", f"{end}\n{start}\n"):
        (tmp_path / "BAD.md").write_text(bad)
        doc.write_text(f"{start}\nstale\n{end}\n")
        with pytest.raises(SystemExit, match="markers; expected one of each"):
            targets.main(args + ["--update", str(doc), str(tmp_path / "BAD.md")])
        assert "stale" in doc.read_text() and (tmp_path / "BAD.md").read_text() == bad


def test_self_training_report_from_bench_lines(monkeypatch):
    module = _bench_module(monkeypatch, "self_training")

    def line(row, seed, correct, **extra):  # accuracies as the bench writes them: rounded to 4 digits
        return {"figure": "accuracy", "row": row, "seed": seed, "num_test": 6765,
                "test_accuracy": round(correct / 6765, 4), **extra}

    student = dict(ratio=4.0, pool=26290, pseudo_labels=3040)
    lines = [line("ce", 0, 5775), line("scl_amp_recipe", 0, 6133),
             line("self_training", 0, 6229, pseudo_label_precision=0.9852, **student),
             line("self_training", 0, 6300, pseudo_label_precision=0.97, **{**student, "ratio": 8.0}),
             line("ce", 1, 5941), line("scl_amp_recipe", 1, 6178),
             line("self_training", 1, 6226, pseudo_label_precision=0.9799, **student),
             line("self_training", 0, 6210, pseudo_label_precision=0.979, round=2, **student),
             line("self_training", 0, 6250, pseudo_label_precision=0.98, student_steps=6400, **student),
             line("ce", 2, 5700),  # seed 2 has no teacher or student yet: left out
             # another budget's runs (the lines above, without the field, were made at 3,200 steps)
             *(line(row, 0, correct, budget_steps=12800, **extra) for row, correct, extra in (
                 ("ce", 6000, {}), ("scl_amp_recipe", 6200, {}),
                 ("self_training", 6280, dict(pseudo_label_precision=0.99, **student)))),
             # a budget of epochs (--budget=paper) writes budget_steps None: not the 3,200-step lines
             *(line(row, 1, correct, budget_steps=None, **extra) for row, correct, extra in (
                 ("ce", 5000, {}), ("scl_amp_recipe", 5100, {}),
                 ("self_training", 5200, dict(pseudo_label_precision=0.9, **student))))]
    rows = module.report(lines, 4.0).splitlines()
    assert rows[0].endswith("| pseudo-labels (of 26,290) | their precision |") and len(rows) == 5
    assert rows[2] == "| 0 | 85.37 | 90.66 | **92.08** | +1.42 | 3,040 | 98.5 % |"
    assert rows[3] == "| 1 | 87.82 | 91.32 | **92.03** | +0.71 | 3,040 | 98.0 % |"
    # mean and sample std of the exact percentages (correct / 6765), written out by hand here
    ce = [100 * 5775 / 6765, 100 * 5941 / 6765]
    gain = [100 * (6229 - 6133) / 6765, 100 * (6226 - 6178) / 6765]
    assert rows[4].startswith("| mean ± sample std (seeds 0, 1) | "
                              f"{sum(ce) / 2:.2f} ± {abs(ce[0] - ce[1]) / 2 ** 0.5:.2f} | ")
    assert f"| {sum(gain) / 2:+.2f} ± {abs(gain[0] - gain[1]) / 2 ** 0.5:.2f} |" in rows[4]
    assert module.report(lines[:2], 4.0) == "no seed has its CE, teacher and student lines yet"
    # the second round's and the longer student's columns: only seed 0 has them
    assert module.report(lines, 4.0, round_=2).splitlines()[2:] == [
        "| 0 | 85.37 | 90.66 | **91.80** | +1.14 | 3,040 | 97.9 % |"]
    assert module.report(lines, 4.0, student_steps=6400).splitlines()[2:] == [
        "| 0 | 85.37 | 90.66 | **92.39** | +1.73 | 3,040 | 98.0 % |"]
    assert module.report(lines, 4.0, budget_steps=12800).splitlines()[2:] == [
        "| 0 | 88.69 | 91.65 | **92.83** | +1.18 | 3,040 | 99.0 % |"]
    assert module.report(lines, 4.0, budget_steps=None).splitlines()[2:] == [
        "| 1 | 73.91 | 75.39 | **76.87** | +1.48 | 3,040 | 90.0 % |"]


def test_written_lines_match_the_defaults_a_key_leaves_out(tmp_path, monkeypatch):
    bench_lines = _bench_module(monkeypatch, "bench_lines")
    path = tmp_path / "lines.jsonl"
    bench_lines.emit({"row": "self_training", "seed": 0, "round": 2}, str(path))
    defaults = {"round": 1, "student_steps": None}
    assert bench_lines.written(str(path), {"row": "self_training", "seed": 0})  # no defaults: any round
    assert not bench_lines.written(str(path), {"row": "self_training", "seed": 0}, defaults)  # round 1
    assert bench_lines.written(str(path), {"row": "self_training", "seed": 0, "round": 2}, defaults)
    assert not bench_lines.written(str(path), {"row": "self_training", "seed": 0, "round": 2, "student_steps": 9},
                                   defaults)
    # a key that spells a default out matches a line that leaves it out
    assert bench_lines.written(str(path), {"row": "self_training", "seed": 0, "round": 2, "student_steps": None},
                               defaults)


def _pretrain_line(method, seed, correct, init=None, pretrain_steps=None, steps=1600, extra=None):
    row = {"figure": "accuracy", "method": method, "seed": seed, "steps": steps, "extra": extra or {},
           "num_test": 900, "test_accuracy": round(correct / 900, 4)}
    if init:
        row["init"] = init
    if pretrain_steps:
        row["pretrain_steps"] = pretrain_steps
    return row


def test_pretrain_report_pairs_scratch_and_pretrained_by_seed(monkeypatch):
    module = _bench_module(monkeypatch, "pretrain_few_shot")
    records = [
        _pretrain_line("scl_amp", 0, 800, "scratch"), _pretrain_line("scl_amp", 0, 810, "pretrained", 4800),
        _pretrain_line("scl_amp", 1, 820, "scratch"), _pretrain_line("scl_amp", 1, 811, "pretrained", 4800),
        _pretrain_line("scl_amp", 2, 830, "pretrained", 4800),  # no scratch run for seed 2: left out
        {**_pretrain_line("scl_amp", 2, 700, "scratch"), "dataset": "other"},  # another split: no pair either
        _pretrain_line("scl_amp", 0, 850, None, 2400),  # a line from before --inits: pre-trained
        _pretrain_line("ce", 0, 700, "scratch", extra={"stem": "auto"}),
        _pretrain_line("ce", 0, 900, "pretrained", 4800),  # other settings than the scratch CE: no pair
        {**_pretrain_line("scl_amp", 0, 820, "pretrained+self_training", 4800), "self_training_ratio": 4.0},
        {**_pretrain_line("scl_amp", 1, 830, "pretrained+self_training", 4800), "self_training_ratio": 4.0},
        {"figure": "pretrain", "seed": 0, "steps": 4800, "pool_images": 900, "epochs": 171, "seconds": 612.4,
         "test_accuracy": 0.5},
    ]
    lines = module.report(records).splitlines()
    body = [line for line in lines if line.startswith("| scl_amp") or line.startswith("| ce")]
    assert body == [
        "| scl_amp | {} | 1600 | pretrained | 2400 | 0 | 88.89 | 94.44 | +5.56 |",
        "| scl_amp | {} | 1600 | pretrained | 4800 | 0 | 88.89 | 90.00 | +1.11 |",
        "| scl_amp | {} | 1600 | pretrained | 4800 | 1 | 91.11 | 90.11 | -1.00 |",
        "| scl_amp | {} | 1600 | pretrained | 4800 | mean ± sample std | 90.00 ± 1.57 | 90.06 ± 0.08 | "
        "+0.06 ± 1.49 (1 of 2 seeds better) |",
        # the students of --self_training_ratio: their own rows, against the same scratch runs
        "| scl_amp | {} | 1600 | pretrained+self_training (ratio 4) | 4800 | 0 | 88.89 | 91.11 | +2.22 |",
        "| scl_amp | {} | 1600 | pretrained+self_training (ratio 4) | 4800 | 1 | 91.11 | 92.22 | +1.11 |",
        "| scl_amp | {} | 1600 | pretrained+self_training (ratio 4) | 4800 | mean ± sample std | 90.00 ± 1.57 | "
        "91.67 ± 0.79 | +1.67 ± 0.79 (2 of 2 seeds better) |",
    ]
    assert "| 4800 | 0 | 900 | 171 | 612 | 50.00 |" in lines

def _steps_conditions(steps):
    return {"settings": {"steps": steps}}


def _class_run(method, seed, accuracies):
    return {"cell": "80pct", "method": method, "seed": seed, "test_accuracy": 0.5,  # not Table V's figure
            "per_class_accuracy": dict(zip(["A", "B", "C"], accuracies))}


def _few_shot_run(method, seed, backbone_k1, embedding_k1):
    def entry(k1):
        return {"accuracy_k1": k1, "accuracy_k3": [0.5], "accuracy_k5": [0.6]}
    return {"cell": "base_In_Pa_RS", "method": method, "seed": seed, "test_accuracy": None,
            "few_shot": {"representations": {"backbone": entry(backbone_k1), "embedding": entry(embedding_k1)}}}


def test_summary_rows_from_reproduced_runs(tmp_path, capsys, monkeypatch):
    (tmp_path / "table_2.json").write_text(json.dumps({"conditions": _steps_conditions(12800), "runs": [
        _run("60pct", "ce", 0, 0.90), _run("60pct", "ce", 1, 0.94), _run("60pct", "ce", 2, 0.80),
        _run("60pct", "scl_amp_recipe", 0, 0.92), _run("60pct", "scl_amp_recipe", 1, 0.93),  # no seed 2
        _run("60pct", "scl_amp", 0, 0.70),
        _run("70pct", "scl_amp_recipe", 0, 0.99)]}))  # no CE in 70pct at 12,800: the 3,200-step table's
    (tmp_path / "table_2_3200steps.json").write_text(json.dumps({"conditions": _steps_conditions(3200), "runs": [
        _run("70pct", "ce", 0, 0.96), _run("70pct", "scl_amp_recipe", 0, 0.95)]}))
    (tmp_path / "table_5.json").write_text(json.dumps({"conditions": _steps_conditions(12800), "runs": [
        _class_run("ce", 0, [1.0, 0.9, 0.8]), _class_run("scl_amp_recipe", 0, [1.0, 1.0, 0.7]),
        _class_run("scl_amp", 0, [0.6, 0.6, 0.6])]}))
    (tmp_path / "table_4.json").write_text(json.dumps({"conditions": _steps_conditions(12800), "runs": [
        _few_shot_run("ce", 0, [0.6, 0.8], [0.0]), _few_shot_run("scl_amp_recipe", 0, [0.9, 0.8], [0.1]),
        _few_shot_run("ce", 1, [0.7], [0.0]), _few_shot_run("scl_amp_recipe", 1, [0.6], [1.0])]}))

    summary = _bench_module(monkeypatch, "reproduced_tables")
    summary.main(["--results", str(tmp_path)])
    rows = {tuple(line.split(" | ")[:2]): line for line in capsys.readouterr().out.splitlines()}

    # seeds 0, 1 paired: recipe 92.5 ± 0.71, CE 92.0 ± 2.83, 1 of 2; the paper's recipe over its own seed 0
    assert rows[("| II", "NEU, 60 % of each class")] == (
        "| II | NEU, 60 % of each class | 12,800 | 92.00 ± 2.83 | 70.00 (seeds 0) | 92.50 ± 0.71 | 1 of 2 | 0,1 "
        "| 99.58 / - |")
    assert rows[("| II", "NEU, 70 % of each class")] == (  # from the earlier budget, which pairs it
        "| II | NEU, 70 % of each class | 3,200 | 96.00 | not run yet | 95.00 | 0 of 1 | 0 | 99.81 / - |")
    assert rows[("| II", "NEU, 80 % of each class")] == (
        "| II | NEU, 80 % of each class | | not run yet | | | | | 100.00 / - |")
    # class averages 90.0, 90.0, 60.0: the recipe does not beat CE on a tie
    assert rows[("| V", "MixedWM38, 80 % of each class (class average)")] == (
        "| V | MixedWM38, 80 % of each class (class average) | 12,800 | 90.00 | 60.00 | 90.00 | 0 of 1 | 0 "
        "| 98.22 / - |")
    # per seed, the mean of its episodes on backbone features (not embeddings): CE 70, 70; recipe 85, 60
    assert rows[("| IV", "NEU, unseen classes, k = 1 (backbone features)")] == (
        "| IV | NEU, unseen classes, k = 1 (backbone features) | 12,800 | 70.00 ± 0.00 | not run yet "
        "| 72.50 ± 17.68 | 1 of 2 | 0,1 | 82.16 / - |")
    assert rows[("| IV", "NEU, unseen classes, k = 5 (backbone features)")] == (  # a tie is no win
        "| IV | NEU, unseen classes, k = 5 (backbone features) | 12,800 | 60.00 ± 0.00 | not run yet "
        "| 60.00 ± 0.00 | 0 of 2 | 0,1 | 86.29 / - |")
    assert rows[("| VI", "MixedWM38, 20 maps / class")].endswith("| not run yet | | | | | 92.27 / 55.36 |")


def test_update_rewrites_only_its_own_block(tmp_path, capsys, monkeypatch):
    (tmp_path / "table_3.json").write_text(json.dumps({"conditions": _steps_conditions(12800), "runs": [
        _run("20shot", "ce", 0, 0.90), _run("20shot", "scl_amp_recipe", 0, 0.95)]}))
    targets_block = "<!-- targets-start -->\nkept\n<!-- targets-end -->\n"
    doc = tmp_path / "DOC.md"
    doc.write_text(f"a\n{targets_block}<!-- reproduced-start -->\nstale\n<!-- reproduced-end -->\nb\n")
    summary = _bench_module(monkeypatch, "reproduced_tables")
    summary.main(["--results", str(tmp_path), "--update", str(doc)])
    text = doc.read_text()
    assert text.startswith(f"a\n{targets_block}<!-- reproduced-start -->\n| table | cell |")
    assert text.endswith("|\n<!-- reproduced-end -->\nb\n") and "stale" not in text
    assert ("| III | NEU, 20 images / class | 12,800 | 90.00 | not run yet | 95.00 | 1 of 1 | 0 "
            "| 98.83 / 97.72 |\n") in text
    doc.write_text("<!-- targets-start -->\n<!-- targets-end -->\n")  # no block of its own: an error, no change
    with pytest.raises(SystemExit, match="0 <!-- reproduced-start -->"):
        summary.main(["--results", str(tmp_path), "--update", str(doc)])
    assert doc.read_text() == "<!-- targets-start -->\n<!-- targets-end -->\n"
