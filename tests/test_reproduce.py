"""Reproduction of the paper's tables end to end with tiny budgets: the result files have the
expected rows, finished runs are skipped, the few-shot table uses unseen classes only."""
import json
import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from scl_amp_tf import recipes, reproducing, table_markdown, tables, train_config

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


def _run(table, tmp_path, log=None, overrides=TINY, **kwargs):
    lines = [] if log is None else log
    path = reproducing.run_table(table, [0], "cpu", str(tmp_path), overrides=dict(overrides), log=lines.append,
                               **kwargs)
    return path, lines


# A step budget, as the cpu budget has: 8 steps of batch 16 over 60 training images are 2 epochs.
TINY_STEPS = {"steps": 8, "image_size": 32, "batch_size": 16}


def test_table_3_rows_json_and_resume(neu_like, tmp_path):
    path, log = _run(3, tmp_path, cells=["10shot"], neu=neu_like, overrides=TINY_STEPS)
    text = open(path).read()
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in text.splitlines() if line.startswith("| 10 |"))}
    assert list(rows) == ["CE baseline", "SCL-AMP, paper's recipe", "SCL-AMP, recommended recipe"]
    # the paper's figures beside ours: its CE beside CE, its SCL-AMP beside both SCL-AMP rows
    assert [rows[m][3] for m in rows] == ["93.89", "98.39", "98.39"]
    assert all(rows[m][-1] == "0" for m in rows)
    assert "## Conditions" in text and "resnet_tiny" in text and "image folder" in text
    from scl_amp_tf import provenance

    # each run records where and when it was made; the table names them and where it was written
    made = {json.dumps(r["made"], sort_keys=True) for r in json.load(open(tmp_path / "table_3.json"))["runs"]}
    assert len(made) == 1 and json.loads(made.pop())["machine"] == provenance.hardware()
    # ...and the code: this checkout's commit, as git names it (None outside a git checkout)
    commit = json.load(open(tmp_path / "table_3.json"))["runs"][0]["made"]["commit"]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(provenance.__file__)).stdout.strip()
    if head:
        assert commit.split("+")[0] == head and f"code of the runs: {commit}" in text
    else:
        assert commit is None and "code of the runs" not in text
    # and the one session that trained each, in the table's record of the run (none was resumed)
    for run in json.load(open(tmp_path / "table_3.json"))["runs"]:
        (only,) = run["training_sessions"]
        assert only["machine"] == provenance.hardware() and only["epochs"] == [1, run["epochs"]]
        assert run["train_seconds"] == only["seconds"] > 0
    assert "trained on more than one machine" not in text
    conditions = json.load(open(tmp_path / "table_3.json"))["conditions"]
    assert f"* Hardware of the runs: {provenance.hardware()}; dates of the runs: " in text
    assert f"table written on {conditions['machine']}, {conditions['date']}." in text
    assert "(`--method=scl_amp --arc_on_views=True --crop_scale_min=auto --stem=auto --lr_schedule=cosine`)" in text
    assert "(`--method=scl_amp`)" in text
    assert "(`--method=ce --crop_scale_min=auto --stem=auto --lr_schedule=cosine`)" in text
    result = json.load(open(tmp_path / "table_3.json"))
    accuracy = {r["method"]: r["test_accuracy"] for r in result["runs"]}
    # One seed: each method's accuracy in % alone, no ± spread; the paired difference to CE.
    for key, name in (("ce", "CE baseline"), ("scl_amp", "SCL-AMP, paper's recipe"),
                      ("scl_amp_recipe", "SCL-AMP, recommended recipe")):
        assert rows[name][2] == f"{100 * accuracy[key]:.2f}"
        if key != "ce":
            difference = 100 * (accuracy[key] - accuracy["ce"])
            assert rows[name][5] == f"{difference:.2f} ({int(difference > 0)} of 1 seeds better)"
    assert rows["CE baseline"][4] == rows["CE baseline"][5] == "-"
    assert {(r["method"], r["seed"], r["cell"]) for r in result["runs"]} == {
        ("scl_amp", 0, "10shot"), ("ce", 0, "10shot"), ("scl_amp_recipe", 0, "10shot")}
    assert all(r["num_train"] == 60 and r["num_test"] == 12 for r in result["runs"])
    # each row trained with its own settings
    settings = {r["method"]: json.load(open(os.path.join(r["model_dir"], "config.json"))) for r in result["runs"]}
    assert settings["scl_amp_recipe"]["arc_on_views"] and not settings["scl_amp"]["arc_on_views"]
    for key in ("crop_scale_min", "stem"):  # fitted to the images: CE and the recipe alike
        assert settings["scl_amp_recipe"][key] == settings["ce"][key] == "auto"
    assert settings["scl_amp"]["crop_scale_min"] == 0.25 and settings["scl_amp"]["stem"] == "imagenet"
    assert settings["ce"]["method"] == "ce"
    # predict's scores for a CE run are the softmax of its classifier's logits
    import keras

    from scl_amp_tf import run_folder
    from scl_amp_tf.predicting import RunPredictor

    ce_dir = next(r["model_dir"] for r in result["runs"] if r["method"] == "ce")
    _, _, test_data = run_folder.load_run(ce_dir)
    logits = keras.models.load_model(os.path.join(ce_dir, run_folder.ENCODER)).predict(
        test_data.images / np.float32(255), verbose=0)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    assert RunPredictor(ce_dir).scores(test_data.images) == pytest.approx(
        expected / expected.sum(1, keepdims=True), abs=1e-5)
    assert sum(": training (" in line for line in log) == 3
    # the epochs the step budget gave, whether the run was trained in this call or earlier
    assert "epochs per run: 10shot: 2." in text
    assert all(r["epochs"] == 2 and r["steps"] == 8 for r in result["runs"])
    # a second call finds every run finished and trains nothing
    _, again = _run(3, tmp_path, cells=["10shot"], neu=neu_like, overrides=TINY_STEPS)
    assert sum("finished earlier" in line for line in again) == 3 and not any(": training (" in line for line in again)
    assert open(path).read() == text
    # a finished run made with other settings (here: the recipe changed since) is an error, not kept
    recipe_config = os.path.join(next(r["model_dir"] for r in result["runs"] if r["method"] == "scl_amp_recipe"),
                                 "config.json")
    changed = {**json.load(open(recipe_config)), "arc_on_views": False}
    json.dump(changed, open(recipe_config, "w"))
    with pytest.raises(ValueError, match="arc_on_views: False there vs True now"):
        _run(3, tmp_path, cells=["10shot"], neu=neu_like, overrides=TINY_STEPS)


