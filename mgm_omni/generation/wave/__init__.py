"""Token-to-wave: flow solver, streaming schedule, vocoders, reference prompt."""
