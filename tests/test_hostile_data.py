"""Files from the wild: hostile inputs to ``load_source``, ``predict`` and ``transferkit predict``.

Each case builds real files on disk, then calls the library (or the CLI) once.
Every case asserts its outcome -- loaded as documented, or refused with a
TransferkitError whose message is one printable line naming the problem -- and
that nothing on disk changed (every file byte-identical, no file added).
The ids read as the list of what is handled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import torch
from safetensors.torch import save_file

from transferkit.data import load_source
from transferkit.errors import ConfigError, DataError, ModelError, RunDirError, TransferkitError, WeightsError
from transferkit.predict import predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ------------------------------------------------------------------ helpers


def image(path: Path | bytes, size=(24, 16), seed=0, **save) -> Path | bytes:
    """Write a random RGB image (format from the suffix) at ``path`` (str, Path or bytes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save)
    return path


def classes(root: Path, names=("ant", "bee"), per_class=2) -> Path:
    """An ImageFolder: root/<name>/<n>.png."""
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            image(root / name / f"{n}.png", seed=10 * c + n)
    return root


def bytes_path(folder: Path, name: bytes) -> bytes:
    return os.path.join(os.fsencode(folder), name)


def tree_digest(root: Path) -> dict[bytes, bytes]:
    """Every entry under ``root`` (names as bytes) -> content hash, link target or 'dir'."""
    top = os.fsencode(root)
    digest = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, top)
            if os.path.islink(path):
                digest[key] = b"link:" + os.readlink(path)
            elif os.path.isdir(path):
                digest[key] = b"dir"
            else:
                with open(path, "rb") as f:
                    digest[key] = hashlib.sha256(f.read()).digest()
    return digest


def refused(error: type[TransferkitError], *words: str):
    """Expected outcome: ``error`` whose one-line message contains every word."""
    return ("refused", error, words)


def loads(check=lambda result: True):
    """Expected outcome: a result for which ``check(result)`` is true."""
    return ("loads", check)


def assert_outcome(call, expect):
    if expect[0] == "refused":
        _, error, words = expect
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and message.isprintable(), message
        message.encode("utf-8")
        for word in words:
            assert word in message, message
    else:
        result = call()
        assert expect[1](result), result


