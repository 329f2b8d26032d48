"""Retrieval methods behind one contract, chosen by `config.method` (default 'dcinet').

The trainer, the evaluation entry point, bench and profile are generic: everything a
method knows lives in one module that provides the names below. A method is found by
name: `register(name, module)` first, else the module `dcinet_jax.methods.<name>`,
else `<name>` as an importable module path (`mypackage.my_method`) for methods kept
outside this repository. `get` checks the contract when the method is first looked up, so a
missing piece is one clear error at start-up rather than a failure mid-run.

The contract (see docs/methods.md for a worked example):

- `build_model(config, *, axis_name=None) -> flax.linen.Module`: the model; `axis_name`
  is the mapped mesh axis when the model is used inside the sharded step (for
  synchronised BatchNorm), None elsewhere (evaluation, tracing).
- `init_variables(model, rng, config) -> dict`: `{'params': ..., <other collections>}`.
  Any collections, none required (a model without BatchNorm returns only params). It
  must be traceable: it also runs under `jax.eval_shape` to build restore templates.
- `loss_fn(params, variables, batch, rng, *, model, config, step, axis_name)
  -> (loss, (new_variables, metrics))`: pure and jittable, per device (pmap semantics
  under `shard_map`). `variables` holds the non-param collections; `new_variables`
  must come back identical on every device (average them over `axis_name` inside when
  the method computes them per device). `rng` is already distinct per device and per
  step; split it for dropout or random augmentations. `metrics` is a flat dict of
  scalars (averaged over devices by the step). A method that needs the global batch
  all-gathers inside over `axis_name` (None outside a mesh).
- `optimizer(config, total_steps) -> optax.GradientTransformation` (param groups via
  `optax.multi_transform` are fine).
- `batch_rule(config, num_devices) -> None`: raises ValueError naming the config field
  when the global batch cannot be split over `num_devices` the way the loss needs.
- `examples_per_step(config) -> int`: examples in one global batch (for throughput).
- `steps_per_epoch(config, process_count) -> int` and
  `train_batches(config, *, start_step) -> Iterator[host batch]`: this process's share
  of each global batch as numpy arrays, leading axis = batch; deterministic in
  `start_step`, so a resumed run sees the data it would have seen.
- `synthetic_batch(rng, config) -> batch`: a random global batch with the shapes,
  dtypes and value ranges of a real one, traceable (bench and profile create it on
  the devices; no files are read).
- `eval_outputs(model, variables, config) -> Any`: runs the model over the method's
  evaluation data and returns what its evaluator consumes (per-item features and
  labels for the mAP evaluators).
- `DEFAULT_EVALUATOR: str`: the evaluator (`dcinet_jax.evaluators`) used when
  `config.eval.metrics` is not set.

Optional: `load_pretrained(variables, config) -> variables` (host-side, after init),
`describe(config) -> str` (one line for `dcinet summary`) and
`learning_rate(config, total_steps) -> optax.Schedule`: the method's own schedule
(FGCrossNet's halving, HSLM's step decay). A method that has one builds its optimizer
from it; the loop logs the same hook (`state.method_learning_rate`), so the logged rate
is the applied one. Without it the rate is the generic `config.optim` schedule
(`state.learning_rate_schedule`), which the optimizer must then use.
`check_training(config) -> None`: checks that only a training run needs (FGCrossNet: a
later stage without `init_from`), raising ValueError; `dcinet train` calls it first,
before any data is read or the workdir is created (eval, bench and profile do not).
`validate_data(config) -> None`: checks every split the run will read (shapes, counts,
dtypes, labels) and raises one line naming the file and field; the loop calls it
before the first step, so a bad test split stops the run before any training.
`validate_config(config) -> None`: raises ValueError naming the field for a value the
method cannot train or evaluate with; `from_config` calls it after the generic checks of
`validate_config` here.
`data_description(config) -> dict | None`: the data card of the data it evaluates on
(`input_pipeline/data_card.py`: counts per group and split, a fingerprint), written into
every results.json as "data" so two results can be compared knowing whether they used
the same data.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from dcinet_jax import config_fields

OPTIONAL = ('load_pretrained', 'describe', 'learning_rate', 'check_training')
REQUIRED = ('build_model', 'init_variables', 'loss_fn', 'optimizer', 'batch_rule',
            'examples_per_step', 'steps_per_epoch', 'train_batches', 'synthetic_batch',
            'eval_outputs', 'DEFAULT_EVALUATOR')
BUILTIN = ('dcinet', 'dsffn', 'fgcrossnet', 'hslm')

_registry: dict[str, Any] = {}


def register(name: str, method: Any) -> None:
    """Makes `method` (a module or any object with the contract's names) `config.method=name`."""
    check_contract(method, name)
    _registry[name] = method


def get(name: str) -> Any:
    """The method called `name`: registered, built in, or an importable module path."""
    if name in _registry:
        return _registry[name]
    candidates = [f'{__name__}.{name}', name] if '.' not in name else [name]
    for module_name in candidates:
        try:
            module = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as e:
            if e.name != module_name and not module_name.startswith(f'{e.name}.'):
                raise  # the method exists but one of its own imports is missing
    else:
        known = sorted(set(BUILTIN) | set(_registry))
        raise ValueError(f'config.method={name!r}: no such method; known: {known} '
                         '(or an importable module path)')
    check_contract(module, name)
    _registry[name] = module
    return module


def from_config(config: Any) -> Any:
    """The method of `config`, after refusing fields that were renamed (one line that
    names the new field, before anything is built) and values no run can use
    (`validate_config`)."""
    config_fields.check_renamed(config)
    method = get(str(config.get('method', 'dcinet')))
    validate_config(method, config)
    return method


def validate_config(method: Any, config: Any) -> None:
    """One-line ValueErrors, at start-up, for values the generic loop reads that no run
    can use, then the method's own optional `validate_config(config)`.

    Without these a negative learning rate trained (gradient ascent) and `num_epochs=0`
    evaluated the untrained model, both with exit code 0.
    """
    optim = config.get('optim', None)
    lr = optim.get('learning_rate', None) if optim is not None else None
    if isinstance(lr, (int, float)) and not lr > 0:
        raise ValueError(f'config.optim.learning_rate={lr}: must be > 0 (a negative rate '
                         'climbs the loss, zero never moves)')
    steps, epochs = config.get('num_train_steps', None), config.get('num_epochs', None)
    if isinstance(epochs, (int, float)) and epochs <= 0 and (steps is None or steps <= 0):
        raise ValueError(f'config.num_epochs={epochs} and config.num_train_steps={steps}: '
                         'nothing to train; set num_epochs >= 1 (or num_train_steps >= 1)')
    hook = getattr(method, 'validate_config', None)
    if hook is not None:
        hook(config)


def check_contract(method: Any, name: str) -> None:
    missing = [attr for attr in REQUIRED if not hasattr(method, attr)]
    if missing:
        where = method.__name__ if isinstance(method, types.ModuleType) else type(method).__name__
        raise ValueError(f'method {name!r} ({where}) does not provide {missing}; see the '
                         'contract in dcinet_jax/methods/__init__.py')
    for attr in REQUIRED:
        if attr != 'DEFAULT_EVALUATOR' and not callable(getattr(method, attr)):
            raise ValueError(f'method {name!r}: {attr} must be callable')
    for attr in OPTIONAL:
        if getattr(method, attr, None) is not None and not callable(getattr(method, attr)):
            raise ValueError(f'method {name!r}: {attr} must be callable')


def evaluator_name(method: Any, config: Any) -> str:
    """`config.eval.metrics` when set, else the method's default evaluator."""
    eval_config = config.get('eval', None)
    chosen = eval_config.get('metrics', '') if eval_config is not None else ''
    return str(chosen or method.DEFAULT_EVALUATOR)


def validate_data(method: Any, config: Any) -> None:
    """Runs the method's optional `validate_data(config)` (every split the run reads)."""
    check = getattr(method, 'validate_data', None)
    if check is not None:
        check(config)
