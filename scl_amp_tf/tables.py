"""The paper's Tables II-VI (section IV) as data: their cells, the rows (methods) each cell is
reproduced with, the paper's figures, and the budgets they are reproduced under
(:mod:`scl_amp_tf.reproduce`; the markdown of a reproduced table: :mod:`scl_amp_tf.table_markdown`).
"""
from __future__ import annotations

import dataclasses

from scl_amp_tf import recipes

NEU_BASE_CLASSES = ("In", "Pa", "RS")  # Table IV trains on these, meets the others as k-shot references
FEW_SHOT_KS = (1, 3, 5)


@dataclasses.dataclass(frozen=True)
class Row:
    """One method of a table: the training method and the settings it adds to the budget's."""

    name: str
    method: str  # TrainConfig.method
    settings: dict
    # A row trained by self-training: this row's run of the same cell and seed is the teacher
    # (--pseudo_labels_from) and the cell's pool of images that are neither training nor test
    # images (--unlabeled_data=rest) the images it labels. Only cells with such a pool have it.
    teacher: str | None = None
    # Under a step budget, this row trains this many times the budget's steps: a student fits
    # several times its teacher's images (1 + --pseudo_label_ratio times), so the same steps would
    # give it a fraction of the teacher's passes over them.
    steps_factor: int = 1

    def applies_to(self, cell):
        """Whether ``cell`` has this row: a self-training row needs a cell with a held-out test set
        (``test_fraction``), so that the images left beside the k shots are not test images."""
        return self.teacher is None or "test_fraction" in cell.split


# The rows of every cell. CE gets the recipe's choices any method can make (recipes.FITTED, the
# settings fitted to the images, and recipes.SCHEDULE), which make CE the strongest baseline
# measured; the paper's recipe is SCL-AMP with Table I's settings; the recommended recipe adds
# recipes.CURES; self-training adds the recommended recipe's own run as teacher of a student with
# the same settings and twice the steps, where the cell leaves unlabeled images
# (scl_amp_tf.pseudo_labels).
ROWS = {
    "ce": Row("CE baseline", "ce", {**recipes.FITTED, **recipes.SCHEDULE}),
    "scl_amp": Row("SCL-AMP, paper's recipe", "scl_amp", {}),
    "scl_amp_recipe": Row("SCL-AMP, recommended recipe", "scl_amp",
                          {**recipes.CURES, **recipes.FITTED, **recipes.SCHEDULE}),
    "scl_amp_self_training": Row("SCL-AMP, recommended recipe + self-training", "scl_amp",
                                 {**recipes.CURES, **recipes.FITTED, **recipes.SCHEDULE, "unlabeled_data": "rest"},
                                 teacher="scl_amp_recipe", steps_factor=2),
}
METHOD_NAMES = {key: row.name for key, row in ROWS.items()}
SCL_ROWS = tuple(key for key, row in ROWS.items() if row.method == "scl_amp")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of a table: a training split on one dataset, and the paper's figures for it."""

    key: str
    label: str
    dataset: str  # "neu" or "mixed_wm38"
    split: dict
    paper: dict  # method -> accuracy in % (None where the paper gives none)


