"""Labelled image sources: builtin datasets, image folders and CSV files.

``load_source(spec)`` turns a spec string into a :class:`Source`:

* ``builtin:digits`` -- scikit-learn's 8x8 digits (1797 images, values 0..16
  scaled to uint8 0..255), classes ``"0"`` .. ``"9"``, no test split.
* ``builtin:fashion-mnist`` -- the IDX files of the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, or the
  directory in ``$TRANSFERKIT_FASHION_MNIST_DIR``); official 60k/10k splits.
* ``builtin:synth-digits`` -- the digits 0..9 rendered from matplotlib's TrueType
  fonts (random font, stroke, rotation, height, shift; seed 0), reduced like
  scikit-learn's digits (32x32 bitmap -> 8x8 counts 0..16, scaled to 0..255): 180 per
  class, classes as ``builtin:digits``, no test split. A synthetic domain for
  ``builtin:digits`` (:mod:`transferkit.data.synthetic`).
* ``builtin:fashion-mnist-m`` -- Fashion-MNIST's 10k official *test* images blended
  onto random patches of scikit-image's sample photos as MNIST-M is made
  (``|patch_c - image|`` per channel, seed 0), RGB, labels and classes as Fashion-MNIST's
  test split, no test split (made from test images so that no garment of
  ``builtin:fashion-mnist``'s train split reappears in it).
* a folder with one sub-folder per class (ImageFolder layout, searched
  recursively), or with ``train/`` and optionally ``test/`` sub-folders each in
  that layout (the test split is then kept).
* with ``allow_unlabelled=True`` (``adapt``'s target), also a folder of images without
  class sub-folders: an *unlabelled* source, ``classes == []`` and every target ``-1``.
* a CSV file with header ``path,label`` and an optional ``split`` column
  (``train``/``test``); paths are relative to the CSV's folder. Each row has
  one field per header column (quote fields that contain commas; empty
  trailing fields are ignored, blank lines skipped); a row with more or fewer
  fields, or an empty path or label, is refused with its line number.

Folders are scanned by :func:`transferkit.data.files.iter_image_files` (hidden
files and folders, AppleDouble ``._*``, ``.ipynb_checkpoints/`` and
``__MACOSX/`` skipped). Class names are sorted as strings (the torchvision
ImageFolder order); a class folder's name becomes its class name through
:func:`~transferkit.data.files.display_name`, so a name that is not UTF-8
(``b"caf\\xe9"``) gives the printable, JSON-safe class ``"caf\\xe9"``. Every
file image is opened and decoded once at load time (JPEGs at reduced DCT
scale), so a corrupt file fails here, not in the middle of training. Images
are turned upright by their EXIF orientation (phone photos) before use.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.utils.data
from PIL import Image, ImageOps

from transferkit.data.files import IMAGE_EXTENSIONS, display_name, iter_image_files, quoted, subfolders
from transferkit.errors import DataError

EXIF_ORIENTATION = 0x0112
BUILTINS = ("digits", "fashion-mnist", "synth-digits", "fashion-mnist-m")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


class ImageSet(torch.utils.data.Dataset):
    """A labelled image collection; ``set[i] -> (RGB PIL image, class index)``.

    Images are held either as one uint8 array, (N, H, W) grayscale or
    (N, H, W, 3) RGB, or as a list of file paths decoded on access. A subset
    shares that storage and only keeps the positions it selects, so
    ``subset`` is cheap and :meth:`fingerprint` stays exact.
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[str | Path],
        targets: np.ndarray | Sequence[int],
        classes: Sequence[str],
        name: str = "images",
        *,
        key: str | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        """``key`` identifies the content (defaults to ``name``); ``indices``
        select positions of ``images``/``targets`` (defaults to all)."""
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or not (
                images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
            ):
                raise DataError(
                    f"image array for {name!r} must be uint8 (N,H,W) or (N,H,W,3), "
                    f"got {images.dtype} {images.shape}"
                )
        else:
            images = [Path(p) for p in images]
        self._images = images
        self._targets = np.asarray(targets, dtype=np.int64)
        if len(self._targets) != len(images):
            raise DataError(f"{name!r} has {len(images)} images but {len(self._targets)} labels")
        self._indices = (
            np.arange(len(images), dtype=np.int64) if indices is None
            else np.asarray(indices, dtype=np.int64)
        )
        self.classes = list(classes)
        self.name = name
        self._key = key or name

    @property
    def targets(self) -> np.ndarray:
        """Class index of each image (int64)."""
        return self._targets[self._indices]

    @property
    def paths(self) -> list[Path] | None:
        """File path of each image, or None for an in-memory set."""
        if isinstance(self._images, np.ndarray):
            return None
        return [self._images[i] for i in self._indices]

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        j = int(self._indices[i])
        if isinstance(self._images, np.ndarray):
            return Image.fromarray(self._images[j]).convert("RGB"), int(self._targets[j])
        return open_image(self._images[j]), int(self._targets[j])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        """The images at ``indices`` (positions in this set), sharing storage."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            self._images, self._targets, self.classes, self.name,
            key=self._key, indices=self._indices[indices],
        )

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name, in class order (zeros included)."""
        counts = np.bincount(self.targets, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def fingerprint(self) -> str:
        """Short stable hash of the set's identity: source content key + selected positions."""
        h = hashlib.sha256(self._key.encode("utf-8", "surrogatepass"))
        h.update(self._indices.astype("<i8").tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {len(self)} images, {len(self.classes)} classes)"


def open_image(path: Path | str) -> Image.Image:
    """The image file at ``path`` as an upright RGB PIL image (EXIF orientation applied)."""
    with Image.open(path) as image:
        return as_rgb(image)


def as_rgb(image: Image.Image) -> Image.Image:
    """An image as :func:`open_image` gives it: upright (EXIF orientation applied), RGB (any mode)."""
    if _orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def _orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (1 = upright); a damaged EXIF block counts as upright."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # PIL raises many kinds on broken EXIF; the pixels are still fine
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: palette transparency goes through RGBA (no PIL
    warning); 16/32-bit integer images are scaled by 1/257 (0..65535 -> 0..255)
    and float images from 0..1, instead of PIL's clipping to white."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode.startswith("I"):
        array = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64) * 255
        image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
    return image.convert("RGB")


