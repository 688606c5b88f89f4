"""Several processes on PyTorch's own engine: ``torchrun`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``
(and the rendezvous), :func:`setup` joins the process group (NCCL on GPUs, Gloo on CPUs); a single process
needs none of it and every helper here then answers as rank 0 of 1."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched() -> bool:
    """True when started by torchrun (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> str:
    """Join the process group when launched with several processes; returns the device this rank uses
    (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    if not launched() or dist.is_initialized():
        return device
    cuda = str(device).startswith("cuda")
    if cuda:
        device = local_device("cuda")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def slot() -> tuple[int, int]:
    """``(rank, world size)`` of this process: from the process group, else from the launcher's environment
    (work that needs no communication, such as parsing files, runs without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return rank(), world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_device(device: str) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` when launched with several processes."""
    if launched() and device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def shard(items: Sequence, rank_: int | None = None, world: int | None = None) -> list:
    """This process's share of ``items``: every ``world``-th item from position ``rank`` (deterministic)."""
    r, w = slot()
    r, w = r if rank_ is None else rank_, w if world is None else world
    return list(items[r::w])
