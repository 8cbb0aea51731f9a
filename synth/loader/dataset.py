"""Sharding, shuffling, batching and exact resume over a native pack.

The order is a pure function of (seed, epoch, rank, world_size): epoch e permutes all
sequences with a generator seeded by (seed, e), rank r takes every world_size-th of
them starting at r (no overlap, no gaps), and consecutive runs of batch_size form the
batches. A position is therefore just (epoch, batch): the state dict holds that, and
resuming recomputes the order and starts at that batch.

DataLoader workers: worker w of W yields batches start+w, start+w+W, ...; PyTorch
takes one batch from each worker in turn, so the batches arrive in order whatever W
is, and a state saved with 2 workers resumes exactly with 0 or 4.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from synth.loader.data import PackedData, build_batch


class LoaderStateError(ValueError):
    pass


class _Order:
    def __init__(
        self,
        data: PackedData,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool,
        drop_remainder: bool,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.data, self.batch_size, self.rank, self.world_size = data, batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_remainder = seed, shuffle, drop_remainder

    def sequences(self, epoch: int) -> np.ndarray:
        n = len(self.data)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.drop_remainder:
            # Every rank gets the same number of full batches (DDP needs that); which
            # sequences are left out changes with the epoch's shuffle.
            keep = n - n % (self.world_size * self.batch_size)
            perm = perm[:keep]
        return perm[self.rank :: self.world_size]

    def batches(self, epoch: int) -> int:
        n = len(self.sequences(epoch))
        return -(-n // self.batch_size)

    def batch(self, epoch: int, index: int, seqs: np.ndarray | None = None) -> dict:
        seqs = self.sequences(epoch) if seqs is None else seqs
        chosen = seqs[index * self.batch_size : (index + 1) * self.batch_size]
        out = build_batch(self.data, chosen)
        out["epoch"], out["batch_index"] = epoch, index
        return out

    def state(self, epoch: int, batch: int) -> dict:
        return {
            "epoch": epoch,
            "batch": batch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_remainder": self.drop_remainder,
            "pack": self.data.fingerprint,
        }

    def check(self, state: dict) -> None:
        mine = self.state(0, 0)
        for key in ("seed", "rank", "world_size", "batch_size", "shuffle", "drop_remainder", "pack"):
            if state.get(key) != mine[key]:
                raise LoaderStateError(
                    f"loader state was saved with {key}={state.get(key)!r}, this loader has {mine[key]!r}: "
                    "an exact resume needs the same pack and settings"
                )


class PackedBatches:
    """Plain iterator (numpy batches, no torch), epoch after epoch, with exact resume."""

    def __init__(
        self,
        path: str | Path | PackedData,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = False,
        epochs: int | None = None,
    ):
        data = path if isinstance(path, PackedData) else PackedData(path)
        self.order = _Order(data, batch_size, rank, world_size, seed, shuffle, drop_remainder)
        self.epochs = epochs
        self.epoch, self.next_batch = 0, 0

    def __iter__(self) -> Iterator[dict]:
        while self.epochs is None or self.epoch < self.epochs:
            seqs = self.order.sequences(self.epoch)
            nb = -(-len(seqs) // self.order.batch_size)
            while self.next_batch < nb:
                out = self.order.batch(self.epoch, self.next_batch, seqs)
                self.next_batch += 1
                yield out
            self.epoch, self.next_batch = self.epoch + 1, 0
            if len(seqs) == 0:
                return

    def state_dict(self) -> dict:
        return self.order.state(self.epoch, self.next_batch)

    def load_state_dict(self, state: dict) -> None:
        self.order.check(state)
        self.epoch, self.next_batch = int(state["epoch"]), int(state["batch"])


try:
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info
except ImportError:  # the plain iterator works without torch
    torch = None
    IterableDataset = object


def _to_torch(batch: dict) -> dict:
    out = {}
    for k, v in batch.items():
        out[k] = torch.from_numpy(v) if isinstance(v, np.ndarray) else v
    return out


class PackedDataset(IterableDataset):
    """torch IterableDataset yielding whole batches (use DataLoader(batch_size=None)
    or PackedLoader). One epoch per iteration, from the current position."""

    def __init__(
        self,
        path: str | Path | PackedData,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = False,
    ):
        if torch is None:
            raise ImportError("PackedDataset needs torch; PackedBatches works without it")
        data = path if isinstance(path, PackedData) else PackedData(path)
        self.order = _Order(data, batch_size, rank, world_size, seed, shuffle, drop_remainder)
        self.epoch, self.start = 0, 0

    @property
    def data(self) -> PackedData:
        return self.order.data

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        return self.order.batches(self.epoch)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        seqs = self.order.sequences(self.epoch)
        nb = -(-len(seqs) // self.order.batch_size)
        for index in range(self.start + wid, nb, nw):
            if info is None:
                self.start = index + 1  # in-process iteration tracks its own position
            yield _to_torch(self.order.batch(self.epoch, index, seqs))

    def state_dict(self) -> dict:
        return self.order.state(self.epoch, self.start)

    def load_state_dict(self, state: dict) -> None:
        self.order.check(state)
        self.set_epoch(int(state["epoch"]), int(state["batch"]))


class PackedLoader:
    """A DataLoader over PackedDataset that counts what the training loop has consumed,
    so state_dict() is exact however many workers prefetch ahead."""

    def __init__(self, dataset: PackedDataset, num_workers: int = 0, epochs: int | None = None, **dataloader_kwargs):
        self.dataset = dataset
        self.num_workers = num_workers
        self.epochs = epochs
        self.kwargs = dataloader_kwargs
        self.epoch, self.next_batch = dataset.epoch, dataset.start

    def __iter__(self) -> Iterator[dict]:
        while self.epochs is None or self.epoch < self.epochs:
            self.dataset.set_epoch(self.epoch, self.next_batch)
            nb = self.dataset.order.batches(self.epoch)
            if self.next_batch < nb:
                dl = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, **self.kwargs)
                for batch in dl:
                    self.next_batch += 1
                    yield batch
            if nb == 0:
                return
            self.epoch, self.next_batch = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return self.dataset.order.state(self.epoch, self.next_batch)

    def load_state_dict(self, state: dict) -> None:
        self.dataset.order.check(state)
        self.epoch, self.next_batch = int(state["epoch"]), int(state["batch"])
