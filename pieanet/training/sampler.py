"""The order in which a run sees its training samples: a shuffled epoch per process that a resumed run re-enters
where it stopped."""

from torch.utils.data import DistributedSampler, Sampler


class ResumableSampler(Sampler):
    """This process's share of a shuffled epoch (DistributedSampler), starting ``skip`` samples in when resuming."""

    def __init__(self, dataset, rank, world_size, seed):
        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip :])

    def __len__(self):
        return len(self.sampler) - self.skip
