"""``corrupt``: corrupted copies of a dataset's test images, one ``<name>-<severity>/`` folder per
corruption (``images/<n>.png`` + ``labels.csv``), in a run directory of kind ``corrupt``.

    check (options, OpenCV, --out: not the data, ours, no lock held) -> load the images
    -> open --out (create, mark, lock) -> each folder written whole (``atomic_dir``)

The folder collects corruptions: a later command adds its own folders beside the ones there, and
``--overwrite`` replaces only the folders it writes, and in them only the files transferkit wrote.
An interrupted or failed command keeps the folders it finished and no partial one.
"""

from __future__ import annotations

from pathlib import Path

from transferkit.data.corruptions import BENCHMARK, EXTRA
from transferkit.errors import Interrupted
from transferkit.rundir import RunDir, atomic_dir, declare_kind

#: what a corrupt folder owns (rundir.layout): per corruption and severity, its labels and images; a
#: finished folder is kept; a run writes, and --overwrite replaces, only its own folders (parts)
CORRUPT_RUN = declare_kind("corrupt", tuple(f"{name}-[1-5]/{file}" for name in BENCHMARK + EXTRA
                                            for file in ("labels.csv", "images/[0-9][0-9][0-9][0-9][0-9]*.png")),
                           keep=tuple(f"{name}-[1-5]" for name in BENCHMARK + EXTRA), parts=True)


def corrupt(data: str, names: list[str], out: Path | str, *, severity: int = 3, seed: int = 0,
            overwrite: bool = False) -> list[Path]:
    """Write ``out/<name>-<severity>/`` for each of ``names`` from ``data``'s test images (its training
    images when it has no test split); returns their ``labels.csv`` paths. ``severity`` 1..5 (3 by
    default: ``transferkit corrupt`` takes its default from here).

    Example::

        >>> import transferkit as tk
        >>> labels = tk.corrupt("builtin:digits", ["gaussian_noise", "fog"], "corrupted", severity=3)
        >>> [f"{path.parent.name}/{path.name}" for path in labels]
        ['gaussian_noise-3/labels.csv', 'fog-3/labels.csv']

    Each folder is a data source for ``finetune``, ``tta`` or ``predict``, e.g.
    ``tk.TTAConfig(run="runs/digits", data="corrupted/fog-3")``.
    """
    from transferkit.data.corruptions import check_opencv, check_severity, corruption_names, write_corrupted
    from transferkit.data.sources import load_source

    for name in names:
        corruption_names(name)
    check_opencv()
    parts = [f"{name}-{check_severity(severity)}" for name in names]
    inputs = [] if data.startswith("builtin:") else [data]
    run = RunDir(out, kind=CORRUPT_RUN).check(overwrite=overwrite, inputs=inputs, parts=parts)
    source = load_source(data)
    images = source.test if source.test is not None else source.train
    try:
        with run.open(overwrite=overwrite, inputs=inputs, parts=parts):
            for name, part in zip(names, parts):
                with atomic_dir(run.path / part) as tmp:
                    write_corrupted(images, name, severity, tmp, seed=seed)
    except Interrupted as e:
        left = [name for name, part in zip(names, parts) if not (run.path / part).is_dir()]
        if e.where and left:
            e.where += (f"; to add them: transferkit corrupt {data} --corruption {','.join(left)} "
                        f"--severity {severity} --seed {seed} --out {out}")
        raise
    return [run.path / part / "labels.csv" for part in parts]


__all__ = ["corrupt"]
