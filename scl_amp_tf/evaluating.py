"""Evaluating a finished run on its test split: the library behind ``python -m scl_amp_tf.evaluate``.

:func:`evaluate_run` classifies the run's test images by the reference database of its training
images (section IV.A) or, for CE, by its softmax, with optional open-set rejection, and returns
every figure a quality engineer asks of a test set (:func:`scl_amp_tf.evaluation.summarize`);
:func:`write_results` writes them (JSON, Markdown and PNG), :func:`write_projector` the embeddings
for TensorBoard's projector, :func:`short_table` the lines the command prints.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

REPRESENTATIONS = ("embedding", "backbone")


def evaluate_run(model_dir, *, reference_shots=None, seed=0, representation="embedding", reject_threshold=None,
                 reject_quantile=0.05, data_dir=None, manual_dir=None, tta=None, prototypes="mean"):
    """Evaluates a finished run; returns ``(result dict, test labels, predictions, embeddings dict)``.

    ``tta`` (None: the run's ``--tta``) embeds every reference and query as
    :func:`scl_amp_tf.inference.embed` does (``dihedral`` is refused on a run whose views turned by
    half turns only, as training refuses it); a reference database is built from those embeddings.
    ``prototypes`` is its scoring rule (:data:`scl_amp_tf.reference.PROTOTYPE_RULES`), for the
    predictions, the ``auto`` threshold and the open-set AUROC alike, as ``export`` serves it."""
    import keras

    from scl_amp_tf import evaluation, inference, invariance, open_set, reference, run_folder

    if representation not in REPRESENTATIONS:
        raise ValueError(f"--representation={representation!r} must be one of {', '.join(REPRESENTATIONS)}.")
    if reference_shots is not None and reference_shots < 1:
        raise ValueError(f"--reference_shots={reference_shots} must be at least 1.")
    # every refusal of a flag first: they need the run's settings only, not its data nor its network
    settings = run_folder.load_settings(model_dir)
    method = settings["method"]
    use_softmax = method == "ce" and representation == "embedding"
    if use_softmax and reject_threshold is not None:
        raise ValueError("--reject_threshold works on reference databases: a CE run needs "
                         "--representation=backbone for it.")
    reference.check_prototype_rule(prototypes)
    if use_softmax and prototypes != "mean":
        raise ValueError(f"--prototypes={prototypes} works on reference databases: a CE run needs "
                         "--representation=backbone for it.")
    tta = run_folder.tta_of(settings) if tta is None else tta
    invariance.check_with_turns(tta, run_folder.rotations_of(model_dir, settings),
                                f"the run's views (--rotations={settings.get('rotations', 'quarter')}, half turns)",
                                "give --tta=none")
    settings, train_data, test_data = run_folder.load_run(model_dir, data_dir=data_dir, manual_dir=manual_dir)
    if len(test_data.labels) == 0:
        raise ValueError(f"{model_dir} has no test images (it trained on every image): nothing to evaluate. "
                         "Few-shot runs are evaluated by python -m scl_amp_tf.reproduce --table=4.")
    encoder = keras.models.load_model(os.path.join(model_dir, run_folder.ENCODER))
    model = inference.representation_model(encoder, representation)
    refs = (np.arange(len(train_data.labels)) if reference_shots is None
            else reference.sample_references(train_data.labels, reference_shots, seed))

    def outputs(images):
        return inference.embed(model, images, tta=tta, average="raw" if use_softmax else "unit")

    test_embeddings = outputs(test_data.images)
    ref_embeddings = outputs(train_data.images[refs]) if not use_softmax else None
    threshold = None
    if use_softmax:
        predictions, scores = np.argmax(test_embeddings, axis=1), test_embeddings
        classifier = "softmax"
    else:
        if reject_threshold == "auto":  # on the validation images (every training image is a candidate reference)
            train_embeddings = (ref_embeddings if reference_shots is None  # refs are every training image
                                else outputs(train_data.images))
            threshold = run_folder.auto_reject_threshold(model_dir, train_embeddings, train_data.labels,
                                                       reject_quantile, prototypes)
        elif reject_threshold is not None:
            threshold = float(reject_threshold)
        predictions, scores, _ = evaluation.reference_predictions(
            ref_embeddings, train_data.labels[refs], test_embeddings, train_data.class_names, threshold, prototypes)
        on = "backbone features" if representation == "backbone" else "embeddings"
        classifier = f"reference database on the {on}" + (
            ", scored by the cosine to each class's mean direction" if prototypes == "normalised" else "")
    if tta != "none":
        classifier += f" ({tta} test-time augmentation: each image's 8 rotations and flips averaged)"
    summary = evaluation.summarize(test_data.labels, predictions, test_data.class_names)
    result = {
        "model_dir": os.path.abspath(model_dir), "method": method, "classifier": classifier,
        "representation": representation, "tta": tta, "prototypes": None if use_softmax else prototypes,
        "reference_shots": reference_shots, "num_references": None if use_softmax else int(len(refs)),
        "seed": seed, "reject_threshold": threshold,
        "reject_threshold_setting": reject_threshold if reject_threshold in (None, "auto") else "fixed",
        "reject_quantile": reject_quantile if reject_threshold == "auto" else None,
        "class_names": list(test_data.class_names), "dataset": settings["dataset"], **summary,
        "open_set_auroc": None,
    }
    if threshold is not None:  # how well the score that the threshold cuts tells unknown defects apart
        per_class = open_set.leave_one_class_out_auroc(ref_embeddings, train_data.labels[refs], test_embeddings,
                                                         test_data.labels, prototypes)
        result["open_set_auroc"] = {
            "per_left_out_class": {test_data.class_names[c]: v for c, v in per_class.items()},
            "mean": float(np.mean(list(per_class.values()))) if per_class else None}
    embeddings = {"test": test_embeddings, "reference": ref_embeddings, "test_labels": test_data.labels,
                  "reference_labels": train_data.labels[refs], "test_images": test_data.images,
                  "reference_images": train_data.images[refs],
                  "class_names": test_data.class_names, "test_scores": scores, "test_predictions": predictions}
    return result, test_data.labels, predictions, embeddings


def write_projector(log_dir, embeddings, max_images=2000, seed=0):
    """Writes the test (and reference) embeddings with class and split labels for TensorBoard's
    projector, replacing an earlier one whole (written to a temporary folder, then renamed)."""
    import tensorflow as tf
    from PIL import Image
    from tensorboard.plugins import projector

    rng = np.random.default_rng(seed)
    test = np.arange(len(embeddings["test"]))
    if len(test) > max_images:
        test = np.sort(rng.choice(test, max_images, replace=False))
    vectors = [embeddings["test"][test]]
    rows = [("test", embeddings["class_names"][label]) for label in embeddings["test_labels"][test]]
    if embeddings["reference"] is not None:
        vectors.append(embeddings["reference"])
        rows += [("reference", embeddings["class_names"][label]) for label in embeddings["reference_labels"]]
    vectors = np.concatenate(vectors).astype(np.float32)
    parent = os.path.dirname(os.path.abspath(log_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_projector_", dir=parent)
    try:
        with open(os.path.join(tmp, "metadata.tsv"), "w") as f:
            f.write("class\tsplit\n")
            f.writelines(f"{name}\t{split}\n" for split, name in rows)
        checkpoint = tf.train.Checkpoint(embedding=tf.Variable(vectors))
        checkpoint.save(os.path.join(tmp, "embedding.ckpt"))
        config = projector.ProjectorConfig()
        entry = config.embeddings.add()
        entry.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
        entry.metadata_path = "metadata.tsv"
        thumbs = embeddings["test_images"][test]
        if embeddings["reference"] is not None:
            thumbs = np.concatenate([thumbs, embeddings["reference_images"]])
        # a sprite of thumbnails, one per row, so that the projector shows the images
        side = int(np.ceil(np.sqrt(len(thumbs))))
        size = max(8, min(thumbs.shape[1], 8192 // max(side, 1)))
        sprite = Image.new("L" if thumbs.shape[-1] == 1 else "RGB", (side * size, side * size))
        for i, thumb in enumerate(thumbs):
            image = Image.fromarray(thumb[..., 0] if thumb.shape[-1] == 1 else thumb).resize((size, size))
            sprite.paste(image, ((i % side) * size, (i // side) * size))
        sprite.save(os.path.join(tmp, "sprite.png"))
        entry.sprite.image_path = "sprite.png"
        entry.sprite.single_image_dim.extend([size, size])
        projector.visualize_embeddings(tmp, config)
        from scl_amp_tf.files import make_readable

        make_readable(tmp)
        if os.path.exists(log_dir):
            shutil.rmtree(log_dir)
        os.rename(tmp, log_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_results(output_dir, result, embeddings=None):
    """evaluation.json, confusion_matrix.md, confusion_matrix.png and (given the ``embeddings``
    dict of :func:`evaluate_run`) misclassified.png, the gallery of the misclassified test images;
    each written atomically."""
    from scl_amp_tf import evaluation
    from scl_amp_tf.files import atomic_write
    from scl_amp_tf.files import write_json

    os.makedirs(output_dir, exist_ok=True)

    title = f"{result['method']} ({result['classifier']}), {result['num_queries']} test images"
    markdown = (f"# Confusion matrix: {title}\n\nAccuracy {format_percent(result['accuracy'])}"
                + (f", {result['rejected']} rejected as unknown" if result["reject_threshold"] is not None else "")
                + ".\n\n" + evaluation.confusion_markdown(
                    result["confusion_matrix"], result["class_names"],
                    result["rejected_per_class"] if result["reject_threshold"] is not None else None))
    write_json(os.path.join(output_dir, "evaluation.json"), result)
    atomic_write(os.path.join(output_dir, "confusion_matrix.md"), lambda tmp: open(tmp, "w").write(markdown))
    atomic_write(os.path.join(output_dir, "confusion_matrix.png"),
                 lambda tmp: evaluation.save_confusion_png(result["confusion_matrix"], result["class_names"], tmp,
                                                           title=title))
    if embeddings is not None:
        atomic_write(os.path.join(output_dir, "misclassified.png"), lambda tmp: evaluation.save_misclassified_gallery(
            embeddings["test_images"], embeddings["test_labels"], embeddings["test_predictions"],
            embeddings["test_scores"], result["class_names"], tmp))


def format_percent(value):
    return "-" if value is None else f"{100.0 * value:.2f} %"


def short_table(result):
    lines = [f"{result['method']}: {result['classifier']}"
             + (f", {result['num_references']} references" if result["num_references"] else ""),
             f"accuracy   {format_percent(result['accuracy'])}  ({result['num_queries']} test images"
             + (f", {result['rejected']} rejected as unknown at threshold {result['reject_threshold']:.4f}"
                if result["reject_threshold"] is not None else "") + ")"]
    lines.append(f"balanced accuracy {format_percent(result['balanced_accuracy'])}, macro precision "
                 f"{format_percent(result['macro_precision'])}, macro recall {format_percent(result['macro_recall'])}, "
                 f"macro F1 {format_percent(result['macro_f1'])}")
    if result.get("open_set_auroc") and result["open_set_auroc"]["mean"] is not None:
        lines.append(f"open-set AUROC {format_percent(result['open_set_auroc']['mean'])} (each class in turn left out "
                     "of the references, its test images as unknown defects)")
    width = max(len(n) for n in result["class_names"])
    lines.append(f"  {'class':<{width}}  precision  recall     F1         images")
    lines += [f"  {name:<{width}}  {format_percent(m['precision']):<9}  {format_percent(m['recall']):<9}  "
              f"{format_percent(m['f1']):<9}  {m['support']}" for name, m in result["per_class"].items()]
    return "\n".join(lines)