def test_set_is_what_the_conditions_say_each_row_trained_with(neu_like, tmp_path):
    """--set wins over a row's own settings, in the runs and in the table's conditions."""
    path, _ = _run(3, tmp_path, cells=["10shot"], neu=neu_like, methods=("ce",),
                   overrides={**TINY_STEPS, "steps": 2, "lr_schedule": "constant"})
    text = open(path).read()  # CE's row has lr_schedule=cosine of its own (the test above)
    assert "(`--method=ce --crop_scale_min=auto --stem=auto --lr_schedule=constant`)" in text
    assert "cosine" not in text
    result = json.load(open(tmp_path / "table_3.json"))
    assert result["conditions"]["row_settings"]["ce"]["lr_schedule"] == "constant"
    assert {json.load(open(os.path.join(r["model_dir"], "config.json")))["lr_schedule"]
            for r in result["runs"]} == {"constant"}


@pytest.mark.slow
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


@pytest.mark.slow
def test_table_5_has_every_class_and_the_group_averages(tmp_path):
    path, _ = _run(5, tmp_path, mixed_wm38="synthetic_wafers", synthetic_per_class=5)
    lines = open(path).read().splitlines()
    class_rows = [line for line in lines if line.startswith("| C") and "(" in line.split("|")[1]]
    assert len(class_rows) == 38 and class_rows[0].startswith("| C1 (Normal) |")
    assert class_rows[0].rstrip().endswith("| 100.00 |") and class_rows[8].rstrip().endswith("| 96.10 |")
    groups = [line for line in lines if line.startswith("| **average")]
    assert [g.split("|")[-2].strip() for g in groups] == ["98.86", "98.69", "97.69", "96.88", "98.22"]
    assert "SYNTHETIC" in open(path).read()


