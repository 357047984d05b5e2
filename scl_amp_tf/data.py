"""Datasets and small-data splits (the tf.data input of training: :mod:`scl_amp_tf.input_pipeline`).

Sources (``--dataset``):
  * ``neu``: NEU-CLS steel surfaces through the TFDS builder in ``datasets/neu`` (manual dir).
  * ``mixed_wm38``: MixedWM38 wafer maps through ``datasets/mixed_wm38`` (manual dir).
  * ``synthetic_wafers``: the procedurally generated wafer maps of
    :mod:`scl_amp_tf.synthetic_wafers` (SYNTHETIC, needs no download; used only when asked for).
  * ``folder:/path/to/root``: the user's own images, one sub-folder per class.

Input handling (documented in the README): every image is resized once, at load time, to
``image_size x image_size`` (bilinear, antialiased) and kept as uint8 with 1 channel (gray)
or 3 (RGB). Wafer maps (values 0 no die, 1 pass, 2 fail) become gray images 0, 127, 254, so
the three die states stay equally spaced. The model scales to [0, 1] and replicates a gray
channel to the three channels a ResNet expects (see :mod:`scl_amp_tf.models`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import numpy as np
import tensorflow as tf


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Images above this many pixels are refused before decoding (about 0.2 GB as uint8 RGB): a
# defence against decompression bombs that a real inspection image stays far below.
MAX_IMAGE_PIXELS = 50_000_000
TFDS_DATASETS = ("neu", "mixed_wm38")
SYNTHETIC = "synthetic_wafers"
WAFER_SCALE = 127  # wafer map value v -> gray level v * 127


class DataError(ValueError):
    """A problem with the user's data or data flags; the message says what and how to fix it."""


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    """Images ``uint8 [N, S, S, C]``, labels ``int64 [N]`` and the class names, in label order."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices) -> "LabelledImages":
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices])


def resize_images(images, image_size: int, batch: int = 256) -> np.ndarray:
    """Resizes uint8 ``[N, H, W, C]`` images to ``image_size`` squared (bilinear, antialiased)."""
    images = np.asarray(images)
    if images.shape[1:3] == (image_size, image_size):
        return images
    out = []
    for start in range(0, len(images), batch):
        chunk = tf.image.resize(images[start:start + batch], (image_size, image_size), antialias=True)
        out.append(np.clip(np.round(chunk.numpy()), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, image_size, image_size, images.shape[-1]), np.uint8)


def load(spec: str, *, image_size: int, data_dir=None, manual_dir=None, synthetic_per_class=100,
         seed=0, max_pixels=None) -> LabelledImages:
    """Loads the dataset named by ``spec`` (see the module docstring), resized to ``image_size``.
    ``max_pixels``: an image folder's larger images are refused (:func:`read_image`)."""
    if spec in TFDS_DATASETS:
        return _load_tfds(spec, image_size, data_dir, manual_dir)
    if spec == SYNTHETIC:
        from scl_amp_tf import synthetic_wafers

        maps, labels, _ = synthetic_wafers.generate(synthetic_per_class, seed=seed)
        images = resize_images(maps[..., None].astype(np.uint8) * WAFER_SCALE, image_size)
        return LabelledImages(images, labels.astype(np.int64), tuple(synthetic_wafers.CLASS_NAMES),
                              f"SYNTHETIC wafer maps ({synthetic_per_class} per class, seed {seed})")
    if spec.startswith("folder:"):
        return load_image_folder(spec[len("folder:"):], image_size, max_pixels)
    raise DataError(
        f"--dataset={spec!r} is not known. Use one of {', '.join(TFDS_DATASETS + (SYNTHETIC,))} "
        "or folder:/path/to/root (one sub-folder of images per class).")


def _load_tfds(name, image_size, data_dir, manual_dir) -> LabelledImages:
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
        try:
            builder.download_and_prepare(download_config=config)
        except (AssertionError, FileNotFoundError, OSError, ValueError) as e:
            raise DataError(
                f"The {name} dataset is not prepared and could not be built from its manual files.\n{e}\n"
                f"Put the files where the message above says, or pass --manual_dir=/path/to/them "
                f"(the TFDS data is written to --data_dir={builder.data_dir_root}).") from e
    dataset = builder.as_dataset(split="train", shuffle_files=False)
    images, labels = [], []
    for example in dataset.as_numpy_iterator():
        image = example["image"]
        if name == "mixed_wm38":
            image = image * WAFER_SCALE
        images.append(resize_images(image[None], image_size)[0])
        labels.append(example["label"])
    names = tuple(builder.info.features["label"].names)
    note = " (89 % partial copy)" if name == "mixed_wm38" and len(labels) < 38015 else ""
    return LabelledImages(np.stack(images), np.asarray(labels, np.int64), names,
                          f"{name} v{builder.info.version}: {len(labels)} images{note}")