TABLES = {
    2: ("Table II: NEU, share of each class used for training", "training data", [
        Cell("60pct", "60 %", "neu", {"train_fraction": 0.6}, {"scl_amp": 99.58, "ce": None}),
        Cell("70pct", "70 %", "neu", {"train_fraction": 0.7}, {"scl_amp": 99.81, "ce": None}),
        Cell("80pct", "80 %", "neu", {"train_fraction": 0.8}, {"scl_amp": 100.00, "ce": None}),
    ]),
    3: ("Table III: NEU, k labelled images per class", "images / class", [
        Cell("10shot", "10", "neu", {"shots_per_class": 10}, {"scl_amp": 98.39, "ce": 93.89}),
        Cell("20shot", "20", "neu", {"shots_per_class": 20}, {"scl_amp": 98.83, "ce": 97.72}),
        Cell("50shot", "50", "neu", {"shots_per_class": 50}, {"scl_amp": 99.72, "ce": 99.06}),
    ]),
    4: ("Table IV: NEU few-shot, unseen classes Cr, Sc, PS", "k-shot", [
        Cell("base_In_Pa_RS", "trained on every image of In, Pa, RS", "neu",
             {"train_fraction": 1.0, "classes": ",".join(NEU_BASE_CLASSES)},
             {"scl_amp": {1: 82.16, 3: 84.53, 5: 86.29}, "ce": None}),
    ]),
    5: ("Table V: MixedWM38, 80 % of each class for training", "class", [
        Cell("80pct", "80 %", "mixed_wm38", {"train_fraction": 0.8}, {"scl_amp": None, "ce": None}),
    ]),
    6: ("Table VI: MixedWM38, k maps per class for training (20 % held out for testing)", "maps / class", [
        Cell("20shot", "20", "mixed_wm38", {"shots_per_class": 20, "test_fraction": 0.2},
             {"scl_amp": 92.27, "ce": 55.36}),
        Cell("50shot", "50", "mixed_wm38", {"shots_per_class": 50, "test_fraction": 0.2},
             {"scl_amp": 96.88, "ce": 86.72}),
        Cell("100shot", "100", "mixed_wm38", {"shots_per_class": 100, "test_fraction": 0.2},
             {"scl_amp": 97.83, "ce": 89.73}),
    ]),
}

# Table V, column "Proposed", C1..C38 (the classes of PAPER_TABLE_V_CLASSES, the paper's order).
PAPER_TABLE_V_CLASSES = (
    "Normal", "C", "D", "EL", "ER", "L", "NF", "S", "R",
    "C+EL", "C+ER", "C+L", "C+S", "D+EL", "D+ER", "D+L", "D+S", "EL+L", "EL+S", "ER+L", "ER+S", "L+S",
    "C+EL+L", "C+EL+S", "C+ER+L", "C+ER+S", "C+L+S", "D+EL+L", "D+EL+S", "D+ER+L", "D+ER+S", "D+L+S",
    "EL+L+S", "ER+L+S",
    "C+L+EL+S", "C+L+ER+S", "D+L+EL+S", "D+L+ER+S")
PAPER_TABLE_V = (100.00, 100.00, 99.00, 99.00, 100.00, 100.00, 96.60, 99.00, 96.10,
                 98.00, 100.00, 100.00, 100.00, 98.00, 99.50, 97.50, 99.00, 99.00, 96.50, 98.00, 99.00, 98.50,
                 99.00, 97.80, 99.00, 99.50, 98.00, 98.50, 94.00, 99.00, 99.00, 97.50, 96.00, 95.00,
                 93.50, 98.00, 96.50, 99.50)
PAPER_TABLE_V_GROUPS = {1: 98.86, 2: 98.69, 3: 97.69, 4: 96.88, "all": 98.22}

BUDGETS = {
    "paper": {
        "description": "Table I: ResNet-50 from ImageNet weights, 100 epochs, batch 32, Adam 5e-4, "
                       "tau 0.5, m 0.5, d 128; NEU at 200 px, MixedWM38 at 64 px (a GPU job)",
        "neu": {"backbone": "resnet50", "backbone_weights": "imagenet", "image_size": 200, "epochs": 100},
        "mixed_wm38": {"backbone": "resnet50", "backbone_weights": "imagenet", "image_size": 64, "epochs": 100},
        "steps": None,
    },
    "cpu": {
        "description": f"reduced for a 2-core CPU: the small resnet_tiny backbone from scratch (no ImageNet "
                       f"weights), NEU at 64 px, MixedWM38 at its native 52 px, {recipes.SMALL_DATA['steps']} "
                       f"optimizer steps per run, where both methods' learning curves flatten under the decaying rate "
                       f"(epochs = ceil(steps / steps per epoch)), batch 32, Adam 5e-4, tau 0.5, m 0.5, d 128",
        "neu": {"backbone": "resnet_tiny", "backbone_weights": "none", "image_size": 64},
        "mixed_wm38": {"backbone": "resnet_tiny", "backbone_weights": "none", "image_size": 52},
        "steps": recipes.SMALL_DATA["steps"],
    },
}
