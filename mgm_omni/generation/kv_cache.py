"""A preallocated key/value cache with per-sequence write positions.

Each sequence of the batch writes its keys at its own positions (``cache_pos``, shape (B, T)), so
requests of different lengths share one cache without padding slots: the attention mask is the
plain causal rule ``slot <= cache_pos``. When every sequence writes at the same place an ``int``
start is accepted instead, which takes a cheaper slice path (the common B = 1 case).
"""

from __future__ import annotations

import torch


class CacheFullError(RuntimeError):
    """A write would go past the cache's capacity and growing is not allowed."""


class KVCache:
    """Keys and values of every layer, shape (B, H_kv, capacity, D) each.

    Args:
        num_layers, batch_size, num_kv_heads, head_dim: sizes.
        capacity: positions preallocated per sequence.
        max_capacity: hard bound; ``None`` means the cache may grow (doubling) without limit.
        dtype, device: storage.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        max_capacity: int | None = None,
    ) -> None:
        if min(num_layers, batch_size, num_kv_heads, head_dim, capacity) <= 0:
            raise ValueError("KVCache sizes must all be positive")
        if max_capacity is not None and capacity > max_capacity:
            raise ValueError(f"capacity {capacity} exceeds max_capacity {max_capacity}")
        self.max_capacity = max_capacity
        shape = (batch_size, num_kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,) positions filled

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    def reset(self, index: int | None = None) -> None:
        """Forget everything (or only sequence ``index``). Storage is kept; stale slots are masked."""
        if index is None:
            self.lengths.zero_()
        else:
            self.lengths[index] = 0

    def ensure_capacity(self, needed: int) -> None:
        """Grow (doubling) so that ``needed`` positions fit; past ``max_capacity`` raise."""
        if needed <= self.capacity:
            return
        if self.max_capacity is not None and needed > self.max_capacity:
            raise CacheFullError(f"KV cache needs {needed} positions but is bounded at {self.max_capacity}")
        new = max(needed, 2 * self.capacity)
        if self.max_capacity is not None:
            new = min(new, self.max_capacity)
        for store in (self.k, self.v):
            for i, old in enumerate(store):
                grown = old.new_zeros(old.shape[:2] + (new,) + old.shape[3:])
                grown[:, :, : old.shape[2]] = old
                store[i] = grown

    def update(
        self, layer: int, cache_pos: int | torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values of ``layer`` and return the cached ones to attend over.

        Args:
            cache_pos: int start shared by the batch, or (B, T) positions per sequence.
            k, v: (B, H_kv, T, D).
            kv_len: how many positions to return (defaults to the furthest written position + 1).
        Returns:
            keys and values (B, H_kv, kv_len, D).
        """
        t = k.shape[2]
        if isinstance(cache_pos, int):
            end = cache_pos + t
            self.ensure_capacity(end)
            self.k[layer][:, :, cache_pos:end] = k
            self.v[layer][:, :, cache_pos:end] = v
            if layer == 0:
                self.lengths.clamp_(min=end)
            kv_len = end if kv_len is None else kv_len
        else:
            if kv_len is None:
                kv_len = int(cache_pos.max()) + 1
            self.ensure_capacity(kv_len)
            rows = torch.arange(k.shape[0], device=k.device)[:, None]  # (B, 1)
            self.k[layer][rows, :, cache_pos] = k.transpose(1, 2)  # (B, T, H_kv, D)
            self.v[layer][rows, :, cache_pos] = v.transpose(1, 2)
            if layer == 0:
                self.lengths = torch.maximum(self.lengths, cache_pos.max(dim=1).values + 1)
        return self.k[layer][:, :, :kv_len], self.v[layer][:, :, :kv_len]


def cache_for(cfg, batch_size: int, capacity: int, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu", max_capacity: int | None = None) -> KVCache:
    """A cache sized for a :class:`~mgm_omni.config.DecoderConfig` stack."""
    return KVCache(cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, cfg.dim_per_head,
                   capacity, dtype, device, max_capacity)
