"""Batches of texts of similar length: padding to the longest in a batch then wastes little.

Fortunes range from a few tokens to the 128-token cap; random batches pad to nearly the cap and
spend about three times the compute the real tokens need."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


def text_lengths(dataset) -> list:
    return [len(dataset[i][0]["input_ids"]) for i in range(len(dataset))]


class LengthGroupedBatches(Sampler):
    """Each epoch: a seeded shuffle, cut into windows of `window` batches, each window sorted by
    length and cut into batches, the batches shuffled; rank r of `world` takes every world-th."""

    def __init__(self, lengths: list, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 drop_last: bool = False, window: int = 50):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.rank, self.world, self.drop_last, self.window = rank, world, drop_last, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
        usable = len(batches) - len(batches) % self.world  # every rank takes as many steps
        return batches[self.rank:usable:self.world]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def eval_loader(dataset, batch_size: int, collate, kind: str, workers: int = 0):
    """A DataLoader for evaluation: text in batches sorted by length (order does not matter there)."""
    from torch.utils.data import DataLoader
    if kind == "text":
        lengths = text_lengths(dataset)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers)
