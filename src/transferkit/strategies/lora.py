"""``lora``: low-rank updates through PEFT (:mod:`transferkit.surgery.lora`).

The model is wrapped by :func:`~transferkit.surgery.lora.apply_lora`; only the low-rank
matrices (group ``lora``) and the new head (PEFT ``modules_to_save``, group ``head``)
train, both at the head LR; everything else, BatchNorm included, is frozen. After
training the updates are merged back into plain timm weights, and the adapter alone is
saved in PEFT's format (``adapter/``).
"""

from transferkit.strategies.base import Defaults, Plan, Recipe, register


class LoRA(Recipe):
    def check_model(self, model, cfg):
        from transferkit.surgery.lora import check_targets

        check_targets(model, cfg.lora_targets)

    def prepare(self, model, cfg):
        from transferkit.surgery.lora import apply_lora

        return apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)

    def plan(self, net, cfg, freeze_bn):
        from transferkit.errors import ConfigError
        from transferkit.surgery.freezing import frozen_subtrees, set_trainable

        lora = [(n, p) for n, p in net.named_parameters() if "lora_" in n]
        head = [(n, p) for n, p in net.named_parameters() if ".modules_to_save." in n]
        if not lora:
            raise ConfigError("strategy 'lora' needs a model wrapped by transferkit.surgery.lora.apply_lora")
        set_trainable(net, False)
        for _, p in lora + head:
            p.requires_grad_(True)
        return Plan(self.name, [("lora", lora, 1.0), ("head", head, 1.0)], frozen_subtrees(net))

    def finish(self, net, model, out=None):
        from transferkit.surgery.heads import count_parameters
        from transferkit.surgery.lora import merge_lora

        trainable = count_parameters(net, trainable_only=True)
        targets = sorted(net.peft_config["default"].target_modules)
        alpha = net.peft_config["default"].lora_alpha
        rank = net.peft_config["default"].r
        extra = {}
        if out is not None:  # the adapter alone, in PEFT's format
            from transferkit.rundir import atomic_dir

            with atomic_dir(out / "adapter") as tmp:
                net.save_pretrained(str(tmp))
            extra["adapter_bytes"] = sum(f.stat().st_size for f in (out / "adapter").rglob("*") if f.is_file())
        merged = merge_lora(net)
        return merged, {**extra, "trainable_params": trainable,
                        "trainable_fraction": round(trainable / count_parameters(merged), 6),
                        "lora": {"rank": rank, "alpha": alpha, "targets": targets}}


RECIPE = register(LoRA(
    name="lora", summary="low-rank updates of 1x1 convs (CNNs) or attention qkv/proj (ViTs) via PEFT, plus the head",
    defaults=Defaults(image_size=64, epochs=6, lr=3e-3), trains="lora+head"))
