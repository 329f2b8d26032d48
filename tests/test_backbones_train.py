"""Demo-sized VGG and ViT DCINets learn on the prepared demo data (the real training loop)."""

import numpy as np
import pytest

from configs import backbones as backbone_configs
from dcinet_jax import train
from dcinet_jax.evaluators import fgxmedia


def _chance_map(counts, seed=0):
    """mAP of random features with random labels of the same counts."""
    rng = np.random.default_rng(seed)
    feats = {m: (rng.random((n, 4)).astype(np.float32), rng.integers(0, 4, n)) for m, n in counts.items()}
    return fgxmedia.evaluate_features(feats)['bimodal_average']


def _config(variant, test_config, data_dir, steps):
    """The demo backbone of `variant` on configs/test.py's data (64 px, 4 classes)."""
    c = test_config.copy_and_resolve_references()
    demo_config = backbone_configs.get_config(f'{variant}@demo')
    demo = demo_config.model
    c.optim.learning_rate = demo_config.optim.learning_rate
    for k in ('backbone', 'cut', 'num_filters', 'head', 'head_hidden', 'vit_width', 'vit_depth',
              'vit_heads', 'vit_mlp_dim', 'vit_patch', 'vit_grid'):
        c.model[k] = demo[k]
    c.data_dir = str(data_dir)
    c.num_train_steps = steps
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 50
    c.eval_every_steps = 0
    return c


@pytest.mark.slow
@pytest.mark.parametrize('variant,steps', [('vgg16', 120), ('vit_b16', 100)])
def test_demo_backbone_training_beats_chance(variant, steps, test_config, demo_prepared_dir, tmp_path):
    """configs/backbones.py's demo networks and learning rates on 64 px, 4 classes."""
    c = _config(variant, test_config, demo_prepared_dir, steps)
    summary = train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    results = summary['results']
    assert summary['step'] == steps
    chance = _chance_map(results['protocol']['counts'])
    assert results['bimodal_average'] > chance + 0.1, (results['bimodal_average'], chance)