def test_self_training_row_trains_its_teacher_first_and_only_where_a_pool_is(tmp_path, neu_like):
    """Table VI's cells hold out a test set, so the images beside the k shots are a pool: the
    self-training row's teacher (the recommended recipe's run) is trained, then the student from it."""
    path, log = _run(6, tmp_path, cells=["20shot"], methods=["scl_amp_self_training"], overrides=TINY_STEPS,
                     mixed_wm38="synthetic_wafers", synthetic_per_class=30)
    trained = [line.split(":")[0] for line in log if ": training" in line]
    assert trained == ["table 6 20shot scl_amp_recipe seed 0", "table 6 20shot scl_amp_self_training seed 0"]
    runs = json.load(open(tmp_path / "table_6.json"))["runs"]
    assert [r["method"] for r in runs] == ["scl_amp_self_training"]  # the teacher trains, its row is not asked for
    metrics = json.load(open(os.path.join(runs[0]["model_dir"], "metrics.json")))
    teacher_dir = runs[0]["model_dir"].replace("scl_amp_self_training_seed0", "scl_amp_recipe_seed0")
    assert metrics["pseudo_labels"]["teacher"] == teacher_dir
    assert os.path.exists(os.path.join(teacher_dir, "encoder.keras"))
    # 30 maps per class: 6 test maps, 20 shots, 4 in the pool; 4 x 20 allowed, so every pool map is taken
    assert metrics["pseudo_labels"]["pool"] == 38 * 4 == metrics["pseudo_labels"]["count"]
    assert metrics["fit_images"] == 38 * 24
    assert "| 20 | SCL-AMP, recommended recipe + self-training |" in open(path).read()
    # --set steps (8) wins over the row's factor, and the conditions say which steps the row trained
    assert json.load(open(tmp_path / "table_6.json"))["conditions"]["row_settings"]["scl_amp_self_training"][
        "steps"] == 8
    assert runs[0]["teacher"] == teacher_dir and runs[0]["teacher_elsewhere"] is False
    assert "outside this table" not in open(path).read()
    # a finished student of other steps is not kept as the row's run, even to report the table
    metrics["steps"] = 4
    with open(os.path.join(runs[0]["model_dir"], "metrics.json"), "w") as f:
        json.dump(metrics, f)
    with pytest.raises(ValueError, match="finished with 4 steps, but this row trains 8"):
        _run(6, tmp_path, cells=["20shot"], methods=["scl_amp_self_training"], overrides=TINY_STEPS,
             mixed_wm38="synthetic_wafers", synthetic_per_class=30, report_only=True)
    # nor a teacher of other steps for a student still to train, although its row is not asked for
    os.remove(os.path.join(runs[0]["model_dir"], "metrics.json"))
    teacher_metrics = json.load(open(os.path.join(teacher_dir, "metrics.json")))
    with open(os.path.join(teacher_dir, "metrics.json"), "w") as f:
        json.dump({**teacher_metrics, "steps": 4}, f)
    with pytest.raises(ValueError, match=re.escape(f"{teacher_dir} is finished with 4 steps")):
        _run(6, tmp_path, cells=["20shot"], methods=["scl_amp_self_training"], overrides=TINY_STEPS,
             mixed_wm38="synthetic_wafers", synthetic_per_class=30)
    # NEU's Table III leaves no pool (every image beside the shots is a test image): no such row
    log = []
    with pytest.raises(ValueError, match="no finished run"):
        _run(3, tmp_path / "neu", log=log, cells=["10shot"], methods=["scl_amp_self_training"],
             overrides=TINY_STEPS, neu=neu_like)
    assert log == ["table 3 10shot scl_amp_self_training: no row here (every image beside the training images "
                   "is a test image: no unlabeled pool)"]


