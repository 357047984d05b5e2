"""Benchmark: training speed of SCL-AMP and the cross-entropy baseline, the input pipeline,
strategies and memory, all through the training code path (``training.build_model`` and
``input_pipeline.pipeline``, the same as ``python -m scl_amp_tf.train``).

Parts (``--parts``), one ``BENCH {json}`` line per figure:

* ``methods``: one process per ``--configs`` entry ``backbone:image_size``. SCL-AMP (global batch
  N, three views) and CE (batch N) train in alternating rounds, fed once by the real input pipeline
  (augmentation included) and once by one in-memory batch repeated (no input work at all); CE also
  runs with a batch of 3N, the number of images SCL-AMP pushes through the backbone. Figures:
  ``train_images_per_second`` (training images, not views), ``step_ratio_scl_over_ce`` (the
  issue's goal is <= 3.1; three views make 3.0 the floor), ``ce_step_ratio_3n_over_n`` (what 3x the
  images costs the baseline itself on this machine), ``step_ratio_scl_over_ce_3n`` (the method's
  own overhead: SCL-AMP against CE on the same number of images), ``input_wait_fraction``
  (1 - step time on the in-memory batch / step time on the pipeline: the share of a step spent
  waiting for input), ``input_pipeline_images_per_second`` (the pipeline alone), and
  ``step_memory_peak_bytes`` (TensorFlow's CPU/GPU allocator peak during a step, above what was
  allocated before it).
* ``scaling``: SCL-AMP and CE on the same global batch, through the real pipeline, on one device
  (TensorFlow's default strategy), 2 devices (``MirroredStrategy`` over 2 GPUs, or 2 logical CPU
  devices where there are fewer GPUs; synchronised batch norm, gathered negatives) and 2 local
  worker processes (``MultiWorkerMirroredStrategy`` over
  127.0.0.1, as ``--strategy=multi_worker``). On a 2-core machine this shows the overhead of the
  distribution machinery, not a speed-up.

Random uint8 images stand in for the data (speed does not depend on pixel values).

    python bench/speed.py --out=bench/results/speed.jsonl
    python bench/speed.py --parts=methods --configs=resnet50:200,resnet50:64 --rounds=3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from bench_lines import emit  # bench/ is on the path when run as python bench/<script>.py
from scl_amp_tf.provenance import made

NUM_CLASSES = 6
DEFAULT_CONFIGS = "resnet50:200,resnet50:64,resnet_tiny:64,resnet_tiny:52"



# --- the measuring process -----------------------------------------------------------------------

def _random_images(count, size, channels, seed=0):
    from scl_amp_tf import data
    rng = np.random.default_rng(seed)
    return data.LabelledImages(rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8),
                               np.arange(count) % NUM_CLASSES, tuple(f"c{i}" for i in range(NUM_CLASSES)),
                               "random images")


def _step_seconds(model, dataset, steps):
    """Mean seconds per step of ``steps`` steps, from the end of a first step to the end of the last
    (iterator start-up and the first step's latency left out)."""
    import keras
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    model.fit(dataset, steps_per_epoch=steps + 1, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    return (ends[-1] - ends[0]) / steps


def _memory(device):
    import tensorflow as tf
    try:
        return tf.config.experimental.get_memory_info(device)
    except (ValueError, tf.errors.OpError):
        return None


class Runner:
    """One model (method, batch, input) built and traced under ``strategy``, ready to time."""

    def __init__(self, strategy, method, batch_size, images, backbone, source):
        import tensorflow as tf

        from scl_amp_tf import input_pipeline, train_config, training

        size, channels = images.images.shape[1], images.images.shape[-1]
        config = train_config.TrainConfig(model_dir="", method=method, backbone=backbone, image_size=size,
                                          batch_size=batch_size, shots_per_class=1)
        self.model, _, _, views = training.build_model(config, strategy, (size, size, channels), NUM_CLASSES)
        multi = strategy.num_replicas_in_sync > 1

        def make_input(context=None):
            return input_pipeline.pipeline(images, batch_size=batch_size, views=views, seed=0, shuffle=True,
                                 input_context=context, drop_remainder=multi).repeat()

        if source == "pipeline":
            self.dataset = strategy.distribute_datasets_from_function(make_input)
        else:  # one batch, in memory: the step without any input work
            self.dataset = tf.data.Dataset.from_tensors(next(iter(make_input()))).repeat()
        self.images_per_step = batch_size
        self.device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        self.model.fit(self.dataset, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # trace
        try:
            tf.config.experimental.reset_memory_stats(self.device)
        except (ValueError, tf.errors.OpError):
            pass
        before = _memory(self.device)
        self.warm_seconds = _step_seconds(self.model, self.dataset, 2)
        after = _memory(self.device)
        self.step_peak_bytes = None if before is None else int(after["peak"] - before["current"])
        self.times = []

    def time(self, steps):
        self.times.append(_step_seconds(self.model, self.dataset, steps))


def _rounds(runners, rounds, round_seconds, fixed_steps=None):
    """Alternates timing rounds over ``runners`` (so all see the same machine conditions), each of
    about ``round_seconds`` (or ``fixed_steps`` steps: workers must all run the same number)."""
    steps = {k: fixed_steps or int(np.clip(round(round_seconds / r.warm_seconds), 2, 100)) for k, r in runners.items()}
    for _ in range(rounds):
        for key, runner in runners.items():
            runner.time(steps[key])
    return steps


def _pipeline_rate(images, batch_size, views, batches=50):
    from scl_amp_tf import input_pipeline
    ds = input_pipeline.pipeline(images, batch_size=batch_size, views=views, seed=0, shuffle=True).repeat()
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def _mean_std(values):
    values = np.asarray(values, float)
    return {"mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4), "n": len(values)}


def measure_methods(args, backbone, size):
    import tensorflow as tf
    strategy = tf.distribute.get_strategy()
    images = _random_images(args.images, size, args.channels)
    n = args.batch_size
    common = {"backbone": backbone, "image_size": size, "channels": args.channels, "batch_size": n,
              "strategy": "default (1 device)", "rounds": args.rounds, **made()}
    runners = {("scl_amp", n, "pipeline"): Runner(strategy, "scl_amp", n, images, backbone, "pipeline"),
               ("scl_amp", n, "memory"): Runner(strategy, "scl_amp", n, images, backbone, "memory"),
               ("ce", n, "pipeline"): Runner(strategy, "ce", n, images, backbone, "pipeline"),
               ("ce", n, "memory"): Runner(strategy, "ce", n, images, backbone, "memory"),
               ("ce", 3 * n, "memory"): Runner(strategy, "ce", 3 * n, images, backbone, "memory")}
    steps = _rounds(runners, args.rounds, args.round_seconds)
    for (method, batch, source), r in runners.items():
        t = np.asarray(r.times)
        emit({"figure": "train_images_per_second", "method": method, "input": source, **common, "batch_size": batch,
               "steps_per_round": steps[(method, batch, source)], "step_seconds": _mean_std(t),
               **_mean_std(batch / t), "step_memory_peak_bytes": r.step_peak_bytes}, args.out)
    t = {k: np.asarray(r.times) for k, r in runners.items()}
    for source in ("pipeline", "memory"):  # per round, so both sides share the machine's state
        emit({"figure": "step_ratio_scl_over_ce", "input": source, **common,
               **_mean_std(t[("scl_amp", n, source)] / t[("ce", n, source)])}, args.out)
    emit({"figure": "ce_step_ratio_3n_over_n", "input": "memory", **common,
           **_mean_std(t[("ce", 3 * n, "memory")] / t[("ce", n, "memory")])}, args.out)
    emit({"figure": "step_ratio_scl_over_ce_3n", "input": "memory", **common,
           **_mean_std(t[("scl_amp", n, "memory")] / t[("ce", 3 * n, "memory")])}, args.out)
    for method in ("scl_amp", "ce"):
        emit({"figure": "input_wait_fraction", "method": method, **common,
               **_mean_std(1 - t[(method, n, "memory")] / t[(method, n, "pipeline")])}, args.out)
    for views in ("three", "one"):
        emit({"figure": "input_pipeline_images_per_second", "views": views, **common,
               **_mean_std([_pipeline_rate(images, n, views) for _ in range(args.rounds)])}, args.out)
    emit({"figure": "process_max_rss_bytes", **common,
           "bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}, args.out)


def measure_scaling(args, backbone, size, setup):
    import tensorflow as tf

    from scl_amp_tf import distribute
    if setup == "2_logical_devices":  # 2 GPUs where there are (the others hidden), else 2 logical CPUs
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus[:2]] if len(gpus) >= 2 else ["/cpu:0", "/cpu:1"]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif setup == "2_workers":
        strategy = distribute.make_strategy("multi_worker")
    else:
        strategy = tf.distribute.get_strategy()
    images = _random_images(args.images, size, args.channels)
    runners = {m: Runner(strategy, m, args.batch_size, images, backbone, "pipeline") for m in ("scl_amp", "ce")}
    steps = _rounds(runners, args.rounds, args.round_seconds, fixed_steps=args.scaling_steps)
    if not distribute.is_chief(strategy):
        return
    common = {"backbone": backbone, "image_size": size, "channels": args.channels, "batch_size": args.batch_size,
              "setup": setup, "replicas": strategy.num_replicas_in_sync, "rounds": args.rounds, "input": "pipeline",
              **made()}
    for method, r in runners.items():
        t = np.asarray(r.times)
        emit({"figure": "scaling_images_per_second", "method": method, **common, "steps_per_round": steps[method],
               "step_seconds": _mean_std(t), **_mean_std(args.batch_size / t)}, args.out)
    emit({"figure": "scaling_step_ratio_scl_over_ce", **common,
           **_mean_std(np.asarray(runners["scl_amp"].times) / np.asarray(runners["ce"].times))}, args.out)


# --- the driver: one fresh process per measurement ----------------------------------------------

def _child_command(args, **extra):
    flags = [f"--{k}={v}" for k, v in {"batch_size": args.batch_size, "channels": args.channels,
                                        "images": args.images, "rounds": args.rounds,
                                        "round_seconds": args.round_seconds,
                                        "scaling_steps": args.scaling_steps, **extra}.items()]
    return [sys.executable, os.path.abspath(__file__), *flags] + ([f"--out={args.out}"] if args.out else [])


def _run(command, env=None, timeout=3600):
    result = subprocess.run(command, env=env, timeout=timeout, text=True, capture_output=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    print("\n".join(lines), flush=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def drive(args):
    parts = args.parts.split(",")
    if "methods" in parts:
        for config in args.configs.split(","):
            _run(_child_command(args, child="methods", config=config))
    if "scaling" in parts:
        for config in args.scaling_configs.split(","):
            _run(_child_command(args, child="scaling", config=config, setup="1_device"))
            _run(_child_command(args, child="scaling", config=config, setup="2_logical_devices"))
            from scl_amp_tf import distribute
            workers = []
            for tf_config in distribute.local_cluster(2):
                workers.append(subprocess.Popen(
                    _child_command(args, child="scaling", config=config, setup="2_workers"),
                    env={**os.environ, "TF_CONFIG": json.dumps(tf_config)}, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            try:
                outputs = [w.communicate(timeout=3600) for w in workers]
            finally:
                for w in workers:
                    w.kill()
            for w, (stdout, stderr) in zip(workers, outputs):
                print("\n".join(line for line in stdout.splitlines() if line.startswith("BENCH ")), flush=True)
                if w.returncode:
                    raise RuntimeError(f"a worker failed ({w.returncode}):\n{stderr[-3000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="methods,scaling")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="backbone:image_size, comma-separated")
    parser.add_argument("--scaling_configs", default="resnet_tiny:64")
    parser.add_argument("--batch_size", type=int, default=32, help="global batch N (Table I: 32)")
    parser.add_argument("--channels", type=int, default=1, help="NEU and MixedWM38 are gray")
    parser.add_argument("--images", type=int, default=256, help="random images in the pipeline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round_seconds", type=float, default=15.0, help="about this long per timed fit")
    parser.add_argument("--scaling_steps", type=int, default=20, help="steps per timed fit in the scaling part")
    parser.add_argument("--out", default=None, help="also append the lines to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--setup", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is None:
        return drive(args)

    import scl_amp_tf  # noqa: F401  (first: it quiets TensorFlow's C++ log)
    import tensorflow as tf
    if args.setup == "2_logical_devices" and len(tf.config.list_physical_devices("GPU")) < 2:
        cpu = tf.config.list_physical_devices("CPU")[0]  # before TensorFlow runs anything
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    backbone, size = args.config.split(":")
    if args.child == "methods":
        measure_methods(args, backbone, int(size))
    else:
        measure_scaling(args, backbone, int(size), args.setup)


if __name__ == "__main__":
    main()
