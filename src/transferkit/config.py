"""Typed run configuration (pydantic), saved as ``config.yaml`` in each run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferkit.errors import ConfigError
from transferkit.registry import ADAPTATION, DISTILL, REGULARIZERS, SELFSUP, STRATEGIES, TTA, check_options


def one_of(value: str, allowed, what: str) -> str:
    """``value`` if it is in ``allowed``, else a one-line error naming the choices."""
    if value not in allowed:
        raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(allowed)}")
    return value


def parse_model_args(text: str) -> dict:
    """``"patch_size=4,embed_dim=192,qkv_bias=false"`` -> ``{"patch_size": 4, "embed_dim": 192, "qkv_bias": False}``
    (each value read as YAML: numbers, booleans, else text)."""
    args = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"model arguments are name=value pairs separated by commas, got '{item}'")
        parsed = yaml.safe_load(value.strip()) if value.strip() else ""
        args[key.strip()] = parsed if isinstance(parsed, (int, float, bool, str)) else value.strip()
    return args


def read_yaml_mapping(path: Path | str) -> dict:
    """The ``option: value`` mapping a YAML config file holds (an empty file: ``{}``), or one ConfigError
    line: the file unreadable, not YAML (``file:line:column: problem``), or not such a mapping."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a text file (not UTF-8); give a YAML file of option: value "
                          "lines") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {yaml_problem(e)}; fix the file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} holds a YAML {type(raw).__name__}, not a mapping; give option: value "
                          "lines (e.g. epochs: 3)")
    key = next((k for k in raw if not isinstance(k, str)), None)
    if key is not None:
        raise ConfigError(f"config {path} has the key {key!r}, which is not an option name; give option: value "
                          "lines (e.g. epochs: 3)")
    return raw


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML parse error in one line: ``line L, column C: problem (context at line L', column C')``
    (PyYAML's own message spans several lines and ends with a caret under the spot)."""
    def at(mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:
        return " ".join(str(e).split())
    context, where = getattr(e, "context", None), getattr(e, "context_mark", None)
    began = f" at {at(where)}" if where and at(where) != at(mark) else ""
    text = f"{at(mark)}: {problem}" + (f" ({context}{began})" if context else "")
    return " ".join(text.split())


class OptionGroup(BaseModel):
    """A group of options (data, model, recipe, training, hardware, output, ...): the commands' configs are
    composed of the groups they offer, so an option a command does not take does not exist in its config
    (no blacklist). ``PANEL`` names the group's ``--help`` panel."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)  # no inf/NaN option
    PANEL: ClassVar[str] = "Options"


class DataOptions(OptionGroup):
    """The images and how they are split."""

    PANEL: ClassVar[str] = "Data"
    data: str = Field(description="builtin:digits, builtin:fashion-mnist, an image folder or a CSV (path,label[,split])")
    val_split: float = Field(0.15, ge=0, lt=1, description="fraction of the training images held out for validation")
    test_split: float = Field(0.2, ge=0, lt=1, description="fraction held out for test; ignored when the data has its own test split")
    seed: int = Field(0, ge=0, lt=2**32, description="fixes splits, init and data order")
    skip_bad_images: bool = Field(False, description="skip unreadable images (counted) instead of stopping")
    workers: int = Field(0, ge=0, description="data-loader worker processes")


class LabelOptions(OptionGroup):
    """How many labelled images are used, and how labels are smoothed."""

    PANEL: ClassVar[str] = "Data"
    per_class: int | None = Field(None, ge=1, description="few-shot: N training images per class")
    test_per_class: int | None = Field(None, ge=1, description="evaluate on at most N seeded test images per class")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="cross-entropy label smoothing")


class ModelOptions(OptionGroup):
    """The network and its starting weights."""

    PANEL: ClassVar[str] = "Model"
    model: str = Field("efficientnet_lite0", description="any timm model name (see `transferkit models`)")
    weights: str = Field("packaged", description="packaged (offline ImageNet), imagenet (hub), none (scratch), a file, or a run directory (e.g. a pretrain run: its backbone)")
    model_args: dict[str, int | float | bool | str] = Field(
        {}, description="architecture arguments for timm.create_model, e.g. patch_size=4,embed_dim=192,depth=6")
    image_size: int | None = Field(None, ge=16, description="None: the strategy's default")
    norm: Literal["batchnorm", "groupnorm"] = Field("batchnorm", description="batchnorm, or groupnorm (replaces every BatchNorm2d; discards its pretrained statistics)")

    @field_validator("model_args", mode="before")
    @classmethod
    def _parse_model_args(cls, v):
        return {} if v is None else parse_model_args(v) if isinstance(v, str) else v


class RecipeOptions(OptionGroup):
    """How the network trains: the recipe (strategy) and its layer-wise settings."""

    PANEL: ClassVar[str] = "Recipe"
    strategy: str = Field("auto", description="a registered recipe (transferkit.strategies.REGISTRY)")
    backbone_lr_mult: float = Field(0.1, ge=0, description="backbone LR = head LR x this (strategies that train it)")
    lr_decay: float | None = Field(None, gt=0, le=1, description="layer group i from the top trains at "
                                   "lr x lr_decay^i (head i=0); takes precedence over backbone_lr_mult")
    freeze_groups: int | None = Field(None, ge=0, description="the bottom N layer groups (stem first, see "
                                      "`transferkit groups`) stay as pretrained, BatchNorm included: no backward "
                                      "through them; None: the strategy's default")
    unfreeze_every: int = Field(1, ge=1, description="gradual: unfreeze one more group every N epochs")
    bn: Literal["auto", "train", "freeze"] = Field("auto", description="BatchNorm: train, freeze (eval mode, affine frozen) or auto (freeze below 16 images per device)")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        return STRATEGIES.validate(v)


class L2SPOptions(OptionGroup):
    """L2-SP's strengths (the l2sp recipe, --reg l2sp)."""

    PANEL: ClassVar[str] = "Recipe"
    reg_alpha: float = Field(0.1, ge=0, description="l2sp: alpha/2 ||w - w_pretrained||^2 on the backbone")
    reg_beta: float = Field(0.01, ge=0, description="l2sp: beta/2 ||w||^2 on the new head")


class RegularizerOptions(OptionGroup):
    """A regulariser added to the loss, and the settings of LwF and co-tuning."""

    PANEL: ClassVar[str] = "Recipe"
    reg: str = Field("none", description="a regulariser added to the loss (transferkit.registry.REGULARIZERS), or none")
    lwf_weight: float = Field(1.0, ge=0, description="lwf: weight of the source-output distillation loss")
    lwf_temperature: float = Field(2.0, gt=0, description="lwf: softmax temperature T")
    co_tuning_weight: float = Field(2.3, ge=0, description="co-tuning: weight lambda of the source-head loss "
                                    "(tllib's default)")

    @field_validator("reg")
    @classmethod
    def _known_reg(cls, v: str) -> str:
        return v if v == "none" else REGULARIZERS.validate(v)


class OptimOptions(OptionGroup):
    """The optimisation: epochs, batch, learning rate, schedule, augmentation."""

    PANEL: ClassVar[str] = "Training"
    epochs: int | None = Field(None, ge=1, description="None: the strategy's default")
    batch_size: int = Field(64, ge=1, description="images per step and device")
    lr: float | None = Field(None, gt=0, le=10, allow_inf_nan=False,
                             description="head learning rate; None: the strategy's default")
    weight_decay: float = Field(0.05, ge=0, description="decoupled weight decay (none on norms and biases)")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw or sgd")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd: momentum")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warmup, then cosine decay")
    hflip: float = Field(0.0, ge=0, le=1, description="horizontal flip probability in training augmentation")


class AugmentOptions(OptionGroup):
    """Training augmentation beyond the flip: a timm policy preset, mixup and cutmix of the labelled batch."""

    PANEL: ClassVar[str] = "Training"
    augment: Literal["none", "light", "randaugment", "trivialaugment"] = Field(
        "light", description="training augmentation (transferkit.data.AUGMENT_POLICIES): light (random resized "
        "crop, scale 0.7-1), randaugment or trivialaugment (timm's, on top of light), none (the evaluation "
        "transform)")
    mixup: float = Field(0.0, ge=0, description="mixup: Beta(alpha, alpha) blend of image pairs and their labels' "
                         "losses; alpha (e.g. 0.2); 0: off")
    cutmix: float = Field(0.0, ge=0, description="cutmix: paste a box of another image, labels' losses weighted "
                          "by area; alpha (e.g. 1.0); 0: off (both set: one or the other per batch)")


class BalanceOptions(OptionGroup):
    """Imbalanced classes: weight the loss, or draw the classes equally."""

    PANEL: ClassVar[str] = "Training"
    class_weights: Literal["none", "auto"] = Field("none", description="auto: weight the cross-entropy by inverse "
                                                   "class frequency in the training split (mean weight 1)")
    sampler: Literal["shuffle", "balanced"] = Field("shuffle", description="balanced: draw training images with "
                                                    "replacement, each class equally often (an epoch: as many draws "
                                                    "as images); shuffle: each image once per epoch")


class StoppingOptions(OptionGroup):
    """Stop when validation stops improving."""

    PANEL: ClassVar[str] = "Training"
    early_stopping: int | None = Field(None, ge=1, description="stop when validation accuracy has not improved for "
                                       "N epochs (Lightning's EarlyStopping); the model saved is the last epoch "
                                       "trained, as without it; None: off")

    @model_validator(mode="after")
    def _needs_validation(self):
        if self.early_stopping is not None and getattr(self, "val_split", 1) == 0:
            raise ValueError("--early-stopping watches validation accuracy; give --val-split > 0")
        return self


class AveragingOptions(OptionGroup):
    """An exponential moving average of the weights."""

    PANEL: ClassVar[str] = "Training"
    ema_decay: float = Field(0.0, ge=0, lt=1, description="keep an exponential moving average of the weights (decay "
                             "per step; Lightning's EMAWeightAveraging): validation and the saved model use the "
                             "average; 0: off (the main job's default: it did not beat the last epoch on validation)")


class ForgettingOptions(OptionGroup):
    """Forgetting of the source task, measured (source_eval) and mitigated by WiSE-FT."""

    PANEL: ClassVar[str] = "Forgetting"
    source_eval: bool = Field(False, description="measure forgetting: source-head agreement with the pretrained model")
    source_data: str | None = Field(None, description="images for --source-eval (default: the target's test "
                                    "split); implies source_eval")
    source_labels: bool = Field(False, description="the class names of source_data are source-class indices: "
                                "also report source accuracy")
    wise_alpha: float | None = Field(None, ge=0, le=1, description="WiSE-FT: interpolate backbone weights")
    wise_curve: list[float] | None = Field(None, description="WiSE-FT: also evaluate these alphas (the alpha curve)")

    @field_validator("wise_curve")
    @classmethod
    def _alphas_in_range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(0.0 <= a <= 1.0 for a in v):
            raise ValueError(f"WiSE-FT alphas must be in [0, 1], got {v}")
        return v


class LoRAOptions(OptionGroup):
    """LoRA's adapters (the lora recipe)."""

    PANEL: ClassVar[str] = "Recipe"
    lora_rank: int = Field(4, ge=1, description="lora: rank r of the low-rank updates (4: 3.1 percent of EfficientNet-Lite0 trains)")
    lora_alpha: float | None = Field(None, gt=0, description="lora: scale alpha/r; None: 2 x rank")
    lora_targets: str | None = Field(None, description="lora: comma-separated module names (or suffixes); "
                                     "None: 1x1 convolutions (CNN) or attention qkv/proj (ViT)")


class ProbeOptions(OptionGroup):
    """The linear probe's augmented views and the raw-pixel baseline."""

    PANEL: ClassVar[str] = "Recipe"
    probe_augment: int = Field(0, ge=0, le=32, description="linear probe: also fit on K augmented views "
                               "of each training image (cached once)")
    baseline: bool = Field(True, description="also score logistic regression on raw pixels")


class TrainerOptions(OptionGroup):
    """Where and how Lightning trains: accelerator, devices, nodes, precision."""

    PANEL: ClassVar[str] = "Hardware"
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu, gpu, ...")
    devices: str = Field("1", description="Lightning devices: a count or a list (0,2); 1 by default, so the "
                         "plain command runs the same on a laptop and on a multi-GPU node (scale out with --devices N)")
    num_nodes: int = Field(1, ge=1, description="Lightning num_nodes")
    dist: str = Field("auto", description="Lightning strategy: auto, ddp, fsdp, ...")
    precision: str = Field("32-true", description="Lightning precision: 32-true, bf16-mixed, 16-mixed, ...")


class MethodOptions(OptionGroup):
    """Each registered method's own options (flags ``--<method>-<option>``), checked against the methods the
    run uses (:meth:`RunConfig.methods_used`)."""

    PANEL: ClassVar[str] = "Method options"
    options: dict[str, dict[str, Any]] = Field({}, description="each registered method's own options, "
                                                "{method: {option: value}} (flags --<method>-<option>)")

    def option_families(self) -> list:
        """The registries whose entries this command's ``options`` may configure."""
        return [STRATEGIES, REGULARIZERS]

    def methods_used(self) -> list[str]:
        """The registered methods a run of this config uses (their options may be given)."""
        recipe = STRATEGIES[self.strategy]
        return [self.strategy, *recipe.regularizers(self)]

    @model_validator(mode="after")
    def _options_of_used_methods(self):
        self.options = check_options(self.options, self.option_families(), self.methods_used())
        return self


class LoggerOptions(OptionGroup):
    """Where the training curves are logged besides the run's own ``metrics.csv`` (always written): TensorBoard
    event files in the run, or a local MLflow store (a SQLite file: no server, no network)."""

    PANEL: ClassVar[str] = "Output"
    logger: Literal["csv", "tensorboard", "mlflow"] = Field(
        "csv", description="also log to: tensorboard (<run>/tensorboard/) or mlflow (a local SQLite store, "
        "--mlflow-db); csv: only the run's metrics.csv, always written")
    experiment: str | None = Field(None, min_length=1, description="mlflow: the experiment the run logs into; None: "
                                   "the run folder's parent's name (a compare or leaderboard: its --out folder's)")
    mlflow_db: str | None = Field(None, min_length=1, description="mlflow: the local SQLite file the run logs into "
                                  "(view with mlflow ui --backend-store-uri sqlite:///FILE); None: <run>/mlflow.db "
                                  "(a compare or leaderboard: <out>/mlflow.db, shared by its runs)")


class RunConfig(OptionGroup):
    """What every run config has: where it writes, and its YAML form (``config.yaml``)."""

    PANEL: ClassVar[str] = "Output"
    out: str | None = Field(None, description="run directory (default runs/<model>-<strategy>-<time>)")

    def data_specs(self) -> list[str]:
        """The data sources this run reads (builtin names included)."""
        return [self.data]

    def save(self, path: Path) -> None:
        from transferkit.rundir import atomic_write

        text = yaml.safe_dump(self.model_dump(), sort_keys=False)
        atomic_write(path, lambda p: p.write_text(text))

    @classmethod
    def load(cls, path: Path, **overrides):
        return cls.build(**{**read_yaml_mapping(path), **overrides})

    @classmethod
    def build(cls, **values):
        """Validate ``values``; an invalid option becomes one ConfigError line."""
        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "config"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"{cls.__name__.removesuffix('Config').lower() or 'this command'} has no such option"
            raise ConfigError(f"invalid option {where}: {msg}") from None

    @classmethod
    def panel_of(cls, field: str) -> str:
        """The ``--help`` panel of ``field``: its option group's, else the command's own (``Adapt``)."""
        for base in cls.__mro__[1:]:
            if issubclass(base, OptionGroup) and field in base.__dict__.get("__annotations__", {}):
                return base.PANEL
        return cls.__name__.removesuffix("Config")


class FinetuneConfig(RunConfig, LoggerOptions, MethodOptions, TrainerOptions, ProbeOptions, LoRAOptions,
                     ForgettingOptions, StoppingOptions, AveragingOptions, BalanceOptions, AugmentOptions, OptimOptions, RegularizerOptions, L2SPOptions, RecipeOptions,
                     LabelOptions, ModelOptions, DataOptions):
    """Everything that defines a ``transferkit finetune`` run."""

    def data_specs(self) -> list[str]:
        return [p for p in (self.data, self.source_data) if p]



#: The recipes ``adapt`` trains with: they train the backbone in a Lightning loop (the alignment loss
#: reaches the features); cached-feature and probe-initialised recipes do not fit.
ADAPT_STRATEGIES = ("full", "l2sp", "gradual")


class AdaptConfig(RunConfig, LoggerOptions, MethodOptions, TrainerOptions, OptimOptions, L2SPOptions, RecipeOptions,
                  LabelOptions, ModelOptions, DataOptions):
    """Everything that defines a ``transferkit adapt`` run: finetune's model and training options,
    a labelled source (``data`` is set to ``source``) and a target whose labels are never trained on."""

    data: str | None = Field(None, description="set from source (adapt's labelled domain)")
    source: str = Field(description="labelled source domain: builtin:..., an image folder or a CSV")
    target: str = Field(description="target domain: as source, or a folder of images without class folders "
                        "(unlabelled: then only proxy metrics are reported)")
    method: str = Field("dann", description="a registered adaptation method (transferkit.registry.ADAPTATION)")
    strategy: str = Field("full", description=f"the recipe that trains the network: {', '.join(ADAPT_STRATEGIES)}")
    trade_off: float | None = Field(None, ge=0, description="weight of the alignment loss; None: the method's "
                                    "measured default")
    target_test_split: float = Field(0.3, ge=0, lt=1, description="fraction of the target images held out "
                                     "(seeded, label-free) to score the target; ignored when the target has "
                                     "its own test split")
    transductive: bool = Field(False, description="adapt on all target images and score the target on them "
                               "(as papers do) instead of on a held-out part")
    target_images: int | None = Field(None, ge=4, description="use at most N target images (seeded, before "
                                      "the split)")
    max_proxy_rows: int = Field(1000, ge=4, description="proxy A-distance: at most N feature rows per domain")

    @model_validator(mode="before")
    @classmethod
    def _data_is_source(cls, values):
        if isinstance(values, dict) and values.get("source") is not None:
            if values.get("data") not in (None, values["source"]):
                raise ValueError("adapt reads its labelled data from source; leave data unset")
            values = {**values, "data": values["source"]}
        return values

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return ADAPTATION.validate(v)

    def option_families(self) -> list:
        return [STRATEGIES, REGULARIZERS, ADAPTATION]

    def methods_used(self) -> list[str]:
        return [*super().methods_used(), self.method]

    @field_validator("strategy")
    @classmethod
    def _adapt_strategy(cls, v: str) -> str:
        return one_of(v, ADAPT_STRATEGIES, "strategy for adapt")


    def data_specs(self) -> list[str]:
        return [self.source, self.target]



#: The recipes that train a student: every parameter in a Lightning loop.
DISTILL_STRATEGIES = ("full", "gradual")


class DistillConfig(RunConfig, LoggerOptions, MethodOptions, TrainerOptions, OptimOptions, RecipeOptions, LabelOptions,
                    ModelOptions, DataOptions):
    """Everything that defines a ``transferkit distill`` run: a finished run as the teacher, and a
    student (``model``, ``weights``, ``model_args``) trained with finetune's options on ``data``."""

    data: str | None = Field(None, description="labelled images; None: the teacher run's data")
    teacher: str = Field(description="a finished run directory (finetune, adapt, distill): its model teaches")
    model: str = Field("efficientnet_lite0", description="the student: any timm model name")
    weights: str = Field("none", description="the student's weights: none (scratch), packaged, imagenet or a file")
    loss: str = Field("soft", description="a registered distillation loss (transferkit.registry.DISTILL)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term; 1 - alpha weights the "
                         "labels' cross-entropy")
    temperature: float = Field(4.0, gt=0, description="soft: softmax temperature T")
    strategy: str = Field("full", description=f"how the student trains: {', '.join(DISTILL_STRATEGIES)}")
    backbone_lr_mult: float | None = Field(None, ge=0, description="backbone LR = head LR x this; None: 1 for a "
                                           "student from scratch, 0.1 for a pretrained one")
    unlabelled: int = Field(0, ge=0, description="also distil on N training images outside the labelled split, "
                            "their labels unused (the teacher's outputs only)")
    augment: bool = Field(True, description="augment the student's training images (the teacher sees the same "
                          "crops); off: the teacher's outputs are computed once and cached")
    baseline: bool = Field(False, description="also train the same student alone (loss none, same budget): "
                           "student_alone_accuracy")
    baseline_run: str | None = Field(None, description="read student_alone_accuracy from this finished run instead")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        return DISTILL.validate(v)

    def option_families(self) -> list:
        return [DISTILL]

    def methods_used(self) -> list[str]:
        return [self.loss]

    @field_validator("strategy")
    @classmethod
    def _distill_strategy(cls, v: str) -> str:
        return one_of(v, DISTILL_STRATEGIES, "strategy for distill")

    @model_validator(mode="after")
    def _one_baseline(self):
        if self.baseline and self.baseline_run:
            raise ValueError("give --baseline (train the student alone) or --baseline-run RUN, not both")
        return self

    def data_specs(self) -> list[str]:
        return [p for p in (self.data, self.teacher, self.baseline_run) if p]




class PretrainConfig(RunConfig, LoggerOptions, MethodOptions, TrainerOptions, OptimOptions, ModelOptions,
                     DataOptions):
    """Everything that defines a ``transferkit pretrain`` run: a self-supervised method trains a backbone
    on the images of ``data`` (labels, if any, only feed the kNN monitor)."""

    data: str = Field(description="images: builtin:..., an image folder (class folders, or none: unlabelled) or a "
                      "CSV; labels are never trained on")
    method: str = Field("simclr", description="a self-supervised method (transferkit.registry.SELFSUP)")
    weights: str = Field("packaged", description="start from: packaged (offline ImageNet: domain-adaptive "
                         "pretraining, measured best here), none (random init), imagenet (hub), a file or a run")
    batch_size: int = Field(128, ge=2, description="images per step and device (each gives 2+ views)")
    image_size: int | None = Field(None, ge=16, description="None: 64")
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability in the views")
    images: int | None = Field(None, ge=2, description="pretrain on at most N of the training images (seeded)")
    monitor: bool = Field(True, description="log kNN accuracy of the features each epoch (needs labels)")
    monitor_images: int = Field(2000, ge=10, description="kNN monitor: at most N labelled training images as "
                                "the bank and N validation images as queries")
    knn_k: int = Field(20, ge=1, description="kNN monitor: neighbours that vote")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return SELFSUP.validate(v)

    def option_families(self) -> list:
        return [SELFSUP]

    def methods_used(self) -> list[str]:
        return [self.method]


class TTAConfig(RunConfig, MethodOptions):
    """Everything that defines a ``transferkit tta`` run (saved as its ``config.yaml``)."""

    run: str = Field(description="a finished finetune/adapt run directory (model.json + model.safetensors)")
    data: str = Field(description="the test stream: builtin:..., an image folder (class folders or flat) or a CSV; "
                      "its test split when it has one; labels only score")
    methods: list[str] = Field(default_factory=lambda: TTA.lineup(), description="test-time adaptation methods "
                               "(transferkit.registry.TTA); default: its line-up")
    corruptions: list[str] = Field([], description="corruptions applied to the stream (none: the data as it is)")
    severity: int = Field(5, ge=1, le=5, description="corruption severity 1..5")
    continual: bool = Field(False, description="one stream of all corruptions in turn, never reset")
    batch_size: int = Field(64, ge=1, description="test images per adaptation step")
    images: int | None = Field(None, ge=1, description="use at most N stream images (seeded)")
    episodic: bool = Field(False, description="reset the model after every batch")
    steps: int = Field(1, ge=1, description="gradient steps per batch (tent, eata)")
    lr: float = Field(1e-3, gt=0, description="learning rate (tent, eata)")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam (TENT's CIFAR setting) or sgd (momentum 0.9)")
    bn_prior: float | None = Field(None, ge=0, description="BatchNorm prior strength N: statistics = (N source + n "
                                   "batch)/(N + n); None: 16, measured (0: pure test-batch statistics)")
    fisher_images: int = Field(500, ge=0, description="eata: clean training images of the run for its Fisher "
                               "penalty (0: no penalty, ETA)")
    seed: int = Field(0, ge=0, lt=2**32, description="fixes the stream order, image sample and corruptions")
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto")
    out: str | None = Field(None, description="output folder")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one method")
        return [TTA.validate(m) for m in v]

    def option_families(self) -> list:
        return [TTA]

    def methods_used(self) -> list[str]:
        return self.methods
