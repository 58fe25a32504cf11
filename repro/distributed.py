"""What the workers of one run say to each other: gradient averaging and the few collectives the loop and the
launcher need; and each worker's own random stream (its seed, its state in a checkpoint). The process group is
someone else's (Ray Train's `TorchTrainer`, a test's `init_process_group`); with one worker, or none, every
function here is a no-op, so the same loop runs alone.

The project averages gradients itself (`GradReducer`) instead of wrapping the nets in DDP: each GAN phase runs
D several times before one backward (real, fake; then the fake for G), which DDP's reducer does not allow.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def distributed(world_size: int) -> bool:
    """Whether there are other workers to talk to: more than one, in an initialised process group."""
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def collective_device() -> torch.device:
    """Where tensors for a collective of the current process group must live: the current CUDA device under
    NCCL (NCCL rejects CPU tensors), else the CPU (gloo)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: torch.Tensor, world_size: int) -> torch.Tensor:
    """Mean over the workers of `values`, which must already be on the collective's device (see
    `collective_device`): the loop only ever reduces tensors on its own device. One worker: `values` itself."""
    if distributed(world_size):
        values = values.clone()
        dist.all_reduce(values)
        values /= world_size
    return values


def broadcast_object(value: Any, world_size: int) -> Any:
    """Rank 0's `value` (anything picklable: a decision, a small record) on every worker; `value` itself when
    there is one worker or no process group. Every worker must call it (a collective)."""
    if not distributed(world_size):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=collective_device())
    return box[0]


def gather_object(value: Any, world_size: int) -> list[Any]:
    """Every worker's `value`, in rank order (`[value]` alone). Every worker must call it (a collective)."""
    if not distributed(world_size):
        return [value]
    values: list[Any] = [None] * world_size
    dist.all_gather_object(values, value)  # under NCCL through the current CUDA device, which Ray Train sets
    return values


def broadcast_tensors(tensors: list[torch.Tensor], world_size: int) -> None:
    """Overwrite `tensors` (parameters and buffers, on the collective's device) in place with rank 0's: one
    broadcast per dtype and device, of the tensors flattened into one buffer. Every worker must call it with
    the same tensors in the same order."""
    if not distributed(world_size):
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for group in groups.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for t in group:
                t.copy_(flat[offset: offset + t.numel()].view_as(t))
                offset += t.numel()


def stream_seed(seed: int, rank: int, world_size: int, step: int = 0) -> int:
    """The seed of worker `rank`'s random stream (D's dropout, the VAE's noise). At the start `seed + rank`:
    rank 0's stream is a single worker's, and each other worker draws masks of its own (one stream for all
    would give every worker's share of the batch the same masks). A worker that resumes at `step` without a
    stream of its own in the checkpoint (one written before streams were kept per worker, or by fewer workers)
    takes `seed + rank + world_size * step`, a new stream rather than a replay of its first one."""
    return seed + rank + world_size * step


def stream_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """This worker's random stream: torch's CPU generator and, on CUDA, its own GPU's (so a resume on a
    machine with fewer or no GPUs still works)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_stream(state: dict[str, Any], seed: int, rank: int, world_size: int, device: torch.device) -> None:
    """Worker `rank`'s own stream from a checkpoint's `state`: `rank_rng[rank]`, else (older checkpoints, or a
    `Trainer.state_dict` alone) rank 0 takes `torch_rng`/`cuda_rng` and any other rank a new stream of its own
    (`stream_seed`), never rank 0's, which would give two workers the same dropout masks."""
    streams = state.get("rank_rng") or []
    if rank < len(streams):
        own = streams[rank]
    elif rank == 0:
        own = {"torch": state["torch_rng"], "cuda": state.get("cuda_rng")}
    else:
        torch.manual_seed(stream_seed(seed, rank, world_size, int(state["step"])))
        return
    torch.set_rng_state(own["torch"])
    cuda_rng = own.get("cuda")
    if isinstance(cuda_rng, list):  # older checkpoints held every visible GPU's state: take this worker's
        index = device.index or 0
        cuda_rng = cuda_rng[index] if index < len(cuda_rng) else None
    if cuda_rng is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda_rng, device)


class GradReducer:
    """Averages the gradients of `params` over the workers while backward still runs (what DDP does, written
    here because each phase runs D several times per backward — real, fake, fake-for-G — which DDP's reducer
    does not allow). Parameters are grouped into buckets of about `bucket_mb` in reverse registration order
    (≈ the order backward produces their gradients); a post-accumulate-grad hook counts each bucket's
    gradients and starts its asynchronous all-reduce as soon as the last one has arrived, so communication
    overlaps the rest of backward. Only an `armed` backward (the last micro-batch of a step) triggers it;
    `wait()` finishes every bucket (launching any whose parameters got no gradient) and writes the means back.
    On CUDA nothing here waits on the host: `work.wait()` makes the compute stream wait for NCCL's.
    """

    def __init__(self, params: list[nn.Parameter], world_size: int, bucket_mb: float = 25.0):
        self.world_size = world_size
        self.active = distributed(world_size)
        self.armed = False
        self.buckets: list[list[nn.Parameter]] = []
        limit, size = bucket_mb * 2**20, math.inf
        for p in reversed(params):
            if size + p.numel() * p.element_size() > limit and (not self.buckets or self.buckets[-1]):
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self.bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self.waiting = [len(b) for b in self.buckets]
        self.works: dict[int, tuple[torch.Tensor, Any]] = {}
        if self.active:
            for p in params:
                p.register_post_accumulate_grad_hook(self._ready)

    def _ready(self, param: nn.Parameter) -> None:
        if not self.armed:
            return
        index = self.bucket_of[id(param)]
        self.waiting[index] -= 1
        if self.waiting[index] == 0:
            self._launch(index)

    def _launch(self, index: int) -> None:
        grads = [p.grad for p in self.buckets[index] if p.grad is not None]
        if not grads:
            self.works[index] = (torch.empty(0), None)
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.works[index] = (flat, dist.all_reduce(flat, async_op=True))

    def wait(self) -> None:
        if not self.active:
            return
        for index in range(len(self.buckets)):
            if index not in self.works:  # some of its parameters got no gradient in this backward
                self._launch(index)
        for index, (flat, work) in self.works.items():
            if work is None:
                continue
            work.wait()
            flat /= self.world_size
            offset = 0
            for p in self.buckets[index]:
                if p.grad is not None:
                    p.grad.copy_(flat[offset: offset + p.numel()].view_as(p.grad))
                    offset += p.numel()
        self.works.clear()
        self.waiting = [len(b) for b in self.buckets]
        self.armed = False