@dataclass
class Source:
    """A loaded data source: its train set, the test set it ships with (if any),
    and the files skipped as unreadable with ``skip_bad_images=True``."""

    train: ImageSet
    test: ImageSet | None
    classes: list[str]
    spec: str
    skipped: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """False for a folder of images without class folders (``allow_unlabelled``)."""
        return bool(self.classes)

    def content(self) -> dict:
        """:func:`content_fingerprint` of the train set and the test set it ships with (if any)."""
        return content_fingerprint(self.train, *([self.test] if self.test is not None else []))


def content_fingerprint(*sets: ImageSet) -> dict:
    """What ``sets`` hold, to tell whether images were added, removed or replaced since a run started:
    ``{"images": count, "hash": ...}``. A file set hashes each image's path relative to the set's common
    folder, its size and its class (so a copy of the data elsewhere is the same data; a rewritten image
    of the same size is not noticed); an in-memory set its content key and positions."""
    h = hashlib.sha256()
    for s in sets:
        h.update(b"\1")
        paths = s.paths
        if paths is None:
            h.update(s.fingerprint().encode())
            continue
        top = os.path.commonpath(paths) if paths else ""
        for p, t in zip(paths, s.targets):
            rel = os.path.relpath(p, top) if len(paths) > 1 else p.name
            h.update(f"\0{rel}\0{p.stat().st_size}\0{t}".encode("utf-8", "surrogatepass"))
    return {"images": sum(len(s) for s in sets), "hash": h.hexdigest()[:16]}


def load_source(spec: str, skip_bad_images: bool = False, allow_unlabelled: bool = False) -> Source:
    """Load the data source named by ``spec`` (see the module docstring).

    Raises DataError on a missing path, an unknown builtin, an empty folder or
    class, a malformed CSV, fewer than two classes, or an unreadable image file
    (unless ``skip_bad_images``, which skips it and lists it in ``skipped``).
    """
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name == "digits":
            source = _load_digits(spec)
        elif name == "fashion-mnist":
            source = _load_fashion_mnist(spec)
        elif name == "synth-digits":
            source = _load_synth_digits(spec)
        elif name == "fashion-mnist-m":
            source = _load_fashion_mnist_m(spec)
        else:
            raise DataError(
                f"unknown builtin dataset {spec!r}; available: "
                + ", ".join(f"builtin:{b}" for b in BUILTINS)
            )
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(
                f"data path {quoted(path)} does not exist; give an image folder, a CSV file "
                "or one of " + ", ".join(f"builtin:{b}" for b in BUILTINS)
            )
        if path.is_dir() and allow_unlabelled and not subfolders(path):
            return _load_unlabelled_folder(spec, path.resolve(), skip_bad_images)
        if path.is_dir():
            source = _load_folder(spec, path.resolve(), skip_bad_images)
        elif path.suffix.lower() == ".csv":
            source = _load_csv(spec, path.resolve(), skip_bad_images)
        else:
            raise DataError(
                f"data path {quoted(path)} is neither a folder nor a .csv file; give an image folder "
                "(one sub-folder per class) or a CSV with header path,label"
            )
    if len(source.classes) < 2:
        raise DataError(
            f"{spec!r} has {len(source.classes)} class(es) ({', '.join(source.classes)}); "
            "classification needs at least 2"
        )
    return source


