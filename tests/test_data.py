"""Tests of transferkit.data: sources, splits and transforms, on real data."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from transferkit.data import (
    ImageSet,
    TransformedSubset,
    build_transform,
    check_images,
    data_config_for,
    few_shot_indices,
    load_source,
    make_splits,
)
from transferkit.data import sources
from transferkit.errors import DataError

DIGITS = load_digits()


def digit_image(i: int, size: int = 16) -> Image.Image:
    """Digit ``i`` of scikit-learn's digits as a grayscale PIL image."""
    array = np.round(DIGITS.images[i] * (255 / 16)).astype(np.uint8)
    return Image.fromarray(array).resize((size, size))


def write_class_folders(root: Path, per_class: int = 4, classes=("0", "1", "2"), ext: str = ".png") -> Path:
    """An ImageFolder tree of real digit images: root/<class>/<n><ext>."""
    for c in classes:
        (root / c).mkdir(parents=True)
        members = np.flatnonzero(DIGITS.target == int(c))[:per_class]
        for n, i in enumerate(members):
            digit_image(int(i)).save(root / c / f"{n}{ext}")
    return root


def image_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def error_of(spec, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_source(str(spec), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def lite0_cfg() -> dict:
    timm = pytest.importorskip("timm")
    return data_config_for(timm.create_model("efficientnet_lite0", pretrained=False), 32)


# ------------------------------------------------------------------ builtins


def test_digits():
    source = load_source("builtin:digits")
    assert len(source.train) == 1797 and source.test is None
    assert source.classes == [str(d) for d in range(10)] == source.train.classes
    image, target = source.train[0]
    assert image.mode == "RGB" and image.size == (8, 8) and target == 0
    assert max(np.asarray(source.train[i][0]).max() for i in range(20)) == 255  # 0..16 -> 0..255
    assert sum(source.train.class_counts().values()) == 1797


def test_fashion_mnist():
    folder = Path(os.environ.get("TRANSFERKIT_FASHION_MNIST_DIR") or sources.FASHION_MNIST_DIR)
    if not any(folder.glob("t*-idx?-ubyte*")):
        pytest.skip(f"no Fashion-MNIST IDX files in {folder}: apt-get install dataset-fashion-mnist")
    source = load_source("builtin:fashion-mnist")
    assert (len(source.train), len(source.test)) == (60000, 10000)
    assert len(source.classes) == 10
    assert (source.classes[0], source.classes[9]) == ("T-shirt/top", "Ankle boot")
    assert set(source.test.class_counts().values()) == {1000}
    image, target = source.test[0]
    assert image.mode == "RGB" and image.size == (28, 28) and 0 <= target < 10


def test_fashion_mnist_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_FASHION_MNIST_DIR", str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in error_of("builtin:fashion-mnist")


def test_fashion_mnist_dir_override_reads_plain_idx(tmp_path, monkeypatch):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([1, 7], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + np.array([2, 3, 4], dtype=">u4").tobytes() + images.tobytes()
        )
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + np.array([2], dtype=">u4").tobytes() + labels.tobytes()
        )
    monkeypatch.setenv("TRANSFERKIT_FASHION_MNIST_DIR", str(tmp_path))
    source = load_source("builtin:fashion-mnist")
    assert source.train.targets.tolist() == [1, 7]
    assert np.array_equal(np.asarray(source.test[1][0])[..., 0], images[1])


def test_unknown_builtin_lists_builtins():
    message = error_of("builtin:cifar")
    assert "builtin:cifar" in message and "builtin:digits" in message and "builtin:fashion-mnist" in message


# --------------------------------------------------------------- folders


def test_image_folder(tmp_path):
    root = write_class_folders(tmp_path / "digits", per_class=4)
    digit_image(0).save(root / "0" / "UPPER.PNG")  # extensions are case-insensitive
    (root / "0" / "nested").mkdir()
    digit_image(1).convert("RGB").save(root / "0" / "nested" / "deep.jpg")  # searched recursively
    (root / "1" / "README.txt").write_text("not an image, ignored")
    source = load_source(str(root))
    assert source.classes == ["0", "1", "2"] and source.test is None and source.skipped == []
    assert source.train.class_counts() == {"0": 6, "1": 4, "2": 4}
    assert source.train.name == "digits/train"
    image, target = source.train[len(source.train) - 1]
    assert image.mode == "RGB" and image.size == (16, 16) and target == 2


def test_grayscale_and_palette_become_rgb(tmp_path):
    skdata = pytest.importorskip("skimage.data")
    root = tmp_path / "photos"
    (root / "gray").mkdir(parents=True)
    (root / "color").mkdir()
    camera = Image.fromarray(skdata.camera()).resize((64, 64))
    camera.save(root / "gray" / "camera.png")
    camera.convert("P").save(root / "gray" / "camera.gif")
    Image.fromarray(skdata.astronaut()).resize((64, 48)).save(root / "color" / "astronaut.jpg")
    Image.fromarray(skdata.coffee()).resize((48, 64)).save(root / "color" / "coffee.webp")
    source = load_source(str(root))
    assert source.train.class_counts() == {"color": 2, "gray": 2}
    for i in range(len(source.train)):
        image, _ = source.train[i]
        assert image.mode == "RGB" and np.asarray(image).shape[2] == 3
    gray = np.asarray(source.train[2][0])
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    root = write_class_folders(tmp_path / "ds", per_class=1, classes=("0", "1"))
    ramp = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280
    Image.fromarray(ramp).save(root / "1" / "sixteen.png")
    source = load_source(str(root))
    image = np.asarray(source.train[2][0])[..., 0]
    assert image.min() == 0 and 250 <= image.max() <= 255 and len(np.unique(image)) > 200


def test_train_test_layout_keeps_test(tmp_path):
    write_class_folders(tmp_path / "ds" / "train", per_class=5)
    write_class_folders(tmp_path / "ds" / "test", per_class=2, classes=("0", "2"))
    source = load_source(str(tmp_path / "ds"))
    assert source.classes == ["0", "1", "2"]
    assert len(source.train) == 15 and source.test is not None
    assert source.test.class_counts() == {"0": 2, "1": 0, "2": 2}
    assert source.test.targets.tolist() == [0, 0, 2, 2]


def test_missing_path():
    message = error_of("/no/such/folder")
    assert "/no/such/folder" in message and "does not exist" in message


def test_path_neither_folder_nor_csv(tmp_path):
    digit_image(0).save(tmp_path / "one.png")
    assert "neither a folder nor a .csv" in error_of(tmp_path / "one.png")


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no class sub-folders" in error_of(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    digit_image(0).save(tmp_path / "flat" / "a.png")
    assert "images lie directly in it" in error_of(tmp_path / "flat")


def test_folder_without_any_images(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "ds" / c).mkdir(parents=True)
        (tmp_path / "ds" / c / "notes.txt").write_text("x")
    assert "contains no images" in error_of(tmp_path / "ds")


def test_empty_class_folder_is_named(tmp_path):
    root = write_class_folders(tmp_path / "ds")
    (root / "empty_class").mkdir()
    message = error_of(root)
    assert "empty_class" in message and "has no images" in message


def test_fewer_than_two_classes(tmp_path):
    root = write_class_folders(tmp_path / "ds", classes=("7",))
    assert "at least 2" in error_of(root)


def test_test_class_unknown_to_train(tmp_path):
    write_class_folders(tmp_path / "ds" / "train", classes=("0", "1"))
    write_class_folders(tmp_path / "ds" / "test", classes=("0", "5"))
    message = error_of(tmp_path / "ds")
    assert "5" in message and "missing from train/" in message


def test_split_layout_rejects_extra_folders(tmp_path):
    write_class_folders(tmp_path / "ds" / "train")
    write_class_folders(tmp_path / "ds" / "val")
    assert "val/" in error_of(tmp_path / "ds")


# ------------------------------------------------------- corrupt images


@pytest.fixture
def folder_with_bad_files(tmp_path) -> Path:
    root = write_class_folders(tmp_path / "ds", per_class=4)
    png = image_bytes(digit_image(3), "PNG")
    (root / "1" / "truncated.png").write_bytes(png[: len(png) // 2])
    jpeg = image_bytes(digit_image(5).resize((64, 64)).convert("RGB"), "JPEG")
    (root / "2" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "2" / "text.jpeg").write_text("this is not an image")
    return root


def test_corrupt_files_fail_at_load_time(folder_with_bad_files):
    message = error_of(folder_with_bad_files)
    assert "--skip-bad-images" in message and "and 2 more" in message
    assert "truncated.png" in message  # the first bad file, in sorted order


def test_skip_bad_images_records_them(folder_with_bad_files):
    source = load_source(str(folder_with_bad_files), skip_bad_images=True)
    assert sorted(Path(p).name for p in source.skipped) == ["text.jpeg", "truncated.jpg", "truncated.png"]
    assert source.train.class_counts() == {"0": 4, "1": 4, "2": 4}
    assert all(source.train[i][0].size == (16, 16) for i in range(len(source.train)))


def test_check_images_on_a_file_list(folder_with_bad_files):
    files = sorted(folder_with_bad_files.rglob("*.*"))
    bad_names = {"text.jpeg", "truncated.jpg", "truncated.png"}
    assert {p.name for p in check_images(files, skip_bad=True)} == bad_names
    with pytest.raises(DataError, match="--skip-bad-images"):
        check_images(files, skip_bad=False)
    assert check_images([p for p in files if p.name not in bad_names], skip_bad=False) == set()


def test_skip_bad_images_class_left_empty_is_an_error(tmp_path):
    root = write_class_folders(tmp_path / "ds", classes=("0", "1"))
    (root / "broken").mkdir()
    (root / "broken" / "x.png").write_bytes(b"\x89PNG garbage")
    message = error_of(root, skip_bad_images=True)
    assert "broken" in message and "no readable images" in message


# ------------------------------------------------------ files from the wild


def exif_rotated_jpeg(path, orientation: int = 6, size=(40, 20)) -> Image.Image:
    """A JPEG stored ``size`` (w, h) with EXIF Orientation ``orientation``; returns the stored image."""
    stored = Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0])).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=95)
    return stored


