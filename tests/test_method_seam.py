"""The method seam holds: a second, unrelated method trains, checkpoints, resumes and is
evaluated by the generic loop, `dcinet eval` and bench harness, registered from here
without any edit of the trainer.

The method (tests/tiny_method.py) is an MLP classifier with dropout and no BatchNorm
(so no variable collections beside params) on random class-dependent vectors, with its
own loss (CE) and optimizer (Adam), scored by a registered accuracy evaluator.
"""

import types

import pytest

import tiny_method
from dcinet_jax import checkpoints, evaluate_checkpoint, methods
from dcinet_jax import state as state_lib
from dcinet_jax import train
from tiny_method import CLASSES, DIM

MLP_METHOD = types.SimpleNamespace(**{k: getattr(tiny_method, k) for k in methods.REQUIRED})


@pytest.fixture(scope='module', autouse=True)
def _registered():
    methods.register('test_mlp', MLP_METHOD)


def _config(num_train_steps: int):
    c = tiny_method.get_config(num_train_steps)
    c.method = 'test_mlp'
    return c


def test_unknown_method_and_incomplete_method_are_clear_errors():
    with pytest.raises(ValueError, match="config.method='nope': no such method"):
        methods.get('nope')
    assert methods.get('tiny_method') is tiny_method  # found by module name
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
