"""Whether an MPI launcher started this process, and as which rank, from the launcher's environment variables
alone (nothing imports mpi4py here): ``launch()``; and the share of this machine's cores that is this process's.
``distributed`` builds the group a Trainer trains in from it; ``parallel`` sizes its threads by it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# (size, rank, local rank, local size) as each launcher names them; the first whose size is set counts
LAUNCHER_ENV = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),            # MPICH's hydra, Intel MPI
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"),
    ("SLURM_STEP_NUM_TASKS", "PMIX_RANK", "SLURM_LOCALID", None),             # srun --mpi=pmix (pmi2: PMI_SIZE)
)


@dataclass(frozen=True)
class Launch:
    """What the launcher says of this process: ``size`` ranks in all, this one ``rank``; on this
    machine ``local_size`` of them (None where the launcher does not say), this one ``local_rank``."""
    size: int
    rank: int
    local_rank: int
    local_size: int | None


def _int(name: str | None, env) -> int | None:
    try:
        return int(env[name]) if name else None
    except (KeyError, ValueError):
        return None


def launch(env=None) -> Launch | None:
    """This process's place in an MPI job, read from the launcher's environment; None when no launcher
    started it (or one that sets none of ``LAUNCHER_ENV``)."""
    env = os.environ if env is None else env
    for size_var, rank_var, local_var, local_size_var in LAUNCHER_ENV:
        size, rank = _int(size_var, env), _int(rank_var, env)
        if size is not None and rank is not None:
            local = _int(local_var, env)
            return Launch(size, rank, rank if local is None else local, _int(local_size_var, env))
    return None


def share_of_cores(cores: int) -> int:
    """The cores of ``cores`` (this process's CPU affinity) that are its own: all of them, unless an MPI
    launcher started several ranks on this machine without binding each to its own cores (they all see
    every core), when each rank gets an equal share."""
    here = launch()
    if here is None or not here.local_size or here.local_size <= 1 or cores < (os.cpu_count() or cores):
        return cores
    return max(1, cores // here.local_size)
