"""Reusable training pieces that recipe scripts compose; each module holds one idea.

- ``config``: ``TrainConfig`` (YAML at the edge, checked dataclasses)
- ``precision``: bf16 autocast / fp32 context
- ``optim``: AdamW with no-decay parameter groups
- ``schedule``: warm-up + cosine / constant learning-rate multipliers
- ``rng``: seeding and capturing python / numpy / torch RNG states
- ``loop``: ``TrainState``, ``train_step`` (accumulation, clipping), the resumable batch stream
- ``checkpointing``: atomic save / exact resume / keep last N
- ``metrics``: CSV + TensorBoard + loss-curve PNG, progress bar
- ``distributed``: torchrun init, DDP / FSDP2 wrapping, metric all-reduce
- ``sampler``: length-bucketed, token-budget, distributed, resumable batch sampler
- ``shards``: memory-mapped pre-tokenised shards (``.npy`` + JSON index)
- ``loader``: DataLoader settings and padding collate

Nothing is imported here, so ``import mgm_omni.training.sampler`` stays light.
"""
