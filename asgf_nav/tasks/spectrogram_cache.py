"""Bounded LRU cache of spectrogram observations stored in one preallocated device tensor.

Keys are int64 codes of (scene, receiver, source, yaw, sound). A lookup returns slot indices so the
batch of observations is a single gather; misses are computed together by a callback and written into
the least recently used slots. Memory is ``capacity * freq * time * 2 * 4`` bytes and never grows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch


class SpectrogramCache:
    def __init__(
        self,
        capacity: int,
        shape: tuple[int, ...],
        device: torch.device | str,
        compute: Callable[[np.ndarray], torch.Tensor],
    ) -> None:
        """``compute(keys)`` returns (len(keys), *shape) float32 observations for unique missing keys."""
        if capacity <= 0:
            raise ValueError(f"spectrogram cache capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.storage = torch.zeros((self.capacity, *shape), dtype=torch.float32, device=device)
        self.compute = compute
        self.slots: OrderedDict[int, int] = OrderedDict()
        self.free = list(range(self.capacity - 1, -1, -1))
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.slots)

    def clear(self) -> None:
        """Forget every entry (the storage stays allocated); hit and miss counts are kept."""
        self.slots.clear()
        self.free = list(range(self.capacity - 1, -1, -1))

    def lookup(self, keys: np.ndarray) -> torch.Tensor:
        """(B,) int64 keys -> (B, *shape) observations; B distinct keys must fit in the cache."""
        unique = list(dict.fromkeys(int(k) for k in keys))
        if len(unique) > self.capacity:
            raise ValueError(
                f"{len(unique)} distinct spectrograms requested at once but the cache holds {self.capacity}; "
                "raise the spectrogram cache size to at least the number of environments"
            )
        missing = []
        for key in unique:
            if key in self.slots:
                self.slots.move_to_end(key)
            else:
                missing.append(key)
        self.hits += len(unique) - len(missing)
        self.misses += len(missing)
        if missing:
            new_slots = []
            for key in missing:
                if self.free:
                    slot = self.free.pop()
                else:
                    _, slot = self.slots.popitem(last=False)
                self.slots[key] = slot
                new_slots.append(slot)
            try:
                values = self.compute(np.asarray(missing, dtype=np.int64))
            except BaseException:
                for key, slot in zip(missing, new_slots):
                    del self.slots[key]
                    self.free.append(slot)
                raise
            slots = torch.as_tensor(new_slots, device=self.storage.device)
            self.storage.index_copy_(0, slots, values.to(self.storage.device))
        index = torch.as_tensor([self.slots[int(k)] for k in keys], device=self.storage.device)
        return self.storage.index_select(0, index)  # on the CPU much faster than storage[index]
