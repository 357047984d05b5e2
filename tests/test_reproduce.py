"""Reproduction of the paper's tables end to end with tiny budgets: the result files have the
expected rows, finished runs are skipped, the few-shot table uses unseen classes only."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from scl_amp_tf import reproduce, tables

TINY = {"epochs": 1, "image_size": 32, "batch_size": 16}


@pytest.fixture(scope="module")
def neu_like(tmp_path_factory):
    """A folder with NEU's six class names, 12 small gray images each (a pattern per class)."""
    root = tmp_path_factory.mktemp("neu_like")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("Cr", "In", "PS", "Pa", "RS", "Sc")):
        (root / name).mkdir()
        for i in range(12):
            image = rng.integers(0, 60, (40, 40)).astype(np.uint8)
            image[:, (c * 6):(c * 6) + 5] += 150  # a bright stripe whose place tells the class
            Image.fromarray(image, "L").save(root / name / f"{name}_{i}.png")
    return f"folder:{root}"


def _run(table, tmp_path, log=None, **kwargs):
    lines = [] if log is None else log
    path = reproduce.run_table(table, [0], "cpu", str(tmp_path), overrides=dict(TINY), log=lines.append,
                               **kwargs)
    return path, lines


def test_table_3_rows_json_and_resume(neu_like, tmp_path):
    path, log = _run(3, tmp_path, cells=["10shot"], neu=neu_like)
    text = open(path).read()
    row = next(line for line in text.splitlines() if line.startswith("| 10 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "98.39" and cells[4] == "93.89"  # the paper's figures beside ours
    assert cells[-1] == "0"
    assert "## Conditions" in text and "resnet_tiny" in text and "image folder" in text
    result = json.load(open(tmp_path / "table_3.json"))
    accuracy = {r["method"]: r["test_accuracy"] for r in result["runs"]}
    # One seed: each method's accuracy in % alone, no ± spread.
    assert (cells[1], cells[3]) == (f"{100 * accuracy['scl_amp']:.2f}", f"{100 * accuracy['ce']:.2f}")
    assert {(r["method"], r["seed"], r["cell"]) for r in result["runs"]} == {("scl_amp", 0, "10shot"),
                                                                             ("ce", 0, "10shot")}
    assert all(r["num_train"] == 60 and r["num_test"] == 12 for r in result["runs"])
    assert sum("training" in line for line in log) == 2
    # a second call finds both runs finished and trains nothing
    _, again = _run(3, tmp_path, cells=["10shot"], neu=neu_like)
    assert sum("finished earlier" in line for line in again) == 2 and not any("training" in l for l in again)
    assert open(path).read().split("## Conditions")[0] == text.split("## Conditions")[0]


def test_table_4_few_shot_on_unseen_classes(neu_like, tmp_path):
    path, _ = _run(4, tmp_path, neu=neu_like, episodes=4)
    text = open(path).read()
    for k in (1, 3, 5):
        assert any(line.startswith(f"| k = {k} |") and line.rstrip().endswith(
            {1: "82.16 |", 3: "84.53 |", 5: "86.29 |"}[k]) for line in text.splitlines())
    assert "AUROC" in text
    run = next(r for r in json.load(open(tmp_path / "table_4.json"))["runs"] if r["method"] == "scl_amp")
    few = run["few_shot"]
    assert few["novel_classes"] == ["Cr", "PS", "Sc"] and run["num_train"] == 36 and run["num_test"] == 0
    assert set(few["representations"]) == {"embedding", "backbone"}
    assert len(few["representations"]["embedding"]["accuracy_k5"]) == 4
    assert os.path.exists(os.path.join(run["model_dir"], "few_shot.json"))


def test_table_5_has_every_class_and_the_group_averages(tmp_path):
    path, _ = _run(5, tmp_path, mixed_wm38="synthetic_wafers", synthetic_per_class=5)
    lines = open(path).read().splitlines()
    class_rows = [l for l in lines if l.startswith("| C") and "(" in l.split("|")[1]]
    assert len(class_rows) == 38 and class_rows[0].startswith("| C1 (Normal) |")
    assert class_rows[0].rstrip().endswith("| 100.00 |") and class_rows[8].rstrip().endswith("| 96.10 |")
    groups = [l for l in lines if l.startswith("| **average")]
    assert [g.split("|")[-2].strip() for g in groups] == ["98.86", "98.69", "97.69", "96.88", "98.22"]
    assert "SYNTHETIC" in open(path).read()


def test_report_only_and_bad_arguments(tmp_path, neu_like):
    with pytest.raises(ValueError, match="no finished run"):
        reproduce.run_table(3, [0], "cpu", str(tmp_path), report_only=True, log=lambda _: None, neu=neu_like)
    with pytest.raises(ValueError, match="has the cells 10shot, 20shot, 50shot"):
        reproduce.run_table(3, [0], "cpu", str(tmp_path), cells=["7shot"], log=lambda _: None)
    with pytest.raises(ValueError, match="--methods"):
        reproduce.run_table(3, [0], "cpu", str(tmp_path), methods=["svm"], log=lambda _: None)
    with pytest.raises(ValueError, match="key=value"):
        reproduce.parse_settings(["epochs"])
    with pytest.raises(ValueError, match="not model_dir, seed or method"):
        reproduce.parse_settings(["seed=3"])
    assert reproduce.parse_settings(["epochs=3", "symmetric=True", "backbone=resnet18"]) == {
        "epochs": 3, "symmetric": True, "backbone": "resnet18"}


def test_budget_epochs_follow_the_step_rule():
    cell = tables.TABLES[3][2][0]  # 10 per class: 60 images, 2 steps of 32 per epoch
    options = {"neu": "synthetic_wafers", "mixed_wm38": "synthetic_wafers", "neu_manual_dir": None,
               "wm38_manual_dir": None, "data_dir": None, "synthetic_per_class": 12, "runs_dir": "/tmp/x",
               "table": 3}
    config = reproduce.run_config(cell, "scl_amp", 0, "cpu", {}, options)  # 38 classes x 10 = 380 images
    capped = reproduce.budget_epochs(config, "cpu", {})
    assert capped.epochs == 34  # ceil(400 / ceil(380 / 32)) = ceil(400 / 12)
    assert reproduce.budget_epochs(config, "cpu", {"epochs": 3}).epochs == config.epochs == 100
    assert reproduce.budget_epochs(config, "paper", {}).epochs == 100