def test_epochs_per_run_name_each_cell_once_and_the_rows_that_differ():
    """A step budget gives a cell's rows the same epochs, except self-training's (more images)."""
    cells = tables.TABLES[6][2]
    runs = [{"cell": cell, "method": method, "seed": seed, "epochs": epochs}
            for cell, method, epochs in (("20shot", "ce", 134), ("20shot", "scl_amp_recipe", 134),
                                         ("20shot", "scl_amp_self_training", 27), ("50shot", "ce", 54),
                                         ("50shot", "scl_amp_recipe", 54))
            for seed in (0, 1)]
    runs.append({"cell": "50shot", "method": "scl_amp_self_training", "seed": 0, "epochs": 11})
    runs.append({"cell": "50shot", "method": "scl_amp_self_training", "seed": 1, "epochs": 12})
    assert table_markdown._epochs_text(cells, runs) == (
        "20shot: 134 (SCL-AMP, recommended recipe + self-training: 27), "
        "50shot: 54 (SCL-AMP, recommended recipe + self-training: 11/12)")


def test_a_student_whose_teacher_was_trained_elsewhere_is_named_in_the_conditions():
    runs = [{"cell": "20shot", "seed": 0, "method": "ce"},
            {"cell": "20shot", "seed": 0, "method": "scl_amp_self_training", "teacher_elsewhere": False},
            {"cell": "20shot", "seed": 1, "method": "scl_amp_self_training", "teacher_elsewhere": True}]
    assert table_markdown._teacher_note(runs) == [
        "* 1 of the 2 self-training runs learned from a teacher trained outside this table's run folders, with the "
        "same settings, cell and seed (its path: `pseudo_labels.teacher` in the student's metrics.json); seeded "
        "runs repeat on one machine only, so that teacher's test accuracy can differ a little from this table's row."]
    assert table_markdown._teacher_note(runs[:2]) == []  # seed 0: the table's own teacher


def test_the_machines_and_dates_of_the_runs_with_runs_that_recorded_none():
    conditions = {"machine": "M3", "date": "2026-12-09"}
    runs = [{"made": {"machine": "M1", "date": "2026-12-03"}}, {"made": {"machine": "M2", "date": "2026-12-01"}},
            {"made": None}]
    assert table_markdown._made_text(runs, conditions) == (
        "* Hardware of the runs: M1; M2; dates of the runs: 2026-12-01 to 2026-12-03 (1 of the 3 runs were made "
        "before runs recorded these); table written on M3, 2026-12-09.")
    assert table_markdown._made_text(runs[2:], conditions) == (
        "* Hardware and date: table written on M3, 2026-12-09; the runs do not record theirs (made before runs "
        "recorded them).")
    # a run resumed on another machine, and one resumed from a checkpoint whose first epochs no record
    # places, are named; their sessions' machines and dates count among the runs'
    one = {"machine": "M1", "date": "2026-12-03", "commit": "abc1234"}
    runs = [{"cell": "10shot", "method": "ce", "seed": 0, "made": one,
             "training_sessions": [{**one, "epochs": [1, 5], "seconds": 9.0}]},
            {"cell": "10shot", "method": "scl_amp", "seed": 1, "made": one,
             "training_sessions": [{"machine": "M4", "date": "2026-11-30", "commit": "abc1234", "epochs": [1, 2],
                                    "seconds": 3.0}, {**one, "epochs": [3, 5], "seconds": 4.0}]},
            {"cell": "20shot", "method": "ce", "seed": 2, "made": one,
             "training_sessions": [{"machine": None, "date": None, "epochs": [1, 2], "seconds": None},
                                   {**one, "epochs": [3, 5], "seconds": 4.0}]},
            {"cell": "20shot", "method": "scl_amp", "seed": 2, "made": one,  # the code changed between sessions
             "training_sessions": [{**one, "commit": "def5678+modified", "epochs": [1, 2], "seconds": 2.0},
                                   {**one, "epochs": [3, 5], "seconds": 4.0}]}]
    assert table_markdown._made_text(runs, conditions) == (
        "* Hardware of the runs: M1; M4; dates of the runs: 2026-11-30 to 2026-12-03; code of the runs: abc1234, "
        "def5678+modified; 3 run(s) were trained on more than one machine or code, or partly where no record says "
        "(resumed; `training_sessions` in their metrics.json): 10shot scl_amp seed 1, 20shot ce seed 2, 20shot "
        "scl_amp seed 2; table written on M3, 2026-12-09.")


