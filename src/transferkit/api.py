"""The Python API for notebooks: a finished run as an object that predicts on images in memory.

::

    import transferkit as tk

    model = tk.load("runs/digits")            # any finished finetune / adapt / distill run
    model.predict("image.png")                # [{"path": "image.png", "top": [{"class", "prob"}, ...]}]
    model.predict(pil_image, topk=1)          # [{"top": [{"class": "7", "prob": 0.93}]}]
    model.classes, model.model, model.config  # class names, the torch module, the run's config.yaml

Every input goes through the run's evaluation transform (``predict.eval_transform``: resized whole
to the run's input size, normalised with its mean and std), batched, so an image in memory gets the
probabilities ``transferkit predict`` gives the same image saved to disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transferkit.data import as_rgb, display_name, open_image
from transferkit.errors import DataError
from transferkit.predict import check_topk, collect_images, eval_transform, load_run_model, readable_images
from transferkit.predict import top_classes
from transferkit.rundir import RunDir


def load(run_dir: Path | str, device: str | None = "cpu") -> Model:
    """The trained model of a finished run, ready to predict (see :class:`Model`).

    The example reads the run ``runs/digits`` that ``tk.finetune``'s example writes and an image file ``digit.png``.

    Example::

        >>> import transferkit as tk
        >>> model = tk.load("runs/digits")
        >>> model
        Model('runs/digits': efficientnet_lite0, 10 classes)
        >>> model.predict("digit.png", topk=1)[0]["top"]
        [{'class': '...', 'prob': ...}]
    """
    return Model(run_dir, device)


class Model:
    """A finished run's classifier: ``predict`` on paths or images in memory, its ``classes``, the torch
    ``model`` (eval mode), the run's ``config`` and ``metrics``, ``export`` to ONNX.

    The example reads the run ``runs/digits`` that ``tk.finetune``'s example writes.

    Example::

        >>> from transferkit import Model
        >>> model = Model("runs/digits")
        >>> model.classes[:3], model.config["model"], model.metrics["strategy"]
        (['0', '1', '2'], 'efficientnet_lite0', 'linear-probe')
        >>> type(model.model).__name__, model.model.training
        ('EfficientNet', False)
    """

    def __init__(self, run_dir: Path | str, device: str | None = "cpu"):
        self.run_dir = Path(run_dir)
        self.model, self.meta = load_run_model(self.run_dir, device)
        self.transform = eval_transform(self.meta)

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the model's outputs."""
        return list(self.meta["classes"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self) -> dict:
        """The run's config (its ``config.yaml``), ``{}`` when the run has none."""
        return _read(RunDir(self.run_dir).config, "yaml")

    @property
    def metrics(self) -> dict:
        """The run's scores (its ``metrics.json``), ``{}`` when the run has none."""
        return _read(RunDir(self.run_dir).metrics_json, "json")

    def __repr__(self) -> str:
        return f"Model({str(self.run_dir)!r}: {self.meta['architecture']}, {len(self.classes)} classes)"

    @torch.inference_mode()
    def predict(self, images: Any, topk: int = 3, batch_size: int = 32) -> list[dict]:
        """Top-``topk`` classes with probabilities per image, as ``transferkit.predict.predict`` gives them:
        ``[{"top": [{"class", "prob"}, ...]}]``, in input order; images read from disk also carry
        ``"path"`` (a folder gives one result per image in it).

        ``images``: one, or a list, of: a path (file or folder); a PIL image; a numpy array
        (H, W, 3) or (H, W, 4) ``uint8`` (PIL's layout) or (H, W) grey; a ``uint8`` torch tensor
        (3, H, W) or (B, 3, H, W) (torchvision's layout; one channel for grey). Those go through the
        run's eval transform. A float tensor (3, S, S) or (B, 3, S, S) is taken as already
        transformed (resized to the run's input size S and normalised) and goes to the model as is.

        The example reads the run ``runs/digits`` that ``tk.finetune``'s example writes and an image
        file ``digit.png``.

        Example::

            >>> import numpy as np
            >>> from PIL import Image
            >>> import transferkit as tk
            >>> model = tk.load("runs/digits")
            >>> model.predict(Image.open("digit.png"), topk=2)
            [{'top': [{'class': '...', 'prob': ...}, {'class': '...', 'prob': ...}]}]
            >>> grey = np.zeros((28, 28), dtype=np.uint8)          # a black image, (H, W) uint8
            >>> len(model.predict([grey, "digit.png"], topk=1))   # a list: one result per image
            2
        """
        check_topk(topk, batch_size)
        items = list(self.inputs(images))
        results = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            logits = self.model(torch.stack([x for x, _ in chunk]).to(self.device))
            for (_, path), top in zip(chunk, top_classes(logits, self.classes, topk,
                                                                   self.meta.get("temperature", 1.0))):
                results.append({"path": path, "top": top} if path is not None else {"top": top})
        return results

    @torch.inference_mode()
    def logits(self, images: Any, batch_size: int = 32) -> torch.Tensor:
        """The model's logits (N, C) for ``images`` (what :meth:`predict` takes), on the CPU; raw, before
        the run's temperature (``predict``'s probabilities are ``softmax(logits / meta["temperature"])``).

        The example reads the run ``runs/digits`` that ``tk.finetune``'s example writes and an image
        file ``digit.png``.

        Example::

            >>> import transferkit as tk
            >>> tk.load("runs/digits").logits("digit.png").shape
            torch.Size([1, 10])
        """
        check_topk(1, batch_size)
        x = torch.stack([x for x, _ in self.inputs(images)])
        return torch.cat([self.model(b.to(self.device)).float().cpu() for b in x.split(batch_size)])

    def inputs(self, images: Any) -> Iterator[tuple[torch.Tensor, str | None]]:
        """``(model input (3, S, S), display name of its file or None)`` per image of ``images``."""
        if isinstance(images, (list, tuple)):
            if not images:
                raise DataError("no images given; pass a path, a PIL image, an array or a tensor, or a list of them")
            for item in images:
                yield from self.inputs(item)
        elif isinstance(images, (str, Path)):
            files, _ = readable_images(collect_images([images]), skip_bad_images=False)
            for f in files:
                yield self.transform(open_image(f)), display_name(f)
        elif isinstance(images, torch.Tensor):
            yield from ((x, None) for x in self.tensor_inputs(images))
        else:
            yield self.transform(as_pil(images)), None

    def tensor_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A tensor's images as model inputs: float ones as given, ``uint8`` ones through the transform."""
        batch = x.unsqueeze(0) if x.dim() == 3 else x
        if batch.dim() != 4 or batch.shape[1] not in (1, 3):
            raise DataError(f"a tensor of images is (3, H, W) or (B, 3, H, W), got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return [self.transform(as_pil(img.permute(1, 2, 0).squeeze(-1).cpu().numpy())) for img in batch]
        size = tuple(self.meta["data_config"]["input_size"])
        if not x.is_floating_point() or tuple(batch.shape[1:]) != (3, *size[-2:]):
            raise DataError(f"a float tensor is taken as the model's input, (B, {', '.join(map(str, size))}) and "
                            f"normalised; got {x.dtype} {tuple(x.shape)}: pass uint8 images to have them transformed")
        return list(batch)

    def export(self, **options: Any) -> dict:
        """Export the run's model to ONNX beside it (``engine.export.export_run``: ``fmt``, ``opset``,
        ``dynamic_batch``, ``threads``); returns ``export.json``'s content.

        The example exports the run ``runs/digits`` that ``tk.finetune``'s example writes for a fixed
        batch of one image (e.g. a device that serves one image at a time).

        Example::

            >>> import transferkit as tk
            >>> info = tk.load("runs/digits").export(dynamic_batch=False)
            >>> info["input"], info["within_tolerance"]
            ([1, 3, 32, 32], True)
        """
        from transferkit.engine.export import export_run

        return export_run(self.run_dir, **options)


def as_pil(image: Any) -> Image.Image:
    """A PIL image or a ``uint8`` numpy array (H, W), (H, W, 1), (H, W, 3), (H, W, 4) as an RGB PIL
    image, as :func:`~transferkit.data.open_image` would read it from a file."""
    if isinstance(image, Image.Image):
        return as_rgb(image)
    if not isinstance(image, np.ndarray):
        raise DataError(f"cannot predict on a {type(image).__name__}; pass a path, a PIL image, a numpy array "
                        "or a torch tensor, or a list of them")
    if image.dtype != np.uint8:
        raise DataError(f"a numpy image must be uint8 (0..255), got {image.dtype}; convert it, e.g. "
                        "(array * 255).round().astype('uint8') for values in 0..1")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        raise DataError(f"a numpy image is (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    return as_rgb(Image.fromarray(image))


def _read(path: Path, fmt: str) -> dict:
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if fmt == "json":
        import json

        return json.loads(text)
    import yaml

    return yaml.safe_load(text) or {}


__all__ = ["Model", "as_pil", "load"]
