"""One cell of ``bench_main_job.py --perturb``: the README's main command in this process, under a
float-order perturbation that stands in for "another CPU", optionally recording what other ways
of ending the same training trajectory would have scored (``--candidates``).

    python benchmarks/main_job_cell.py --perturb threads1 [--candidates FILE] -- finetune --data builtin:digits ...

Perturbations (applied before anything trains):

* ``threads2``  torch.set_num_threads(2), oneDNN on (this machine's default)
* ``threads1``  torch.set_num_threads(1): another reduction order in every kernel
* ``avx2``      an AVX2-only CPU: oneDNN limited to AVX2 (``ONEDNN_MAX_CPU_ISA``) and ATen's own
                kernels dispatched for AVX2 (``ATEN_CPU_CAPABILITY``), on a host with AVX-512
* ``nchw``      the engine's models stay channels-first (other convolution kernels)
* ``nodnn``     torch.backends.mkldnn.enabled = False: ATen's own convolutions instead of oneDNN's
                (impractical for EfficientNet's depthwise convolutions on CPU: see RESULTS.md)

``--candidates FILE`` adds a measuring callback to the fine-tuning (the recipe and the run are
unchanged: it only copies weights) and writes, for the same trajectory, validation and test
accuracy of: the last epoch, each epoch, timm ``ModelEmaV3`` weight averages (several decays) and
the average of the last k epochs' weights. Test is recorded, never used to choose.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys


def perturb(name: str) -> None:
    if name == "avx2":  # read when torch and oneDNN load
        os.environ["ONEDNN_MAX_CPU_ISA"], os.environ["ATEN_CPU_CAPABILITY"] = "AVX2", "avx2"
    import torch

    if name == "threads1":
        torch.set_num_threads(1)
    elif name in ("threads2", "avx2"):
        torch.set_num_threads(2)
    elif name == "nodnn":
        torch.set_num_threads(2)
        torch.backends.mkldnn.enabled = False
    elif name == "nchw":
        torch.set_num_threads(2)
        import transferkit.engine.stages as stages

        original = stages.build_model

        def nchw(*a, **k):
            built = original(*a, **k)
            built.model = built.model.to(memory_format=torch.contiguous_format)
            return built

        stages.build_model = nchw
        import transferkit.engine.finetune as finetune

        finetune.build_model = nchw
    else:
        sys.exit(f"unknown perturbation {name}")


EMA_SETTINGS = {"ema0.9": dict(decay=0.9), "ema0.95": dict(decay=0.95), "ema0.98": dict(decay=0.98),
                "ema-warmup0.99": dict(decay=0.99, use_warmup=True)}


def measuring_callback():
    import lightning as L
    import torch
    from timm.utils import ModelEmaV3

    class Candidates(L.Callback):
        def __init__(self):
            self.emas, self.epochs = {}, []

        def on_train_start(self, trainer, pl_module):
            self.emas = {k: ModelEmaV3(pl_module.net, **v) for k, v in EMA_SETTINGS.items()}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            for ema in self.emas.values():
                ema.update(pl_module.net, step=trainer.global_step)

        def on_train_epoch_end(self, trainer, pl_module):
            self.epochs.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

        def states(self) -> dict:
            out = {f"epoch{i + 1}": s for i, s in enumerate(self.epochs)}
            out |= {k: copy.deepcopy(e.module.state_dict()) for k, e in self.emas.items()}
            for k in (2, 3):
                last = self.epochs[-k:]
                out[f"swa-last{k}"] = {n: (sum(s[n].float() for s in last) / k).to(last[0][n].dtype)
                                       if last[0][n].is_floating_point() else last[-1][n] for n in last[0]}
            return out

    return Candidates()


def score_candidates(cb, argv: list[str], path: str) -> None:
    """Val and test accuracy of every candidate state, on the run's own splits and transforms."""
    import torch

    from transferkit.config import FinetuneConfig
    from transferkit.engine.stages import build_model, load_data, loader
    from transferkit.evaluation import evaluate

    run = json.load(open(os.path.join(_out(argv), "metrics.json")))
    cfg = FinetuneConfig.load(os.path.join(_out(argv), "config.yaml"))
    data = load_data(cfg)
    built = build_model(cfg, len(data.classes), run["image_size"])
    model = built.model
    rows = {}
    for name, state in cb.states().items():
        model.load_state_dict(state)
        rows[name] = {s: evaluate(model, loader(data.images(s, built.eval_tf), cfg), len(data.classes),
                                  device=torch.device("cpu"))["accuracy"] for s in ("val", "test")}
    json.dump({"probe_val_accuracy": run.get("probe_val_accuracy"), "candidates": rows}, open(path, "w"), indent=1)


def _out(argv: list[str]) -> str:
    return argv[argv.index("--out") + 1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--perturb", default="threads2")
    p.add_argument("--candidates")
    a, argv = p.parse_known_args()
    argv = [x for x in argv if x != "--"]
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the CLI does, before torch loads
    perturb(a.perturb)
    cb = None
    if a.candidates:
        from transferkit.strategies.base import Recipe

        cb = measuring_callback()
        Recipe.callbacks = lambda self, cfg: [cb]
    from transferkit.cli import app

    try:
        app(argv, standalone_mode=False)
    finally:
        if cb is not None and cb.epochs:
            score_candidates(cb, argv, a.candidates)


if __name__ == "__main__":
    main()
