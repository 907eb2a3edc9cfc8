"""k-means in torch: k-means++ seeding and Lloyd steps, deterministic from a seed.

The optimisation step of the speech-tokenizer recipe: each :func:`lloyd_step` assigns every vector to its
nearest centroid and moves each centroid to the mean of its vectors. The loss is the inertia, the mean squared
distance of the vectors to their centroids, which a Lloyd step never increases. A centroid left without
vectors is moved onto the vector farthest from its own centroid (so K stays the codebook size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d) vectors, (K, d) centroids -> (N,) nearest index and (N,) squared distance (chunked over N)."""
    c2 = centroids.square().sum(1)
    idx, dist = [], []
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk]
        d = (part.square().sum(1, keepdim=True) - 2 * part @ centroids.T + c2).clamp_min(0)  # (n, K)
        best = d.min(1)
        idx.append(best.indices)
        dist.append(best.values)
    return torch.cat(idx), torch.cat(dist)


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centroid drawn with probability proportional to D(x)^2. Returns (K, d)."""
    if x.dim() != 2 or x.shape[0] < k:
        raise ValueError(f"k-means needs (N >= K={k}, d) vectors, got {tuple(x.shape)}")
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    chosen = [first]
    d2 = (x - x[first]).square().sum(1)
    for _ in range(1, k):
        if float(d2.sum()) <= 0:  # fewer distinct vectors than K: repeat one
            nxt = int(torch.randint(x.shape[0], (1,), generator=generator))
        else:
            nxt = int(torch.multinomial(d2, 1, generator=generator))
        chosen.append(nxt)
        d2 = torch.minimum(d2, (x - x[nxt]).square().sum(1))
    return x[chosen].clone()


def lloyd_step(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One assignment + update. Returns the new (K, d) centroids and the inertia of the assignment made."""
    idx, dist = nearest(x, centroids)
    k, d = centroids.shape
    sums = torch.zeros(k, d, dtype=x.dtype).index_add_(0, idx, x)
    counts = torch.bincount(idx, minlength=k).to(x.dtype)
    new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
    empty = torch.nonzero(counts == 0).flatten()
    if len(empty):  # re-seed empty clusters on the worst-fitted vectors
        far = dist.argsort(descending=True)[: len(empty)]
        new[empty[: len(far)]] = x[far]
    return new, float(dist.mean())


@dataclass
class KMeansResult:
    """Fitted centroids and the inertia before each Lloyd step (``inertia[0]``: the seeding's)."""

    centroids: torch.Tensor
    inertia: list[float] = field(default_factory=list)


def fit_kmeans(x: torch.Tensor, k: int, iterations: int, seed: int = 0, tol: float = 0.0) -> KMeansResult:
    """k-means++ then up to ``iterations`` Lloyd steps; stops early once the relative inertia gain < ``tol``.

    Args:
        x: (N, d) float vectors (float64 is fine and more reproducible).
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    gen = torch.Generator().manual_seed(seed)
    centroids = kmeans_pp(x, k, gen)
    result = KMeansResult(centroids)
    for _ in range(iterations):
        centroids, inertia = lloyd_step(x, centroids)
        result.inertia.append(inertia)
        if tol > 0 and len(result.inertia) > 1 and result.inertia[-2] - inertia <= tol * result.inertia[-2]:
            break
    result.centroids = centroids
    result.inertia.append(float(nearest(x, centroids)[1].mean()))
    return result
