"""Grad-CAM on a vision transformer: a small ViT fine-tuned briefly, its most confident test mistakes as a gallery.

Trains (unless ``--run`` names a finished ViT run) ``vit_tiny_patch16_224`` with 4-px patches at 32 px on
``builtin:digits`` (random init: no ViT weights ship offline; ``--weights imagenet`` where the timm weights are
cached), then runs the engine's error analysis (``engine.analysis.error_analysis``, the code path every run
takes) with ``--shown`` mistakes into ``<out>/gallery/mistakes.png``, and prints where the Grad-CAM mass of
the predicted class lies: the share on the digit's strokes (pixels above the image's mean) against the
strokes' share of the image (a map blind to the image scores about the latter).

Usage: python benchmarks/gradcam_vit.py --out runs/gradcam-vit [--epochs 15] [--run RUN] [--shown 16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def train(args) -> Path:
    import transferkit as tk

    run = Path(args.out) / "run"
    cfg = tk.FinetuneConfig(data=args.data, model=args.model, model_args=args.model_args, weights=args.weights,
                            strategy="full", per_class=args.per_class, image_size=args.image_size, epochs=args.epochs,
                            lr=args.lr, batch_size=64, baseline=False, seed=0, out=str(run))
    metrics = tk.finetune(cfg, overwrite=True, progress=False)
    print(f"trained {args.model} ({args.model_args}): test accuracy {metrics['test_accuracy']:.3f}, "
          f"{len(metrics['test_mistakes'])} mistakes in its own gallery {run / 'mistakes.png'}")
    return run


def evidence_share(images: list[np.ndarray], cams: np.ndarray) -> tuple[float, float]:
    """Mean over the mistakes of (Grad-CAM mass on the strokes / all mass, strokes' share of the pixels)."""
    from transferkit.report.gallery import resized

    mass, area = [], []
    for image, cam in zip(images, cams):
        gray = image.mean(2)
        strokes = gray > gray.mean()
        cam = resized(cam, *gray.shape)
        mass.append(cam[strokes].sum() / max(cam.sum(), 1e-9))
        area.append(strokes.mean())
    return float(np.mean(mass)), float(np.mean(area))


def analyse(run: Path, out: Path, shown: int) -> None:
    import yaml

    from transferkit.config import FinetuneConfig
    from transferkit.engine.analysis import error_analysis, mistake_cams, raw_image
    from transferkit.engine.stages import load_data
    from transferkit.predict import eval_transform, load_run_model

    model, meta = load_run_model(run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    data = load_data(FinetuneConfig(**{k: config[k] for k in ("data", "per_class", "val_split", "test_split", "seed",
                                                              "test_per_class") if k in config}))
    test = data.images("test", eval_transform(meta))
    (out / "gallery").mkdir(parents=True, exist_ok=True)
    result = error_analysis(model, test, data.classes, out / "gallery", n=shown)
    rows = [{"index": m["index"], "pred": data.classes.index(m["pred"])} for m in result["mistakes"]]
    cams, note = mistake_cams(model, test, rows)
    if cams is None or not rows:
        print(note or "no mistakes")
        return
    share, area = evidence_share([raw_image(test, r["index"]) for r in rows], cams)
    print(f"{len(rows)} most confident mistakes -> {out / 'gallery' / result['gallery']}")
    print(f"Grad-CAM mass on the strokes: {share:.3f} (strokes cover {area:.3f} of the pixels)")
    (out / "gallery" / "mistakes.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gradcam-vit")
    p.add_argument("--run", help="a finished ViT run to analyse instead of training one")
    p.add_argument("--data", default="builtin:digits")
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--model-args", default="patch_size=4")
    p.add_argument("--weights", default="none")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--shown", type=int, default=16)
    args = p.parse_args()
    run = Path(args.run) if args.run else train(args)
    analyse(run, Path(args.out), args.shown)


if __name__ == "__main__":
    main()