def bomb_png(path: Path) -> Path:
    """A 30000 x 30000 PNG header with no pixel data: PIL refuses it as a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def exif_jpeg(path: Path, orientation) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image(path, size=(40, 20), exif=exif)


# ------------------------------------------------------- load_source cases
# Each builder writes files under tmp and returns the spec (and load_source keywords).


def exif_rotated(tmp):
    exif_jpeg(classes(tmp / "ds") / "bee" / "phone.jpg", 6)
    return tmp / "ds"


def ipynb_checkpoints(tmp):
    root = classes(tmp / "ds")
    (root / "ant" / ".ipynb_checkpoints").mkdir()
    image(root / "ant" / ".ipynb_checkpoints" / "0-checkpoint.png")
    return root


def macosx_folder(tmp):
    root = classes(tmp / "ds")
    (root / "__MACOSX" / "ant").mkdir(parents=True)
    (root / "__MACOSX" / "ant" / "._0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    return root


def appledouble_and_hidden(tmp):
    root = classes(tmp / "ds")
    (root / "bee" / "._0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "bee" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".hidden_class").mkdir()
    image(root / ".hidden_class" / "x.png")
    return root


def non_utf8_file(tmp):
    root = classes(tmp / "ds")
    image(bytes_path(root / "bee", b"caf\xe9.png"), format="PNG")
    return root


def non_utf8_class(tmp):
    root = classes(tmp / "ds")
    os.mkdir(bytes_path(root, b"caf\xe9"))
    image(os.path.join(bytes_path(root, b"caf\xe9"), b"\xff.png"), format="PNG")
    return root


def non_utf8_root(tmp):
    classes(tmp / "ds")
    os.rename(bytes_path(tmp, b"ds"), bytes_path(tmp, b"d\xe9s"))
    return os.fsdecode(bytes_path(tmp, b"d\xe9s"))


def newline_in_name(tmp):
    root = classes(tmp / "ds")
    image(root / "bee" / "two\nlines.png")
    return root


def corrupt_non_utf8_name(tmp):
    root = classes(tmp / "ds")
    with open(bytes_path(root / "bee", b"bad\xff.png"), "wb") as f:
        f.write(b"not an image")
    return root


def colliding_class_names(tmp):
    root = classes(tmp / "ds")
    for name in (b"caf\xe9", b"caf\\xe9"):  # Latin-1 byte vs a literal backslash-x-e-9
        os.mkdir(bytes_path(root, name))
        image(os.path.join(bytes_path(root, name), b"0.png"), format="PNG")
    return root


def trailing_slash(tmp):
    return str(classes(tmp / "ds")) + "/"


def symlinked_class(tmp):
    root = classes(tmp / "ds")
    classes(tmp / "elsewhere", names=("wasp",))
    (root / "wasp").symlink_to(tmp / "elsewhere" / "wasp", target_is_directory=True)
    return root


def symlink_loop(tmp):
    root = classes(tmp / "ds")
    (root / "ant" / "again").symlink_to(root, target_is_directory=True)
    return root


def dangling_symlink(tmp):
    root = classes(tmp / "ds")
    (root / "ant" / "gone.png").symlink_to(tmp / "nowhere.png")
    return root


def zero_byte(skip):
    def build(tmp):
        root = classes(tmp / "ds")
        (root / "bee" / "empty.jpg").write_bytes(b"")
        return root, {"skip_bad_images": skip}
    return build


def bomb(tmp):
    root = classes(tmp / "ds")
    bomb_png(root / "bee" / "huge.png")
    return root


def folder_named_like_image(tmp):
    root = classes(tmp / "ds")
    (root / "ant" / "looks.png").mkdir()
    return root


def garbage_exif(tmp):
    root = classes(tmp / "ds")
    image(root / "bee" / "odd.jpg", size=(40, 20), exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f garbage")
    return root


def cmyk_and_animated(tmp):
    root = classes(tmp / "ds")
    Image.new("CMYK", (24, 16), (0, 255, 0, 0)).save(root / "ant" / "print.jpg")
    frames = [Image.new("P", (24, 16), i) for i in range(3)]
    frames[0].save(root / "bee" / "moving.gif", save_all=True, append_images=frames[1:])
    return root


def csv_file(text: str, encoding="utf-8"):
    def build(tmp):
        classes(tmp / "img")
        image(tmp / "img" / "a, b.png")
        (tmp / "labels.csv").write_bytes(text.encode(encoding))
        return tmp / "labels.csv"
    return build


def last_image_size(source):
    return source.train[len(source.train) - 1][0].size


def json_safe(names):
    return json.loads(json.dumps(names, ensure_ascii=False).encode("utf-8")) == names


DATA_CASES = [
    pytest.param(exif_rotated, loads(lambda s: last_image_size(s) == (20, 40)), id="exif-orientation-6-loads-upright"),
    pytest.param(ipynb_checkpoints, loads(lambda s: s.train.class_counts() == {"ant": 2, "bee": 2}),
                 id="ipynb-checkpoints-in-class-folder-not-scanned"),
    pytest.param(macosx_folder, loads(lambda s: s.classes == ["ant", "bee"]), id="macosx-folder-is-not-a-class"),
    pytest.param(appledouble_and_hidden, loads(lambda s: s.classes == ["ant", "bee"] and len(s.train) == 4
                                              and s.skipped == []),
                 id="appledouble-ds-store-hidden-folder-skipped"),
    pytest.param(non_utf8_file, loads(lambda s: s.train.class_counts()["bee"] == 3), id="latin1-file-name-read"),
    pytest.param(non_utf8_class, loads(lambda s: s.classes == ["ant", "bee", "caf\\xe9"] and json_safe(s.classes)),
                 id="latin1-class-folder-gives-printable-json-safe-class"),
    pytest.param(non_utf8_root, loads(lambda s: s.train.name == "d\\xe9s/train" and len(s.train.fingerprint()) == 16),
                 id="latin1-dataset-folder"),
    pytest.param(newline_in_name, loads(lambda s: len(s.train) == 5), id="newline-in-file-name-read"),
    pytest.param(corrupt_non_utf8_name, refused(DataError, "bad\\xff.png", "--skip-bad-images"),
                 id="corrupt-file-with-latin1-name-named-readably"),
    pytest.param(colliding_class_names, refused(DataError, "caf\\xe9", "rename one"),
                 id="two-class-folders-with-the-same-printed-name-refused"),
    pytest.param(trailing_slash, loads(lambda s: s.train.name == "ds/train" and len(s.train) == 4),
                 id="trailing-slash-on-folder"),
    pytest.param(symlinked_class, loads(lambda s: s.classes == ["ant", "bee", "wasp"] and len(s.train) == 6),
                 id="symlinked-class-folder-followed"),
    pytest.param(symlink_loop, loads(lambda s: len(s.train) == 4), id="symlink-loop-inside-class-not-followed"),
    pytest.param(dangling_symlink, loads(lambda s: len(s.train) == 4), id="dangling-symlink-ignored"),
    pytest.param(zero_byte(True), loads(lambda s: len(s.train) == 4 and s.skipped[0].endswith("empty.jpg")),
                 id="zero-byte-image-skipped-and-listed-with-skip-bad-images"),
    pytest.param(zero_byte(False), refused(DataError, "empty.jpg", "--skip-bad-images"),
                 id="zero-byte-image-refused-without-skip-bad-images"),
    pytest.param(bomb, refused(DataError, "huge.png", "DecompressionBombError"), id="decompression-bomb-refused"),
    pytest.param(folder_named_like_image, loads(lambda s: len(s.train) == 4), id="folder-named-x.png-ignored"),
    pytest.param(garbage_exif, loads(lambda s: last_image_size(s) == (40, 20)), id="garbage-exif-block-loads-as-stored",
                 marks=pytest.mark.filterwarnings("ignore:Corrupt EXIF data")),
    pytest.param(cmyk_and_animated, loads(lambda s: all(s.train[i][0].mode == "RGB" for i in range(len(s.train)))),
                 id="cmyk-jpeg-and-animated-gif-become-rgb"),
    pytest.param(csv_file("path,label\nimg/ant/0.png,ant\nimg/bee/0.png,bee,extra\n"),
                 refused(DataError, "labels.csv", "line 3: expected path,label, got 3 fields: img/bee/0.png,bee,extra"),
                 id="csv-extra-unquoted-field-refused-with-line"),
    pytest.param(csv_file("path,label,split\nimg/ant/0.png,ant,train\nimg/bee/0.png\n"),
                 refused(DataError, "line 3: expected path,label,split, got 1 field"), id="csv-missing-label-refused"),
    pytest.param(csv_file("path,label\nimg/ant/0.png,ant\n\n,bee\n"), refused(DataError, "line 4: empty path"),
                 id="csv-empty-path-refused-line-counts-blank-lines"),
    pytest.param(csv_file('\ufeffpath,label\r\n"img/a, b.png","a, b"\r\nimg/bee/0.png,bee,\r\n'),
                 loads(lambda s: s.classes == ["a, b", "bee"]), id="csv-bom-crlf-quoted-commas-trailing-comma"),
    pytest.param(csv_file("path,label\nimg/ant/0.png,caf\xe9\nimg/bee/0.png,bee\n", encoding="latin-1"),
                 refused(DataError, "labels.csv", "UTF-8"), id="csv-in-latin1-refused"),
    pytest.param(csv_file("path,label\nimg/ant/0\x00.png,ant\nimg/bee/0.png,bee\n"),
                 refused(DataError, "missing file", "\\x00"), id="csv-nul-byte-in-path-refused"),
    pytest.param(csv_file("path,label\nimg/ant,ant\nimg/bee/0.png,bee\n"), refused(DataError, "missing file", "img/ant"),
                 id="csv-row-naming-a-folder-refused"),
]


@pytest.mark.parametrize("build, expect", DATA_CASES)
def test_load_source_hostile(tmp_path, build, expect):
    built = build(tmp_path)
    spec, kwargs = built if isinstance(built, tuple) else (built, {})
    before = tree_digest(tmp_path)
    assert_outcome(lambda: load_source(str(spec), **kwargs), expect)
    assert tree_digest(tmp_path) == before


# ----------------------------------------------------------- predict cases
# Each builder damages the run copy and/or writes images, and returns predict's keywords.


def images(tmp, **kwargs):
    image(tmp / "a.png")
    return {"paths": [tmp / "a.png"], **kwargs}


def damaged(name: str, content: bytes):
    def build(tmp, run):
        (run / name).write_bytes(content)
        return images(tmp)
    return build


def truncated_weights(tmp, run):
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    return images(tmp)


def foreign_weights(tmp, run):
    save_file({"fc.weight": torch.zeros(3, 4)}, str(run / "model.safetensors"))
    return images(tmp)


def weights_folder(tmp, run):
    (run / "model.safetensors").unlink()
    (run / "model.safetensors").mkdir()
    return images(tmp)


def edited_json(**changes):
    def build(tmp, run):
        meta = json.loads((run / "model.json").read_text())
        meta.update(changes)
        (run / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
        return images(tmp)
    return build


def missing_model_json(tmp, run):
    (run / "model.json").unlink()
    return images(tmp)


def run_is_file(tmp, run):
    (tmp / "run.txt").write_text("not a run")
    return {**images(tmp), "run_dir": tmp / "run.txt"}


def image_folder(*names: str | bytes, bad: bytes | None = None):
    def build(tmp, run):
        folder = tmp / "imgs"
        folder.mkdir()
        for name in names:
            path = os.path.join(os.fsencode(folder), os.fsencode(name))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if bad is None or not path.endswith(bad):
                image(path, format="PNG")
            else:
                open(path, "wb").close()
        return {"paths": [folder], "skip_bad_images": bad is not None}
    return build


def text_file(tmp, run):
    (tmp / "notes.txt").write_text("not an image")
    return {"paths": [tmp / "notes.txt"]}


def phone_photo(tmp, run):
    return {"paths": [exif_jpeg(tmp / "phone.jpg", 6)]}


def top_classes(n):
    return lambda results: len(results) == 1 and len(results[0]["top"]) == n


PREDICT_CASES = [
    pytest.param(truncated_weights, refused(WeightsError, "model.safetensors", "damaged"),
                 id="truncated-model-safetensors"),
    pytest.param(damaged("model.safetensors", b""), refused(WeightsError, "model.safetensors", "damaged"),
                 id="empty-model-safetensors"),
    pytest.param(foreign_weights, refused(WeightsError, "does not fit", "efficientnet_lite0"),
                 id="weights-of-another-model"),
    pytest.param(weights_folder, refused(RunDirError, "model.safetensors", "not found"),
                 id="model-safetensors-is-a-folder"),
    pytest.param(damaged("model.json", b'{"architecture": "efficientnet_lite0", '),
                 refused(RunDirError, "model.json", "not readable JSON"), id="model-json-cut-off"),
    pytest.param(damaged("model.json", b""), refused(RunDirError, "model.json", "not readable JSON"),
                 id="model-json-empty"),
    pytest.param(damaged("model.json", b"\xff\xfe\x00garbage"), refused(RunDirError, "model.json", "not readable JSON"),
                 id="model-json-binary-garbage"),
    pytest.param(damaged("model.json", b"[1, 2, 3]"), refused(RunDirError, "lacks architecture"),
                 id="model-json-not-an-object"),
    pytest.param(edited_json(classes=None, data_config=None), refused(RunDirError, "lacks classes, data_config"),
                 id="model-json-missing-keys"),
    pytest.param(edited_json(classes=["cat", "dog"]), refused(RunDirError, "classes must be 3 names"),
                 id="model-json-classes-do-not-match-num-classes"),
    pytest.param(edited_json(architecture="no_such_net"), refused(ModelError, "no_such_net"),
                 id="model-json-unknown-architecture"),
    pytest.param(missing_model_json, refused(RunDirError, "no model.json", "--resume"), id="unfinished-run"),
    pytest.param(run_is_file, refused(RunDirError, "run.txt", "is a file"), id="run-folder-is-a-file"),
    pytest.param(lambda tmp, run: images(tmp, topk=0), refused(ConfigError, "--topk must be >= 1"), id="topk-zero"),
    pytest.param(lambda tmp, run: images(tmp, topk=1000), loads(top_classes(3)), id="topk-above-classes-clamped"),
    pytest.param(lambda tmp, run: images(tmp, device="tpu"), refused(ConfigError, "cpu, cuda, cuda:N or auto"),
                 id="unknown-device"),
    pytest.param(lambda tmp, run: images(tmp, device="cuda:99"), refused(ConfigError, "cuda:99"),
                 id="cuda-device-out-of-range"),
    pytest.param(lambda tmp, run: {"paths": []}, refused(DataError, "no images given"), id="no-paths"),
    pytest.param(lambda tmp, run: {"paths": [tmp / "nope.png"]}, refused(DataError, "nope.png", "not found"),
                 id="image-path-missing"),
    pytest.param(image_folder(".ipynb_checkpoints/a.png", "._b.png", "__MACOSX/c.png"),
                 refused(DataError, "no images found in folder"), id="folder-with-only-junk-images"),
    pytest.param(image_folder("a.png", "notes.txt/x.png", ".git/y.png"), loads(lambda r: len(r) == 2),
                 id="folder-with-hidden-and-odd-subfolders"),
    pytest.param(image_folder(b"caf\xe9.png"), loads(lambda r: r[0]["path"].endswith("/imgs/caf\\xe9.png")),
                 id="latin1-image-name-printed-readably"),
    pytest.param(image_folder("a.png", "zero.png", bad=b"zero.png"), loads(lambda r: len(r) == 1),
                 id="zero-byte-image-skipped-with-skip-bad-images"),
    pytest.param(text_file, refused(DataError, "notes.txt", "--skip-bad-images"), id="text-file-named-explicitly"),
    pytest.param(phone_photo, loads(top_classes(3)), id="exif-rotated-phone-photo"),
]


@pytest.mark.parametrize("build, expect", PREDICT_CASES)
def test_predict_hostile(tiny_run, tmp_path, build, expect):
    kwargs = {"run_dir": tiny_run, **build(tmp_path, tiny_run)}
    before = tree_digest(tmp_path)
    assert_outcome(lambda: predict(**kwargs), expect)
    assert tree_digest(tmp_path) == before


# --------------------------------------------------------------- CLI cases

CLI_CASES = [
    pytest.param(truncated_weights, [], 2, "damaged", id="cli-truncated-weights"),
    pytest.param(damaged("model.json", b"{not json"), [], 2, "not readable JSON", id="cli-broken-model-json"),
    pytest.param(run_is_file, [], 2, "is a file", id="cli-run-folder-is-a-file"),
    pytest.param(lambda tmp, run: images(tmp), ["--topk", "0"], 2, "--topk must be >= 1", id="cli-topk-zero"),
    pytest.param(lambda tmp, run: {"paths": [tmp / "missing"]}, [], 2, "not found", id="cli-missing-images"),
    pytest.param(image_folder(b"caf\xe9.png", "ok.png"), ["--format", "csv"], 0, "caf\\xe9.png",
                 id="cli-latin1-image-name-printed"),
]


@pytest.mark.slow  # the in-process CLI imports Lightning once (seconds)
@pytest.mark.parametrize("build, options, code, words", CLI_CASES)
def test_cli_predict_hostile(run_cli, tiny_run, tmp_path, build, options, code, words):
    kwargs = build(tmp_path, tiny_run)
    before = tree_digest(tmp_path)
    exit_code, out, err = run_cli("predict", kwargs.get("run_dir", tiny_run), *kwargs["paths"], *options)
    assert exit_code == code, err
    if code:
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    else:
        assert words in out, out
    assert tree_digest(tmp_path) == before