def test_exif_orientation_ignored_so_phone_photos_trained_sideways(tmp_path):
    root = write_class_folders(tmp_path / "ds", per_class=1, classes=("0", "1"))
    exif_rotated_jpeg(root / "1" / "phone.jpg", orientation=6, size=(40, 20))  # rotate 90: shown 20 wide, 40 high
    source = load_source(str(root))
    image, target = source.train[len(source.train) - 1]
    assert (image.size, image.mode, target) == ((20, 40), "RGB", 1)


def test_ipynb_checkpoints_in_class_folder_duplicated_training_images(tmp_path):
    root = write_class_folders(tmp_path / "ds", per_class=2, classes=("0", "1"))
    (root / "0" / ".ipynb_checkpoints").mkdir()
    digit_image(0).save(root / "0" / ".ipynb_checkpoints" / "0-checkpoint.png")
    (root / "1" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (root / "1" / ".hidden").mkdir()
    digit_image(1).save(root / "1" / ".hidden" / "seen.png")
    source = load_source(str(root))
    assert source.train.class_counts() == {"0": 2, "1": 2} and source.skipped == []


def test_macosx_folder_from_a_zip_became_a_class(tmp_path):
    root = write_class_folders(tmp_path / "ds", per_class=2, classes=("0", "1"))
    (root / "__MACOSX" / "0").mkdir(parents=True)
    (root / "__MACOSX" / "0" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    assert load_source(str(root)).classes == ["0", "1"]
    write_class_folders(tmp_path / "split" / "train", per_class=2, classes=("0", "1"))
    (tmp_path / "split" / "__MACOSX").mkdir()
    assert load_source(str(tmp_path / "split")).classes == ["0", "1"]


def test_iter_image_files_is_the_one_filter(tmp_path):
    from transferkit.data import is_image_file, iter_image_files

    write_class_folders(tmp_path, per_class=2, classes=("1",))
    (tmp_path / "1" / "sub").mkdir()
    digit_image(2).save(tmp_path / "1" / "sub" / "z.PNG")
    digit_image(2).save(tmp_path / "1" / ".x.png")
    (tmp_path / "1" / "notes.txt").write_text("x")
    (tmp_path / "1" / "dir.png").mkdir()
    (tmp_path / "1" / "loop").symlink_to(tmp_path / "1")  # not followed: no endless recursion
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == ["1/0.png", "1/1.png", "1/sub/z.PNG"]
    assert not is_image_file(tmp_path / "1" / "._0.png") and not is_image_file(tmp_path / "1" / "dir.png")


LATIN1_CLASS = b"caf\xe9"  # "café" in Latin-1: not UTF-8


def test_non_utf8_class_and_file_names_crashed_with_unicode_error(tmp_path):
    import json

    root = write_class_folders(tmp_path / "ds", per_class=2, classes=("0",))
    folder = os.path.join(os.fsencode(root), LATIN1_CLASS)
    os.mkdir(folder)
    for name in (b"\xe9t\xe9.png", b"ok.png"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(image_bytes(digit_image(7), "PNG"))
    source = load_source(str(root))  # was: UnicodeEncodeError traceback (surrogates not allowed)
    from transferkit.data import display_name

    assert source.classes == ["0", "caf\\xe9"] == [display_name(os.fsdecode(n)) for n in (b"0", LATIN1_CLASS)]
    assert json.loads(json.dumps(source.classes, ensure_ascii=False).encode("utf-8")) == source.classes
    assert source.train.class_counts() == {"0": 2, "caf\\xe9": 2}
    assert source.train[3][0].size == (16, 16)
    assert len(source.train.fingerprint()) == 16


def test_non_utf8_name_of_a_corrupt_file_is_reported_readably(tmp_path):
    root = write_class_folders(tmp_path / "ds", per_class=2, classes=("0", "1"))
    with open(os.path.join(os.fsencode(root / "1"), b"bad\xff\nname.png"), "wb") as f:
        f.write(b"not an image")
    message = error_of(root)
    assert "bad\\xff\\nname.png" in message and "--skip-bad-images" in message
    message.encode("utf-8")  # printable on any UTF-8 terminal


def test_display_name():
    from transferkit.data import display_name

    assert display_name("plain/café.png") == "plain/café.png"
    assert display_name(b"caf\xe9") == display_name(Path(os.fsdecode(b"caf\xe9"))) == "caf\\xe9"
    assert display_name("a\nb\tc") == "a\\nb\\tc"


# ------------------------------------------------------------------ CSV


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_source(tmp_path):
    write_class_folders(tmp_path / "img", per_class=3, classes=("0", "1"))
    rows = ["path,label,split"]
    rows += [f"img/0/{n}.png,zero,train" for n in range(2)] + [f"img/1/{n}.png,one,train" for n in range(2)]
    rows += ["img/0/2.png,zero,test", "img/1/2.png,one,test"]
    source = load_source(str(write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n")))
    assert source.classes == ["one", "zero"]
    assert source.train.class_counts() == {"one": 2, "zero": 2}
    assert source.test is not None and source.test.targets.tolist() == [1, 0]
    assert source.train[0][0].mode == "RGB"


def test_csv_without_split_column(tmp_path):
    write_class_folders(tmp_path / "img", per_class=2, classes=("0", "1"))
    csv = write_csv(tmp_path / "l.csv", "path,label\nimg/0/0.png,a\nimg/0/1.png,a\nimg/1/0.png,b\n")
    source = load_source(str(csv))
    assert source.test is None and source.train.class_counts() == {"a": 2, "b": 1}


def test_csv_errors(tmp_path):
    write_class_folders(tmp_path / "img", per_class=1, classes=("0", "1"))
    message = error_of(write_csv(tmp_path / "a.csv", "file,label\nimg/0/0.png,a\n"))
    assert "path" in message and "a.csv" in message and "path,label" in message
    message = error_of(write_csv(tmp_path / "b.csv", "path,label\nimg/0/0.png,a\nimg/9/9.png,b\n"))
    assert "missing file" in message and "9.png" in message and "relative to the CSV" in message
    csv = write_csv(tmp_path / "c.csv", "path,label,split\nimg/0/0.png,a,train\nimg/1/0.png,b,valid\n")
    message = error_of(csv)
    assert "valid" in message
    (tmp_path / "bad.png").write_text("nope")
    message = error_of(write_csv(tmp_path / "d.csv", "path,label\nimg/0/0.png,a\nimg/1/0.png,b\nbad.png,b\n"))
    assert "bad.png" in message and "--skip-bad-images" in message


def test_csv_extra_unquoted_field_was_silently_dropped(tmp_path):
    write_class_folders(tmp_path / "img", per_class=2, classes=("0", "1"))
    csv = write_csv(tmp_path / "x.csv", "path,label\nimg/0/0.png,a\nimg/1/0.png,b,c d\nimg/1/1.png,b\n")
    message = error_of(csv)
    assert "x.csv" in message and "line 3: expected path,label, got 3 fields: img/1/0.png,b,c d" in message


def test_csv_missing_label_or_empty_path_refused_with_line_number(tmp_path):
    write_class_folders(tmp_path / "img", per_class=2, classes=("0", "1"))
    text = "path,label,split\nimg/0/0.png,a,train\nimg/1/0.png\n"
    assert "line 3: expected path,label,split, got 1 field: img/1/0.png" in error_of(write_csv(tmp_path / "a.csv", text))
    text = "path,label\nimg/0/0.png,a\n ,b\n"
    assert "line 3: empty path" in error_of(write_csv(tmp_path / "b.csv", text))
    text = "path,label\nimg/0/0.png,a\nimg/1/0.png,\n"
    assert "line 3: empty label" in error_of(write_csv(tmp_path / "c.csv", text))


def test_csv_line_numbers_counted_blank_lines_wrong(tmp_path):
    write_class_folders(tmp_path / "img", per_class=2, classes=("0", "1"))
    text = "path,label\n\nimg/0/0.png,a\n\nimg/1/0.png,\n"
    assert "line 5: empty label" in error_of(write_csv(tmp_path / "a.csv", text))


def test_csv_quoted_fields_with_commas_and_trailing_empty_fields(tmp_path):
    write_class_folders(tmp_path / "img", per_class=2, classes=("0", "1"))
    digit_image(4).save(tmp_path / "img" / "a, b.png")
    text = 'path,label\r\n"img/a, b.png","four, or so"\r\nimg/0/0.png,zero,\r\nimg/1/0.png,one\r\n'
    source = load_source(str(write_csv(tmp_path / "q.csv", text)))
    assert source.classes == ["four, or so", "one", "zero"] and len(source.train) == 3


# ----------------------------------------------------- ImageSet behaviour


def test_subset_class_counts_and_fingerprint():
    train = load_source("builtin:digits").train
    part = train.subset(np.arange(10, 20))
    assert len(part) == 10 and part.targets.tolist() == train.targets[10:20].tolist()
    assert np.array_equal(np.asarray(part[0][0]), np.asarray(train[10][0]))
    nested = part.subset([2, 3])
    assert nested.targets.tolist() == train.targets[[12, 13]].tolist()
    assert nested.fingerprint() == train.subset([12, 13]).fingerprint()
    assert part.fingerprint() == load_source("builtin:digits").train.subset(np.arange(10, 20)).fingerprint()
    assert part.fingerprint() != train.fingerprint() != train.subset(np.arange(11, 21)).fingerprint()
    assert sum(part.class_counts().values()) == 10 and list(part.class_counts()) == train.classes


def test_folder_fingerprint_tracks_content(tmp_path):
    root = write_class_folders(tmp_path / "ds", classes=("0", "1"))
    first = load_source(str(root)).train.fingerprint()
    assert load_source(str(root)).train.fingerprint() == first
    digit_image(9).save(root / "1" / "extra.png")
    assert load_source(str(root)).train.fingerprint() != first


def test_in_memory_rgb_array():
    rgb = np.zeros((2, 5, 6, 3), dtype=np.uint8)
    rgb[1, ..., 0] = 255
    images = ImageSet(rgb, [0, 1], ["black", "red"], "toy")
    image, target = images[1]
    assert image.size == (6, 5) and target == 1 and np.asarray(image)[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(DataError):
        ImageSet(rgb.astype(np.float32), [0, 1], ["a", "b"], "bad")


# ------------------------------------------------------------ transforms


@pytest.mark.parametrize("train", [False, True])
def test_transform_shape_and_model_normalisation(lite0_cfg, train):
    transform = build_transform(lite0_cfg, 32, train=train)
    gray = Image.new("RGB", (8, 8), (128, 128, 128))
    x = transform(gray)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(lite0_cfg["mean"])) / torch.tensor(lite0_cfg["std"])
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-3)


def test_transform_uses_given_mean_std_and_keeps_content():
    cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear"}
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 20))  # a white stripe on the left edge
    x = build_transform(cfg, 24, train=False)(image)
    assert x.shape == (3, 24, 24)
    assert x[:, :, 0].min() > 0.9  # no centre crop: the edge survives the resize
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_train_transform_is_light():
    names = [type(t).__name__ for t in build_transform({}, 16, train=True).transforms]
    assert names[0].startswith("RandomResizedCrop") and "ColorJitter" not in names
    assert not any("Flip" in n for n in names)
    assert any("Flip" in type(t).__name__ for t in build_transform({}, 16, train=True, hflip=0.5).transforms)


def test_transformed_subset(lite0_cfg):
    train = load_source("builtin:digits").train
    data = TransformedSubset(train, [5, 100], build_transform(lite0_cfg, 32, train=False))
    x, y = data[1]
    assert len(data) == 2 and x.shape == (3, 32, 32) and y == int(train.targets[100])
    assert data.targets.tolist() == train.targets[[5, 100]].tolist()
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert batch[0].shape == (2, 3, 32, 32)


# ----------------------------------------------------------------- splits


def test_splits_stratified_disjoint_deterministic():
    targets = DIGITS.target
    splits = make_splits(targets, val_split=0.15, test_split=0.2, seed=0)
    parts = [splits.train, splits.val, splits.test]
    assert sum(map(len, parts)) == len(targets)
    assert len(np.unique(np.concatenate(parts))) == len(targets)  # disjoint and complete
    assert len(splits.test) == pytest.approx(0.2 * len(targets), abs=1)
    assert not splits.test_from_source
    overall = np.bincount(targets) / len(targets)
    for part in parts:
        share = np.bincount(targets[part], minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.02
    again = make_splits(targets, seed=0)
    other = make_splits(targets, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, [again.train, again.val, again.test]))
    assert not np.array_equal(splits.test, other.test) and not np.array_equal(splits.val, other.val)


def test_splits_with_source_test():
    targets = DIGITS.target
    splits = make_splits(targets, has_test=True, val_split=0.1)
    assert splits.test_from_source and len(splits.test) == 0
    assert len(splits.train) + len(splits.val) == len(targets)
    assert len(np.intersect1d(splits.train, splits.val)) == 0


def test_few_shot_exact_counts_and_capped_val():
    targets = DIGITS.target
    splits = make_splits(targets, per_class=5, seed=3)
    assert np.bincount(targets[splits.train]).tolist() == [5] * 10
    assert np.bincount(targets[splits.val]).tolist() == [20] * 10  # capped at 20 per class
    assert not set(splits.train) & set(splits.val) and not set(splits.train) & set(splits.test)
    assert len(splits.test) == pytest.approx(0.2 * len(targets), abs=1)
    assert np.array_equal(make_splits(targets, per_class=5, seed=3).train, splits.train)
    assert not np.array_equal(make_splits(targets, per_class=5, seed=4).train, splits.train)
    small = make_splits(targets, per_class=2, val_split=0.05, has_test=True)
    assert np.bincount(targets[small.val]).max() <= 10  # ceil(0.05 * ~180)


def test_few_shot_indices():
    targets = np.array([0] * 6 + [1] * 3 + [2] * 4)
    chosen = few_shot_indices(targets, 3, seed=0)
    assert np.bincount(targets[chosen]).tolist() == [3, 3, 3]
    assert np.array_equal(chosen, few_shot_indices(targets, 3, seed=0))
    with pytest.raises(DataError, match=r"class 'b' has only 3 training image\(s\), fewer than per-class 4"):
        make_splits(targets, per_class=4, has_test=True, classes=["a", "b", "c"])


def test_splits_tiny_classes_fall_back():
    targets = np.array([0] * 10 + [1] * 10 + [2])  # class 2 has a single image
    splits = make_splits(targets, val_split=0.2, test_split=0.2, seed=0)
    assert 2 in targets[splits.train]  # the singleton stays in training
    assert set(targets[splits.test]) == {0, 1} and set(targets[splits.val]) == {0, 1}
    all_idx = np.concatenate([splits.train, splits.val, splits.test])
    assert len(np.unique(all_idx)) == len(targets)
    with pytest.raises(DataError, match="too few images"):
        make_splits(np.array([0, 1, 2, 3]), val_split=0.1, test_split=0.0)
