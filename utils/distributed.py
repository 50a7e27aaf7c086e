"""Running one command as several processes started by torchrun (one per GPU or CPU socket, on any number of nodes).

    torchrun --nproc-per-node 4 make_heatmap.py --input photos --output results
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint host:29400 evaluate.py ...

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. ``process_group`` reads them: with more than one process it joins the
group (NCCL when the device is CUDA, each process on cuda:LOCAL_RANK; gloo on CPU) and leaves it on exit; without
them it is one process and every Group method is a no-op, so the single-process path does exactly what it did.
train_wavelet.py, make_heatmap.py and evaluate.py share this.
"""

import os
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    device: object = "cpu"  # a torch.device; the name "cpu" on the torch-free path (pieanet.runtime.torch_free)

    @property
    def is_main(self):
        """Rank 0: the process that merges, prints and writes the run's own files."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    def shard(self, items):
        """This process's items: every world_size-th item starting at its rank, so the shards are balanced and
        deterministic for the same (sorted) list, and their union in order of position is the list."""
        return list(items)[self.rank :: self.world_size]

    def barrier(self):
        if self.distributed:
            import torch.distributed as dist  # torch is loaded only by runs that use it (several processes do)

            dist.barrier()

    def gather(self, value):
        """Every process's ``value`` (any picklable object), in rank order, on every process."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def from_environment():
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) when not started by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


@contextmanager
def process_group(device):
    """Yield this process's Group for ``device`` (a torch.device): joined to the others when torchrun started
    several processes, and left again when the block ends (also on an error)."""
    rank, world_size, local_rank = from_environment()
    if world_size == 1:  # one process: nothing to join (and no torch to import)
        yield Group(rank, world_size, device)
        return
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Group(rank, world_size, device)
    finally:
        dist.destroy_process_group()
