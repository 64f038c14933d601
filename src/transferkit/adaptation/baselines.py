"""The two bounds every adaptation method is read against: ``source-only`` (labelled source, no
alignment: the lower bound, the baseline of every verdict) and ``oracle`` (trained on the labelled
target adaptation split: the upper bound, the only method that reads target labels)."""

from transferkit.registry import ADAPTATION, Method

SOURCE_ONLY = ADAPTATION.register(Method(
    name="source-only", summary="labelled source only, the alignment loss off (the lower bound)",
    build=lambda ctx: None, defaults={"trade_off": 0.0}))
ORACLE = ADAPTATION.register(Method(
    name="oracle", summary="trained on the labelled target adaptation split: the upper bound, the only method that "
    "reads target labels", build=lambda ctx: None, defaults={"trade_off": 0.0},
    traits={"uses_target_labels": True}))
