"""The method seam holds: a second, unrelated method trains, checkpoints, resumes and is
evaluated by the generic loop, `dcinet eval` and bench harness, registered from here
without any edit of the trainer.

The method is an MLP classifier with dropout and no BatchNorm (so no variable
collections beside params) on random class-dependent vectors, with its own loss (CE)
and optimizer (Adam), scored by a registered accuracy evaluator.
"""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import linen as nn

from dcinet_jax import checkpoints, evaluate_checkpoint, evaluators, losses, methods, parallel
from dcinet_jax import state as state_lib
from dcinet_jax import train

DIM, CLASSES, TRAIN_ITEMS, TEST_ITEMS = 8, 3, 48, 30


class MLP(nn.Module):
    hidden: int = 16

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(CLASSES)(x)


def _vectors(split: str, n: int):
    rng = np.random.default_rng(0 if split == 'train' else 1)
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    centres = np.random.default_rng(2).normal(size=(CLASSES, DIM)) * 3.0
    return (centres[labels] + rng.normal(size=(n, DIM))).astype(np.float32), labels


def _loss_fn(params, variables, batch, rng, *, model, config, step, axis_name=None):
    assert variables == {}  # no collections
    logits = model.apply({'params': params}, batch['inputs'], train=True,
                         rngs={'dropout': rng})
    loss = losses.cross_entropy(logits, batch['label'])
    return loss, ({}, {'loss': loss, 'step_seen': step.astype(jnp.float32)})


def _batch_rule(config, num_devices):
    parallel.check_divisible(config.batch, num_devices, 'batch')


def _train_batches(config, *, start_step):
    x, y = _vectors('train', TRAIN_ITEMS)
    step = start_step
    while True:  # a pure function of (seed, step): resuming sees the same data
        idx = np.random.default_rng([config.seed, step]).choice(TRAIN_ITEMS, config.batch)
        yield {'inputs': x[idx], 'label': y[idx]}
        step += 1


def _eval_outputs(model, variables, config):
    x, y = _vectors('test', TEST_ITEMS)
    return np.asarray(model.apply(variables, x, train=False)), y


MLP_METHOD = types.SimpleNamespace(
    build_model=lambda config, *, axis_name=None: MLP(),
    init_variables=lambda model, rng, config: dict(
        model.init(rng, jnp.zeros((1, DIM)), train=False)),
    loss_fn=_loss_fn,
    optimizer=lambda config, total_steps: optax.adam(config.optim.learning_rate),
    batch_rule=_batch_rule,
    examples_per_step=lambda config: config.batch,
    steps_per_epoch=lambda config, process_count: TRAIN_ITEMS // config.batch,
    train_batches=_train_batches,
    synthetic_batch=lambda rng, config: {
        'inputs': jax.random.normal(rng, (config.batch, DIM)),
        'label': jax.random.randint(rng, (config.batch,), 0, CLASSES)},
    eval_outputs=_eval_outputs,
    DEFAULT_EVALUATOR='accuracy',
)


def _accuracy(outputs, *, config):
    logits, labels = outputs
    return {'accuracy': float(np.mean(np.argmax(logits, -1) == labels)),
            'protocol': {'items': int(len(labels))}}


ACCURACY = types.SimpleNamespace(
    evaluate=_accuracy,
    format_table=lambda results, *, name='This run', with_paper=False:
        f'| {name} | accuracy {results["accuracy"]:.3f} |')


@pytest.fixture(scope='module', autouse=True)
def _registered():
    methods.register('test_mlp', MLP_METHOD)
    evaluators.register('accuracy', ACCURACY)


def _config(num_train_steps: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = 'test_mlp'
    c.seed = 3
    c.batch = 8
    c.data = ml_collections.ConfigDict({'prefetch': 1})
    c.optim = ml_collections.ConfigDict({'learning_rate': 0.05, 'schedule': 'constant',
                                         'warmup_steps': 0})
    c.eval = ml_collections.ConfigDict({'metrics': '', 'best_metric': 'accuracy'})
    c.profile = ml_collections.ConfigDict({'start_step': -1, 'num_steps': 1})
    c.num_epochs, c.num_train_steps = 1, num_train_steps
    c.log_every_steps = c.checkpoint_every_steps = 2
    c.eval_every_steps, c.keep_checkpoints = 0, 5
    c.nan_check, c.distributed, c.compilation_cache_dir = True, False, ''
    return c


def test_unknown_method_and_incomplete_method_are_clear_errors():
    with pytest.raises(ValueError, match="config.method='nope': no such method"):
        methods.get('nope')
    incomplete = types.SimpleNamespace(**{k: v for k, v in vars(MLP_METHOD).items()
                                          if k != 'loss_fn'})
    with pytest.raises(ValueError, match=r"does not provide \['loss_fn'\]"):
        methods.register('broken', incomplete)
    assert methods.get('dcinet').DEFAULT_EVALUATOR == 'fgxmedia'


def test_second_method_trains_resumes_and_evaluates_through_the_generic_loop(tmp_path):
    whole = train.train_and_evaluate(_config(10), tmp_path / 'whole', progress=False)
    assert whole['step'] == 10
    assert whole['last_metrics']['step_seen'] == 9.0  # the loss sees the state's step
    assert whole['results']['accuracy'] > 1 / CLASSES + 0.2  # it learned

    # Killed after 6 steps, resumed to 10: the same parameters as the uninterrupted run.
    part = train.train_and_evaluate(_config(6), tmp_path / 'split', progress=False)
    assert part['step'] == 6
    resumed = train.train_and_evaluate(_config(10), tmp_path / 'split', progress=False)
    assert resumed['steps_this_run'] == 4
    assert resumed['params_checksum'] == whole['params_checksum']

    ckpt = checkpoints.Checkpointer(tmp_path / 'split' / 'checkpoints', read_only=True,
                                    best_metric='accuracy')
    assert {6, 10} <= set(ckpt.all_steps())
    assert ckpt.best_step() in (6, 10)
    ckpt.close()

    # `dcinet eval` path: restores params only (the method has no collections).
    results = evaluate_checkpoint.run(_config(10), tmp_path / 'split', step=10)
    assert results['accuracy'] == pytest.approx(resumed['results']['accuracy'])
    assert (tmp_path / 'split' / 'eval' / '10' / 'results.json').exists()


def test_second_method_runs_in_the_bench_harness_shapes():
    trainer = state_lib.build_trainer(_config(4), 4)
    abstract = trainer.abstract_state()
    assert abstract.collections == {}
    assert abstract.params['Dense_0']['kernel'].shape == (DIM, 16)