# ----------------------------------------------------------------- builtins


def _load_digits(spec: str) -> Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    classes = [str(c) for c in digits.target_names]
    train = ImageSet(images, digits.target, classes, "digits/train", key="builtin:digits/train")
    return Source(train=train, test=None, classes=classes, spec=spec)


def _load_synth_digits(spec: str) -> Source:
    from transferkit.data.synthetic import content_key, synth_digits

    levels, labels = synth_digits(per_class=180, seed=0)
    images = np.round(levels * (255 / 16)).astype(np.uint8)   # the scaling of builtin:digits
    classes = [str(c) for c in range(10)]
    key = content_key("builtin:synth-digits/train", images, labels)
    train = ImageSet(images, labels, classes, "synth-digits/train", key=key)
    return Source(train=train, test=None, classes=classes, spec=spec)


def _load_fashion_mnist_m(spec: str) -> Source:
    from transferkit.data.synthetic import background_photos, blend_on_photos, content_key

    grey, labels = _fashion_mnist_arrays("t10k")
    images = blend_on_photos(grey, background_photos(), seed=0)
    key = content_key("builtin:fashion-mnist-m/train", images, labels)
    classes = list(FASHION_MNIST_CLASSES)
    train = ImageSet(images, labels, classes, "fashion-mnist-m/train", key=key)
    return Source(train=train, test=None, classes=classes, spec=spec)


def _load_fashion_mnist(spec: str) -> Source:
    classes = list(FASHION_MNIST_CLASSES)
    sets = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _fashion_mnist_arrays(prefix)
        sets[split] = ImageSet(
            images, labels, classes, f"fashion-mnist/{split}", key=f"builtin:fashion-mnist/{split}"
        )
    return Source(train=sets["train"], test=sets["test"], classes=classes, spec=spec)


