"""DD-PPO plumbing over torch.distributed: init from torchrun variables, gradient averaging, broadcasts.

Every helper also works in a plain single process (world size 1): then they do nothing, so the trainer
has one code path. Each rank steps its own batched env and gathers its own rollout; ranks meet to
normalise advantages over all rollouts, to average gradients after every backward pass, and before each
update to agree on a stop (``any_rank``), and to pool the windows of finished episodes that rank 0 logs
(``sum_over_ranks``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from asgf_nav.config import ConfigError

logger = logging.getLogger(__name__)

# How long a rank waits for the others at a collective. The others wait there while rank 0 alone bakes the
# first training scene or validates, which on CPUs can take well over torch's default half hour; a rank that
# dies does not leave them waiting that long, since torchrun then ends every rank.
COLLECTIVE_TIMEOUT_S = 6 * 3600.0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's index on its machine: LOCAL_RANK (torchrun), else RANK as :func:`init_distributed` assumes;
    0 in a single-process run (no WORLD_SIZE above 1), whatever a shell left in those variables."""
    if not is_distributed() and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def is_main_process() -> bool:
    return rank() == 0


def backend_for(device: torch.device) -> str:
    """NCCL for a model on a GPU, gloo for one on the CPU: the backend must move the training device's tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(
    device: torch.device | None = None,
    backend: str | None = None,
    init_method: str | None = None,
    rank_id: int | None = None,
    world: int | None = None,
    timeout_s: float = COLLECTIVE_TIMEOUT_S,
) -> tuple[int, int, int]:
    """Join the process group described by RANK / WORLD_SIZE / LOCAL_RANK (torchrun) or by the arguments.

    Returns (rank, world_size, local_rank). Without torchrun variables and arguments this is a no-op
    that returns (0, 1, 0). The backend follows the training ``device`` (:func:`backend_for`; the CPU when
    None); on a GPU, a device without an index becomes this rank's GPU, ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    rank_id = int(os.environ.get("RANK", "0")) if rank_id is None else rank_id
    local = int(os.environ.get("LOCAL_RANK", str(rank_id)))
    if world <= 1 or is_distributed():
        return rank(), world_size(), local
    device = torch.device("cpu") if device is None else device
    backend = backend or backend_for(device)
    if device.type == "cuda":
        if device.index not in (None, local):  # NCCL fails on two ranks sharing a GPU
            raise ConfigError(
                f"train.device: {str(device)!r} puts the DD-PPO process with LOCAL_RANK={local} on another rank's "
                "GPU; use cuda or auto, which give each rank its own (cuda:LOCAL_RANK)"
            )
        torch.cuda.set_device(local if device.index is None else device.index)
    dist.init_process_group(
        backend=backend,
        init_method=init_method or "env://",
        rank=rank_id,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    logger.info("joined process group: rank %d of %d (local rank %d, %s)", rank_id, world, local, backend)
    return rank_id, world, local


@contextmanager
def process_group_for_run(device: torch.device | None) -> Iterator[None]:
    """:func:`init_distributed` for one run, and the group it joined left as the run ends: an interpreter
    that exits with gloo's threads still running can abort (exit -6) after a finished run. After a run that
    ended well every rank first meets the others, so none leaves while a peer still talks to it."""
    joined_here = not is_distributed()
    init_distributed(device)
    try:
        yield
    except BaseException:
        if joined_here and is_distributed():
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                dist.destroy_process_group()
        raise
    if joined_here and is_distributed():
        barrier()
        dist.destroy_process_group()


def rank0_error(error: BaseException | None) -> str | None:
    """Rank 0's error message (None when it had none), on every rank. A check that only rank 0 makes (it
    alone claims the run directory) then stops every rank with its message, not a peer's gloo error."""
    return rank0_object(None if error is None else str(error))


def rank0_object(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every rank; ``value`` itself in one process."""
    if world_size() == 1:
        return value
    message = [value]
    dist.broadcast_object_list(message, src=0)
    return message[0]


def broadcast_parameters(module: nn.Module, source: int = 0) -> None:
    """Copy rank ``source``'s parameters and buffers to every rank so all start from the same weights."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=source)


def all_reduce_gradients(module: nn.Module) -> None:
    """Average gradients over ranks in one flat all-reduce (missing gradients count as zeros)."""
    world = world_size()
    if world == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for param in params:
        count = param.numel()
        param.grad = flat[offset : offset + count].view_as(param).clone()
        offset += count


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` (same shape on every rank) over all ranks; ``value`` itself in one process."""
    if world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` (same shape on every rank) over all ranks; ``value`` itself in one process."""
    return value if world_size() == 1 else sum_over_ranks(value) / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on at least one (one tiny all-reduce; ``device`` is the
    training device, whose backend moves the tensor)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
