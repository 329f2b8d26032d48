"""One process of tests/test_sharded_eval.py: a method's eval outputs saved as npz.

    python tests/sharded_eval_worker.py OUT_DIR METHOD=DATA_DIR [METHOD=DATA_DIR ...]

Builds the method's test config on DATA_DIR with small eval blocks (several batches or
tiles, a padded last one), initialises its variables from key 0 and writes
OUT_DIR/<method>.<process index>.npz: every array of `eval_outputs`, keyed by its path.
Starts `jax.distributed` when the environment asks for it (JAX_COORDINATOR_ADDRESS).
"""

import sys
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dcinet_jax import methods, parallel  # noqa: E402


def config_for(name: str, data_dir: str):
    if name == 'dcinet':
        from configs import test as cfg
    else:
        cfg = __import__(f'configs.{name}_test', fromlist=['get_config'])
    c = cfg.get_config()
    c.data_dir = data_dir
    if name in ('dcinet', 'fgcrossnet'):
        c.data.eval_batch_size = 4         # 6 batches of 24 items, video frames split
    elif name == 'dsffn':
        c.eval.batch_size = 8
    else:
        c.eval.image_block, c.eval.caption_block = 16, 96   # 7 x 6 tiles, last ones padded
        c.eval.dev_split = ''
    return c


def main(out_dir: str, *specs: str) -> None:
    parallel.maybe_initialize_distributed()
    for spec in specs:
        name, data_dir = spec.split('=', 1)
        config = config_for(name, data_dir)
        method = methods.get(name)
        model = method.build_model(config)
        variables = jax.tree.map(np.asarray,
                                 method.init_variables(model, jax.random.key(0), config))
        outputs = method.eval_outputs(model, variables, config)
        flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf
                in jax.tree_util.tree_flatten_with_path(outputs)[0]
                if isinstance(leaf, np.ndarray) or isinstance(leaf, jax.Array)}
        np.savez(Path(out_dir) / f'{name}.{jax.process_index()}.npz', **flat)
    print('worker done', jax.process_index(), jax.local_device_count())


if __name__ == '__main__':
    main(*sys.argv[1:])
