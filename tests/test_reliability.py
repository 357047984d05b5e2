"""What a kill, a second run, a diverged loss or a bad file does to a run (issue #16's reliability
bugs): each test fails on the code before its fix."""
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from scl_amp_tf import checkpoints, files
from scl_amp_tf.run_folder import LOCK
from scl_amp_tf.train_config import TrainConfig
from scl_amp_tf.training import train_and_evaluate


def _config(tmp_path, **kwargs):
    settings = dict(model_dir=str(tmp_path / "run"), dataset="synthetic_wafers", synthetic_per_class=4,
                    shots_per_class=2, image_size=32, backbone="resnet_tiny", batch_size=16, epochs=3, verbose=0)
    settings.update(kwargs)
    return TrainConfig(**settings)


class _KillAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt(f"simulated kill after epoch {self.epochs}")


def test_a_truncated_checkpoint_and_an_empty_record_do_not_stop_a_resume(tmp_path):
    config = _config(tmp_path, checkpoint_seconds=0)  # a checkpoint after every epoch
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, callbacks=[_KillAfter(1)])
    backup = os.path.join(config.model_dir, "backup")
    assert sorted(os.listdir(backup)) == [checkpoints.RECORD, "epoch-00001.weights.h5"]
    # What a kill in the middle of the next checkpoint could leave (with Keras's BackupAndRestore a
    # 96-byte weights file stopped every rerun): a truncated newer file and an empty record.
    with open(os.path.join(backup, "epoch-00002.weights.h5"), "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + bytes(88))
    open(os.path.join(backup, checkpoints.RECORD), "w").close()
    metrics = train_and_evaluate(config)
    assert metrics["epochs_run_in_this_call"] == [2, 3]  # resumed from epoch 1, the last good one
    assert sorted(os.listdir(backup)) == ["checkpoint.json", "epoch-00003.weights.h5"]
    record = json.load(open(os.path.join(backup, checkpoints.RECORD)))
    assert {k: record[k] for k in ("epoch", "weights")} == {"epoch": 3, "weights": "epoch-00003.weights.h5"}
    # the lost record said where epoch 1 was trained: that session is unknown, so is the run's time
    unknown = {"machine": None, "date": None, "epochs": [1, 1], "seconds": None}
    assert record["sessions"][0] == unknown and record["sessions"][1]["epochs"] == [2, 3]
    assert record["sessions"][1]["seconds"] > 0
    assert metrics["training_sessions"] == record["sessions"] and metrics["train_seconds"] is None


def test_the_sessions_of_a_checkpoint_are_those_its_record_names_for_that_epoch(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)  # saved with its slots, as a trained model is
    backup = str(tmp_path / "backup")
    first = checkpoints.session({"machine": "A", "date": "2026-12-01"}, 1, 4, 12.34)
    second = checkpoints.session({"machine": "B", "date": "2026-12-02"}, 5, 6, 3.0)
    assert first == {"machine": "A", "date": "2026-12-01", "epochs": [1, 4], "seconds": 12.3}
    checkpoints.save(model, backup, 6, [first, second])
    assert checkpoints.restore(model, backup) == 6
    assert checkpoints.recorded_sessions(backup, 6) == [first, second]
    assert checkpoints.total_seconds([first, second]) == pytest.approx(15.3)
    assert checkpoints.recorded_sessions(backup, 0) == []
    # a checkpoint the record does not describe (an older file taken after a kill): nothing is claimed
    assert checkpoints.recorded_sessions(backup, 5) == [
        {"machine": None, "date": None, "epochs": [1, 5], "seconds": None}]
    assert checkpoints.total_seconds(checkpoints.recorded_sessions(backup, 5)) is None
    checkpoints.save(model, backup, 7)  # a record without sessions, as before they were kept
    assert checkpoints.recorded_sessions(backup, 7)[0]["machine"] is None


def test_checkpoints_wait_checkpoint_seconds_and_the_last_epoch_always_has_one(tmp_path):
    config = _config(tmp_path, epochs=4, checkpoint_seconds=3600)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, callbacks=[_KillAfter(3)])
    assert not os.path.exists(os.path.join(config.model_dir, "backup"))  # an hour has not passed
    metrics = train_and_evaluate(config)  # so the rerun trains from the start
    assert metrics["epochs_run_in_this_call"] == [1, 2, 3, 4]
    record = json.load(open(os.path.join(config.model_dir, "backup", checkpoints.RECORD)))
    assert {k: record[k] for k in ("epoch", "weights")} == {
        "epoch": 4, "weights": "epoch-00004.weights.h5"}  # the finished run's checkpoint
    with pytest.raises(ValueError, match="--checkpoint_seconds=-1 must be at least 0"):
        _config(tmp_path, checkpoint_seconds=-1).validate()


def test_a_second_run_into_a_locked_model_dir_is_refused(tmp_path):
    config = _config(tmp_path, epochs=1)
    os.makedirs(config.model_dir)
    with files.exclusive_lock(os.path.join(config.model_dir, LOCK), "the first run"):
        with pytest.raises(ValueError, match=r"--model_dir=.* is in use by another process"):
            train_and_evaluate(config)
        assert os.listdir(config.model_dir) == [LOCK]  # the refused run wrote nothing
    assert train_and_evaluate(config)["epochs_run_in_this_call"] == [1]  # the lock went with its holder


def test_a_diverged_run_stops_with_an_error_and_writes_no_result(tmp_path):
    config = _config(tmp_path, learning_rate=float("inf"), epochs=2)
    with pytest.raises(checkpoints.Diverged, match=r"Training diverged: the loss was nan at step \d+ of epoch 1"):
        train_and_evaluate(config)
    written = os.listdir(config.model_dir)
    assert "metrics.json" not in written and "encoder.keras" not in written
    assert not os.path.exists(os.path.join(config.model_dir, "backup", checkpoints.RECORD))


def test_model_dir_that_is_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        train_and_evaluate(_config(tmp_path))


def test_a_broken_link_is_named_and_a_folder_named_like_an_image_is_skipped(tmp_path):
    from scl_amp_tf import data as data_lib

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8), "L").save(tmp_path / name / f"{i}.png")
    (tmp_path / "a" / "folder.png").mkdir()
    assert len(data_lib.load_image_folder(tmp_path, 8).labels) == 4
    os.symlink(tmp_path / "gone.png", tmp_path / "b" / "link.png")
    with pytest.raises(data_lib.DataError, match=r"Cannot read image .*link\.png"):
        data_lib.load_image_folder(tmp_path, 8)
