"""Speed tools: `dcinet bench`, `dcinet profile` and the PyTorch peer.

- `harness`: the trainer of `state.build_trainer` on a random device batch, plus the
  measuring tools both commands use (compile timing, timed windows, cost and memory
  figures, a dense-matmul peak). It knows a method only through its contract.
- `bench`: train-step and eval-forward figures, the largest batch that fits, the table.
- `profiling`: a `jax.profiler` trace of a few steps and where their time goes.
- `processes`: work done in fresh processes (cold/warm compile restart, the peer).
- `torch_peer`: the same DCINet step in PyTorch (needs the `[torch]` extra).

Nothing here imports TensorFlow: these run on accelerator hosts without it. Submodules
are imported where used, so `import dcinet_jax.perf` is cheap.
"""
