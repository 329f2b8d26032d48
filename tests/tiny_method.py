"""A second, unrelated method for the seam and fault-injection tests: an MLP classifier
with dropout and no BatchNorm on random class-dependent vectors, with its own loss (CE),
optimizer (Adam) and evaluator (accuracy).

Importable by name (`config.method='tiny_method'` with tests/ on the path), so a
`dcinet train` subprocess finds it. Config fields of its own:
- `poison_step`: from this step on, gradients are NaN while the loss stays finite
  (a state that turns non-finite one update before its loss does);
- `batch_delay`: seconds each training batch takes to arrive (a slow, live run).
"""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from dcinet_jax import evaluators, losses, parallel

DIM, CLASSES, TRAIN_ITEMS, TEST_ITEMS = 8, 3, 48, 30
DEFAULT_EVALUATOR = 'accuracy'


class MLP(nn.Module):
    hidden: int = 16

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(CLASSES)(x)


def vectors(split: str, n: int):
    rng = np.random.default_rng(0 if split == 'train' else 1)
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    centres = np.random.default_rng(2).normal(size=(CLASSES, DIM)) * 3.0
    return (centres[labels] + rng.normal(size=(n, DIM))).astype(np.float32), labels


@jax.custom_vjp
def _poison_gradient(x, poison):
    return x


def _poison_fwd(x, poison):
    return x, poison


def _poison_bwd(poison, g):
    return jnp.where(poison, jnp.nan, g), None


_poison_gradient.defvjp(_poison_fwd, _poison_bwd)


def build_model(config, *, axis_name=None):
    return MLP()


def init_variables(model, rng, config):
    return dict(model.init(rng, jnp.zeros((1, DIM)), train=False))


def loss_fn(params, variables, batch, rng, *, model, config, step, axis_name=None):
    assert variables == {}  # no collections
    poison = (config.poison_step >= 0) & (step >= config.poison_step)
    params = jax.tree.map(lambda p: _poison_gradient(p, poison), params)
    logits = model.apply({'params': params}, batch['inputs'], train=True,
                         rngs={'dropout': rng})
    loss = losses.cross_entropy(logits, batch['label'])
    return loss, ({}, {'loss': loss, 'step_seen': step.astype(jnp.float32)})


def optimizer(config, total_steps):
    return optax.adam(config.optim.learning_rate)


def batch_rule(config, num_devices):
    parallel.check_divisible(config.batch, num_devices, 'batch')


def examples_per_step(config):
    return config.batch


def steps_per_epoch(config, process_count):
    return TRAIN_ITEMS // config.batch


def train_batches(config, *, start_step):
    x, y = vectors('train', TRAIN_ITEMS)
    step = start_step
    while True:  # a pure function of (seed, step): resuming sees the same data
        if config.batch_delay:
            time.sleep(config.batch_delay)
        idx = np.random.default_rng([config.seed, step]).choice(TRAIN_ITEMS, config.batch)
        yield {'inputs': x[idx], 'label': y[idx]}
        step += 1


def synthetic_batch(rng, config):
    return {'inputs': jax.random.normal(rng, (config.batch, DIM)),
            'label': jax.random.randint(rng, (config.batch,), 0, CLASSES)}


def eval_outputs(model, variables, config):
    x, y = vectors('test', TEST_ITEMS)
    return np.asarray(model.apply(variables, x, train=False)), y


class Accuracy:
    """The evaluator: accuracy of the argmax of the logits."""

    @staticmethod
    def evaluate(outputs, *, config):
        logits, labels = outputs
        return {'accuracy': float(np.mean(np.argmax(logits, -1) == labels)),
                'protocol': {'items': int(len(labels))}}

    @staticmethod
    def format_table(results, *, name='This run', with_paper=False):
        return f'| {name} | accuracy {results["accuracy"]:.3f} |'


evaluators.register('accuracy', Accuracy)


def get_config(num_train_steps: int = 10) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = 'tiny_method'
    c.seed = 3
    c.batch = 8
    c.poison_step = -1
    c.batch_delay = 0.0
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