def load_dataset(spec, image_size, *, data_dir=None, manual_dir=None, synthetic_per_class=100, seed=0,
                 classes=None, max_pixels=None) -> LabelledImages:
    """A run's dataset: :func:`load`, then ``classes`` (comma-separated names) keeps only those
    classes (``--classes``, e.g. Table IV's base classes)."""
    data = load(spec, image_size=image_size, data_dir=data_dir, manual_dir=manual_dir,
                synthetic_per_class=synthetic_per_class, seed=seed, max_pixels=max_pixels)
    return select_classes(data, classes) if classes else data


def load_image_folder(root, image_size: int, max_pixels=None) -> LabelledImages:
    """Reads ``root/<class>/<image>`` (png, jpg, bmp, gif; any size; gray or RGB).

    Class ids follow the sorted sub-folder names. All images become gray (1 channel) if every
    one is gray, else RGB. Raises :class:`DataError` naming the folder or file at fault.
    """
    root = pathlib.Path(os.path.expanduser(root))
    if not root.is_dir():
        raise DataError(f"--dataset=folder:{root}: no such directory. Give the folder that holds "
                        "one sub-folder of images per class, e.g. folder:/data/defects with "
                        "/data/defects/scratch/001.png.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{root} has {len(class_dirs)} class sub-folder(s); at least 2 are needed "
                        "(one sub-folder of images per class).")
    decoded, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir()  # a folder named x.png is no image; a broken link is
                       if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
                       and (p.is_file() or not p.exists()))
        if not files:
            raise DataError(f"Class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                            "Add images or remove the folder.")
        for path in files:
            decoded.append(read_image(path, max_pixels))
            labels.append(label)
    channels = 1 if all(im.shape[-1] == 1 for im in decoded) else 3
    return LabelledImages(_resize_to(decoded, image_size, channels), np.asarray(labels, np.int64),
                          tuple(p.name for p in class_dirs), f"image folder {root}: {len(labels)} images")


def list_images(path):
    """``path`` itself if it is a file, else every image file under the folder (any depth), sorted
    (the edge runner's lister, which must stay free of TensorFlow). Raises :class:`DataError`
    when there is nothing to read."""
    from scl_amp_tf.edge import edge_classify

    try:
        return edge_classify.image_files(os.path.expanduser(str(path)))
    except FileNotFoundError as e:
        raise DataError(str(e)) from None


def image_pixels(path):
    """Width x height from the file's header (PNG, JPEG, BMP, GIF) without decoding it, or None
    when the header cannot be read (then decoding will say what is wrong)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.width * image.height
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def read_image(path, max_pixels=None):
    """One image file as uint8 ``[H, W, 1 or 3]`` (RGBA loses alpha); DataError names a bad file.

    ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`): larger images are refused before they are
    decoded (a small PNG can hold 8000 x 8000 pixels, and decoding it takes gigabytes)."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    pixels = image_pixels(path) if os.path.exists(path) else None
    if pixels is not None and pixels > limit:
        raise DataError(f"{path} has {pixels:,} pixels, above the limit of {limit:,} "
                        "(--max_image_pixels for training). Crop or shrink it, or raise the limit.")
    try:
        image = tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        raise DataError(f"Cannot decode image {path}: {e.message.strip()}. Fix or remove the file.") from None
    except tf.errors.OpError as e:  # a broken link, no permission, a device error
        raise DataError(f"Cannot read image {path}: {e.message.strip()}. Fix or remove the file.") from None
    if image.shape[-1] not in (1, 3, 4):
        raise DataError(f"{path} has {image.shape[-1]} channels; expected gray, RGB or RGBA.")
    return image.numpy()[..., :3] if image.shape[-1] == 4 else image.numpy()


def to_channels(image, channels):
    """A decoded uint8 ``[H, W, 1 or 3]`` image with ``channels`` (gray -> RGB by copies, RGB ->
    gray by the ITU-R 601 luma weights, rounded): how training reads a folder of mixed images."""
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    return np.clip(np.round(tf.image.rgb_to_grayscale(image).numpy()), 0, 255).astype(np.uint8)


def _resize_to(decoded, image_size, channels):
    """Decoded images -> uint8 ``[N, S, S, channels]``."""
    return np.stack([resize_images(to_channels(im, channels)[None], image_size)[0] for im in decoded])


def load_unlabeled(spec: str, image_size: int, channels: int, max_pixels=None) -> np.ndarray:
    """Images without labels for ``--unlabeled_data=folder:/path``: every image under the folder
    (any depth, any layout; class sub-folders, if any, are ignored), resized to ``image_size`` and
    converted to the labelled data's ``channels``. Raises :class:`DataError` naming the problem."""
    if not spec.startswith("folder:"):
        raise DataError(f"--unlabeled_data={spec!r}: use rest (the dataset's images that are neither "
                        "training nor test images) or folder:/path/to/images.")
    root = pathlib.Path(os.path.expanduser(spec[len("folder:"):]))
    if not root.is_dir():
        raise DataError(f"--unlabeled_data={spec}: no such directory.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"--unlabeled_data={spec}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")
    return _resize_to([read_image(p, max_pixels) for p in files], image_size, channels)


def split(data: LabelledImages, *, seed: int, shots_per_class=None, train_fraction=None, test_fraction=None):
    """Small-data split of section IV: ``(train_indices, test_indices)``.

    ``shots_per_class=k``: k training images per class, every other image is a test image
    (NEU Table III, MixedWM38 Table VI). ``train_fraction=f``: a stratified fraction f of every
    class (Table II, Table V); ``f = 1`` trains on every image and leaves no test set (the base
    classes of the few-shot Table IV). ``test_fraction=t`` (with ``shots_per_class``): a
    stratified fraction t of every class is held out as the test set first, the k training
    images are drawn from the rest, and what is left of the rest is neither (see
    :func:`remaining`: the unlabeled pool of semi-supervised runs; Table VI's "20 % test, k per
    class for training"). Exact duplicate images are grouped, so that a picture never sits on two
    sides (NEU's Pa_101 and Pa_105 are identical), also when it is filed under two classes.
    """
    if (shots_per_class is None) == (train_fraction is None):
        raise DataError("Give exactly one of --shots_per_class and --train_fraction.")
    if shots_per_class is not None and shots_per_class < 1:
        raise DataError(f"--shots_per_class={shots_per_class} must be at least 1.")
    if train_fraction is not None and not 0.0 < train_fraction <= 1.0:
        raise DataError(f"--train_fraction={train_fraction} must lie in (0, 1].")
    if test_fraction is not None:
        if shots_per_class is None:
            raise DataError("--test_fraction goes with --shots_per_class (with --train_fraction the test "
                            "set is already the rest of each class).")
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"--test_fraction={test_fraction} must be strictly between 0 and 1.")
    rng = np.random.default_rng(seed)
    digests = _digests(data.images)
    train, test = [], []
    for label, name in enumerate(data.class_names):
        members = np.flatnonzero(data.labels == label)
        if len(members) == 0:
            raise DataError(f"Class {name!r} has no images.")
        groups = {}
        for index in members:
            groups.setdefault(digests[index], []).append(index)
        order = list(groups.values())
        rng.shuffle(order)
        if test_fraction is not None:
            held_out = int(round(test_fraction * len(members)))
            taken_test, order = _take(order, held_out)
            test.extend(taken_test)
            pool = len(members) - len(taken_test)
            want = shots_per_class
            if held_out < 1 or want >= pool:
                raise DataError(
                    f"Class {name!r} has {len(members)} images: a test set of {held_out} and {want} "
                    "training images per class do not fit (each needs one image at least, and the "
                    "training images must leave one for the test set). Lower --shots_per_class or "
                    "change --test_fraction.")
        else:
            want = shots_per_class if shots_per_class is not None else int(round(train_fraction * len(members)))
            if want < 1 or (want >= len(members) and train_fraction != 1.0):
                raise DataError(
                    f"Class {name!r} has {len(members)} images: a training set of {want} per class "
                    "leaves no test image (or no training image). Lower --shots_per_class or change "
                    "--train_fraction.")
        train.extend(_take(order, want)[0])
    train = np.sort(np.asarray(train, np.int64))
    if test_fraction is not None:
        # a picture filed under two classes is grouped within each class only: a test copy of a
        # training image (from another class's folder) leaves the test set
        test = np.asarray(test, np.int64)
        return train, np.sort(test[~np.isin(digests[test], digests[train])])
    in_train = np.isin(digests, digests[train])
    return train, np.flatnonzero(~in_train)


def remaining(data: LabelledImages, train, test):
    """Indices of the images that are neither training nor test images (nor a duplicate of one)."""
    digests = _digests(data.images)
    used = np.isin(digests, digests[np.concatenate([train, test]).astype(np.int64)])
    return np.flatnonzero(~used)


def select_classes(data: LabelledImages, names) -> LabelledImages:
    """The images of the classes ``names`` only (relabelled 0..k-1 in the dataset's class order).

    The few-shot setting of Table IV trains on some classes and meets the others only as k-shot
    references. Raises :class:`DataError` naming any class the dataset does not have.
    """
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in names if n not in data.class_names]
    if unknown or len(set(names)) < 2:
        raise DataError(f"--classes={','.join(names)}: " + (
            f"no class {', '.join(map(repr, unknown))} in {data.description}; its classes are "
            f"{', '.join(data.class_names)}." if unknown else "give two different classes at least."))
    keep = [i for i, n in enumerate(data.class_names) if n in names]
    mask = np.isin(data.labels, keep)
    relabel = np.full(data.num_classes, -1, np.int64)
    relabel[keep] = np.arange(len(keep))
    return LabelledImages(data.images[mask], relabel[data.labels[mask]],
                          tuple(data.class_names[i] for i in keep),
                          f"{data.description}, classes {','.join(data.class_names[i] for i in keep)}")


def _digests(images):
    return np.array([hashlib.sha1(im.tobytes()).hexdigest() for im in images])


def _take(groups, want):
    """Greedily takes whole duplicate groups, in order, up to ``want`` images: (taken, rest)."""
    taken, rest = [], []
    for group in groups:
        if len(taken) < want and len(taken) + len(group) <= want:
            taken.extend(group)
        else:
            rest.append(group)
    return taken, rest


def to_float(images):
    """uint8 images -> float32 in [0, 1] (the model's input)."""
    return tf.cast(images, tf.float32) / 255.0
