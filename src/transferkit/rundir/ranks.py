"""The rank-zero rule: only global rank zero creates, writes or deletes in run directories; other ranks
only train (``RunDir.check``, ``RunDir.open`` and ``atomic_write`` do nothing there)."""

from __future__ import annotations

import os


def global_rank() -> int:
    """This process's global rank, read from the environment its launcher set.

    ``RANK`` (torchrun, DeepSpeed, Kubeflow) when set. Else Lightning's launcher
    (and torchelastic's) ``LOCAL_RANK`` on node ``NODE_RANK`` (or ``GROUP_RANK``):
    ``node * LOCAL_WORLD_SIZE + local``; without ``LOCAL_WORLD_SIZE`` the per-node
    count is taken as 1, so the number is a stand-in, but it is zero exactly on
    node 0's first process. Else ``SLURM_PROCID`` or ``JSM_NAMESPACE_RANK`` (srun,
    jsrun tasks). Else 0: a process nobody launched.
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if {"LOCAL_RANK", "NODE_RANK", "GROUP_RANK"} & env.keys():
        node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
        return node * int(env.get("LOCAL_WORLD_SIZE", 1)) + int(env.get("LOCAL_RANK", 0))
    for key in ("SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in env:
            return int(env[key])
    return 0


def is_global_zero() -> bool:
    """Whether this process may touch run directories: only global rank zero does."""
    return global_rank() == 0