def test_report_only_and_bad_arguments(tmp_path, neu_like):
    with pytest.raises(ValueError, match="no finished run"):
        reproducing.run_table(3, [0], "cpu", str(tmp_path), report_only=True, log=lambda _: None, neu=neu_like)
    with pytest.raises(ValueError, match="has the cells 10shot, 20shot, 50shot"):
        reproducing.run_table(3, [0], "cpu", str(tmp_path), cells=["7shot"], log=lambda _: None)
    with pytest.raises(ValueError, match="--methods"):
        reproducing.run_table(3, [0], "cpu", str(tmp_path), methods=["svm"], log=lambda _: None)
    with pytest.raises(ValueError, match="key=value"):
        train_config.parse_overrides(["epochs"])
    with pytest.raises(ValueError, match="not model_dir, seed or method"):
        train_config.parse_overrides(["seed=3"])
    assert train_config.parse_overrides(["epochs=3", "symmetric=True", "backbone=resnet18"]) == {
        "epochs": 3, "symmetric": True, "backbone": "resnet18"}


def test_the_cpu_budget_gives_every_run_the_recipes_steps():
    cell = tables.TABLES[6][2][0]
    options = {"neu": "neu", "mixed_wm38": "synthetic_wafers", "neu_manual_dir": None,
               "wm38_manual_dir": None, "data_dir": None, "synthetic_per_class": 12, "runs_dir": "/tmp/x",
               "table": 6}
    for row in tables.ROWS:
        config = reproducing.run_config(cell, row, 0, "cpu", {}, options)
        # the self-training student trains twice the steps (it fits five times the images)
        factor = 2 if row == "scl_amp_self_training" else 1
        assert config.steps == factor * recipes.SMALL_DATA["steps"] and config.method == tables.ROWS[row].method
        assert config.backbone == "resnet_tiny" and config.image_size == 52
        assert f"cpu-{recipes.SMALL_DATA['steps']}steps" in config.model_dir
    recipe = reproducing.run_config(cell, "scl_amp_recipe", 0, "cpu", {}, options)
    wanted = {**recipes.CURES, **recipes.FITTED, **recipes.SCHEDULE}
    assert {k: getattr(recipe, k) for k in wanted} == wanted
    ce = reproducing.run_config(cell, "ce", 0, "cpu", {}, options)
    shared = {**recipes.FITTED, **recipes.SCHEDULE}
    assert {k: getattr(ce, k) for k in shared} == shared and not ce.arc_on_views
    assert reproducing.run_config(cell, "scl_amp", 0, "cpu", {}, options).lr_schedule == "constant"  # Table I
    # --set=epochs=N turns the step budget off; the paper's budget counts epochs
    assert reproducing.run_config(cell, "ce", 0, "cpu", {"epochs": 3}, options).steps is None
    paper = reproducing.run_config(cell, "scl_amp", 0, "paper", {}, options)
    assert paper.steps is None and paper.epochs == 100 and paper.backbone == "resnet50"
    student = reproducing.run_config(cell, "scl_amp_self_training", 0, "cpu", {}, options)
    assert student.pseudo_labels_from == recipe.model_dir  # a teacher of the budget's steps
    # --set=steps wins for every row, the student too; under epochs the student doubles nothing
    assert reproducing.run_config(cell, "scl_amp_self_training", 0, "cpu", {"steps": 8}, options).steps == 8
    assert reproducing.run_config(cell, "scl_amp_self_training", 0, "cpu", {"epochs": 3}, options).steps is None
    assert reproducing.run_config(cell, "scl_amp_self_training", 0, "paper", {}, options).steps is None
    assert reproducing.run_config(cell, "scl_amp_self_training", 0, "paper", {"steps": 8}, options).steps == 8
    assert reproducing.row_steps("scl_amp_self_training", "paper", {}) is None