def _fashion_mnist_arrays(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the split ``train`` or ``t10k``."""
    root = Path(os.environ.get("TRANSFERKIT_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    images = _read_idx(_find_idx(root, f"{prefix}-images", "idx3"))
    labels = _read_idx(_find_idx(root, f"{prefix}-labels", "idx1")).astype(np.int64)
    return images, labels


def _find_idx(root: Path, stem: str, kind: str) -> Path:
    """Find e.g. ``train-images-idx3-ubyte[.gz]`` (or the ``.idx3`` spelling) in ``root``."""
    for name in (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"):
        for suffix in ("", ".gz"):
            if (root / (name + suffix)).is_file():
                return root / (name + suffix)
    raise DataError(
        f"Fashion-MNIST file {stem}-{kind}-ubyte[.gz] not found in {quoted(root)}; "
        "install it with `apt-get install dataset-fashion-mnist` "
        "or set TRANSFERKIT_FASHION_MNIST_DIR to the folder holding the IDX files"
    )


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (unsigned-byte data, optionally gzipped) into an array."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {quoted(path)} ({e}); reinstall dataset-fashion-mnist") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{quoted(path)} is not an unsigned-byte IDX file; reinstall dataset-fashion-mnist")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise DataError(f"IDX file {quoted(path)} is truncated; reinstall dataset-fashion-mnist")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


# ----------------------------------------------------------- image folders


def _load_folder(spec: str, root: Path, skip_bad: bool) -> Source:
    subdirs = subfolders(root)
    split_layout = "train" in {d.name for d in subdirs}
    test_dir = root / "test"
    if split_layout:
        extra = [display_name(d.name) for d in subdirs if d.name not in ("train", "test")]
        if extra:
            raise DataError(
                f"{quoted(root)} has train/ next to {', '.join(extra)}/; a split layout may only "
                "contain train/ and test/ (or put every class folder directly in the root)"
            )
        train_files = _scan_class_folders(root / "train", root)
        test_files = _scan_class_folders(test_dir, root) if test_dir.is_dir() else None
    else:
        train_files, test_files = _scan_class_folders(root, root), None

    classes = sorted(train_files)
    if test_files is not None:
        unknown = sorted(set(test_files) - set(train_files))
        if unknown:
            raise DataError(
                f"{quoted(test_dir)} has class folder(s) {', '.join(unknown)} missing from train/; "
                "every test class needs training images"
            )
    all_files = [p for files in train_files.values() for p in files]
    all_files += [p for files in (test_files or {}).values() for p in files]
    bad = check_images(all_files, skip_bad)

    def build(files: dict[str, list[Path]], split: str, split_root: Path) -> ImageSet:
        paths, targets = [], []
        for c in sorted(files):
            good = [p for p in files[c] if p not in bad]
            if not good:
                raise DataError(
                    f"class folder {quoted(split_root / c)} has no readable images "
                    f"({len(files[c])} skipped as corrupt); remove the folder or fix its files"
                )
            paths += good
            targets += [classes.index(c)] * len(good)
        return ImageSet(
            paths, targets, classes, f"{display_name(root.name)}/{split}",
            key=_file_key(f"folder:{root}/{split}", paths, targets),
        )

    train = build(train_files, "train", root / "train" if split_layout else root)
    test = build(test_files, "test", test_dir) if test_files else None
    return Source(train=train, test=test, classes=classes, spec=spec,
                  skipped=[display_name(p) for p in sorted(bad)])


def _load_unlabelled_folder(spec: str, root: Path, skip_bad: bool) -> Source:
    """A folder of images without class folders: one unlabelled set (targets -1, no classes)."""
    files = list(iter_image_files(root))
    bad = check_images(files, skip_bad)
    paths = [p for p in files if p not in bad]
    if not paths:
        raise DataError(f"{quoted(root)} contains no readable images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    targets = [-1] * len(paths)
    train = ImageSet(paths, targets, [], f"{display_name(root.name)}/unlabelled",
                     key=_file_key(f"folder:{root}/unlabelled", paths, targets))
    return Source(train=train, test=None, classes=[], spec=spec, skipped=[display_name(p) for p in sorted(bad)])


def _scan_class_folders(folder: Path, root: Path) -> dict[str, list[Path]]:
    """Map each class name (the sub-folder's ``display_name``) of ``folder`` to its image files (``root``: the
    data root, which no class folder may lead back into)."""
    subdirs = subfolders(folder, root)
    if not subdirs:
        has_images = any(True for _ in iter_image_files(folder))
        raise DataError(
            f"{quoted(folder)} has no class sub-folders"
            + (" (its images lie directly in it)" if has_images else "")
            + "; put each class's images in a sub-folder named after the class"
        )
    files: dict[str, list[Path]] = {}
    for d in subdirs:
        name = display_name(d.name)
        if name in files:
            raise DataError(
                f"class folders {quoted(d)} and another one are both shown as '{name}'; rename one"
            )
        files[name] = list(iter_image_files(d))
    if not any(files.values()):
        raise DataError(
            f"{quoted(folder)} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
            "in its class sub-folders"
        )
    for d, paths in zip(subdirs, files.values()):
        if not paths:
            raise DataError(f"class folder {quoted(d)} has no images; add images or remove the folder")
    return files


# --------------------------------------------------------------------- CSV


def _read_csv(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of each non-blank row, fields stripped; a malformed header or row
    (wrong field count, empty path or label) is refused naming its line."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            columns = [c.strip() for c in next(reader, [])]
            while columns and not columns[-1]:  # a trailing comma on the header
                columns.pop()
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise DataError(
                    f"CSV {quoted(csv_path)} lacks column(s) {', '.join(missing)} "
                    f"(found: {display_name(', '.join(columns)) or 'none'}); its header must be path,label[,split]"
                )
            return [(reader.line_num, _csv_row(csv_path, reader.line_num, columns, fields))
                    for fields in reader if any(v.strip() for v in fields)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"cannot read CSV {quoted(csv_path)} ({display_name(e)}); give a UTF-8 CSV with header path,label"
        ) from None


def _csv_row(csv_path: Path, line: int, columns: list[str], fields: list[str]) -> dict[str, str]:
    """One CSV record as ``{column: value}``: exactly one field per column (empty
    trailing fields, as a trailing comma leaves, are ignored), path and label non-empty."""
    values = [v.strip() for v in fields]
    while len(values) > len(columns) and not values[-1]:
        values.pop()
    where = f"CSV {quoted(csv_path)} line {line}"
    if len(values) != len(columns):
        got = display_name(",".join(values))
        raise DataError(
            f"{where}: expected {','.join(columns)}, got {len(values)} field{'s' * (len(values) != 1)}: "
            f"{got[:120]}{'...' * (len(got) > 120)}; quote fields that contain commas"
        )
    row = dict(zip(columns, values))
    for column in ("path", "label"):
        if not row[column]:
            raise DataError(f"{where}: empty {column}; fill it or delete the row")
    return row


def _load_csv(spec: str, csv_path: Path, skip_bad: bool) -> Source:
    rows = _read_csv(csv_path)
    if not rows:
        raise DataError(f"CSV {quoted(csv_path)} has a header but no rows; add one row per image")
    base = csv_path.parent
    items: dict[str, list[tuple[Path, str]]] = {"train": [], "test": []}
    for line, row in rows:
        split = row.get("split") or "train"
        if split not in items:
            raise DataError(
                f"CSV {quoted(csv_path)} line {line}: split '{display_name(split)}'; use train or test"
            )
        items[split].append((base / row["path"], display_name(row["label"])))

    absent = [p for rows_ in items.values() for p, _ in rows_ if not p.is_file()]
    if absent:
        raise DataError(
            f"CSV {quoted(csv_path)} references {len(absent)} missing file(s), e.g. {quoted(absent[0])}; "
            "paths are relative to the CSV's folder"
        )
    if not items["train"]:
        raise DataError(f"CSV {quoted(csv_path)} has no train rows; mark training images with split=train")
    classes = sorted({label for _, label in items["train"]})
    class_index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({label for _, label in items["test"]} - set(classes))
    if unknown:
        raise DataError(
            f"CSV {quoted(csv_path)} has test label(s) {', '.join(unknown)} with no train rows; "
            "every test class needs training images"
        )
    bad = check_images([p for rows_ in items.values() for p, _ in rows_], skip_bad)

    def build(split: str) -> ImageSet:
        good = [(p, label) for p, label in items[split] if p not in bad]
        emptied = sorted({label for _, label in items[split]} - {label for _, label in good})
        if emptied:
            raise DataError(
                f"class {emptied[0]!r} in CSV {quoted(csv_path)} ({split}) has no readable images left "
                "after skipping corrupt files; fix or remove its rows"
            )
        paths = [p for p, _ in good]
        targets = [class_index[label] for _, label in good]
        return ImageSet(
            paths, targets, classes, f"{display_name(csv_path.stem)}/{split}",
            key=_file_key(f"csv:{csv_path}/{split}", paths, targets),
        )

    train = build("train")
    test = build("test") if items["test"] else None
    return Source(train=train, test=test, classes=classes, spec=spec,
                  skipped=[display_name(p) for p in sorted(bad)])


# -------------------------------------------------------------- checking


def check_images(paths: Sequence[Path], skip_bad: bool) -> set[Path]:
    """Decode every file once; return the unreadable ones, or raise DataError
    naming the first unless ``skip_bad``. JPEGs decode at 1/8 scale (``draft``), so thousands of
    files take seconds; decoding runs in threads (PIL releases the GIL)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        errors = list(pool.map(_image_error, paths))
    bad = {p: e for p, e in zip(paths, errors) if e is not None}
    if bad and not skip_bad:
        path, error = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(
            f"unreadable image {quoted(path)}{more}: {error}; "
            "fix or delete it, or pass --skip-bad-images to skip such files"
        )
    return set(bad)


def _image_error(path: Path) -> str | None:
    """None if ``path`` decodes as an image, else a short reason."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (64, 64))
            image.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return display_name(f"{type(e).__name__}: {e}".splitlines()[0])[:200]
    return None


def _file_key(prefix: str, paths: list[Path], targets: list[int]) -> str:
    """Content key of a file list: location, each file's name, size, mtime and label."""
    h = hashlib.sha256(prefix.encode("utf-8", "surrogatepass"))
    for p, t in zip(paths, targets):  # names that are not UTF-8 hold surrogates: surrogatepass
        st = p.stat()
        h.update(f"\0{p}\0{st.st_size}\0{st.st_mtime_ns}\0{t}".encode("utf-8", "surrogatepass"))
    return f"{prefix}#{h.hexdigest()[:16]}"