def test_small_data_flagfile_is_the_recipe():
    """configs/small_data.cfg (what `train` runs) and recipes.SMALL_DATA (what `reproduce` runs)."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "small_data.cfg")
    flags = dict(line.strip()[2:].split("=", 1) if "=" in line else (line.strip()[2:], "True")
                 for line in open(path) if line.startswith("--"))
    assert flags == {k: str(v) for k, v in recipes.SMALL_DATA.items()}


def test_a_kept_run_must_have_made_its_rows_steps():
    """Steps may differ on resume, so only this tells a 3,200-step student from the row's 6,400."""
    config = train_config.TrainConfig(model_dir="/runs/student", steps=6400)
    reproducing.check_steps(config, {"steps": 6426, "epochs": 54})  # whole epochs: a little over
    with pytest.raises(ValueError, match="finished with 3213 steps, but this row trains 6400"):
        reproducing.check_steps(config, {"steps": 3213, "epochs": 27})
    with pytest.raises(ValueError, match="finished with 12852 steps"):
        reproducing.check_steps(config, {"steps": 12852, "epochs": 108})
    reproducing.check_steps(config, {"epochs": 54})  # a run from before steps were recorded


def test_the_code_commit_names_modified_files_and_is_none_outside_git(tmp_path):
    import importlib.util
    import shutil

    from scl_amp_tf import provenance

    def commit_of(folder):  # provenance.py as a copy in ``folder`` sees it
        spec = importlib.util.spec_from_file_location("copied_provenance", folder / "provenance.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.code_commit()

    (tmp_path / "lib").mkdir()
    shutil.copy(provenance.__file__, tmp_path / "lib" / "provenance.py")
    assert commit_of(tmp_path / "lib") is None  # not a git checkout

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()
    git("init", "-q")
    assert commit_of(tmp_path / "lib") is None  # in a repository, but not tracked there
    git("add", "lib/provenance.py")
    git("commit", "-q", "-m", "x")
    head = git("rev-parse", "--short", "HEAD")
    assert commit_of(tmp_path / "lib") == head
    (tmp_path / "lib" / "other.py").write_text("x = 1\n")  # a file of the library the commit does not have
    assert commit_of(tmp_path / "lib") == head + "+modified"
    (tmp_path / "elsewhere.txt").write_text("not the library\n")
    (tmp_path / "lib" / "other.py").unlink()
    assert commit_of(tmp_path / "lib") == head  # only the library's own folder counts


def test_the_cpu_name_says_the_widest_vector_instructions(tmp_path):
    """Two CPUs a virtual machine calls "AMD EPYC", one with AVX-512 and one with AVX2 only, trained
    about 2x apart in speed (and seeded runs repeat only on one kind of CPU): the records must tell
    them apart."""
    from scl_amp_tf import provenance

    def name(model, flags):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                        f"processor\t: 1\nmodel name\t: {model}\nflags\t\t: {flags}\n")
        return provenance.cpu_name(str(path))

    assert name("AMD EPYC", "fpu sse2 avx fma avx2 bmi2") == "AMD EPYC, AVX2"
    assert name("AMD EPYC", "fpu sse2 avx2 avx512f avx512bw avx512_bf16") == "AMD EPYC, AVX-512"
    assert name("Intel(R) Xeon(R) Processor", "sse2 avx512f amx_tile") == "Intel(R) Xeon(R) Processor, AVX-512"
    assert name("Some CPU", "fpu sse2 avx") == "Some CPU"  # neither extension: the name alone
    (tmp_path / "cpuinfo").write_text("model name\t: Odd CPU\n")  # no flags line
    assert provenance.cpu_name(str(tmp_path / "cpuinfo")) == "Odd CPU"
