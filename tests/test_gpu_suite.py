"""`dcinet bench --suite gpu`: the budgets fit, the parts import without TensorFlow (the
GPU image has none), the rows land between the RESULTS.md markers, and `--tiny` runs the
whole suite end to end on CPU so it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dcinet_jax.perf import gpu_suite

REPO = Path(__file__).resolve().parents[1]
# What the GPU image has: jax, flax, optax, orbax, numpy, torch, timm and what they pull in
# (plus the standard library and ml_collections, carried).
GPU_IMAGE = {'jax', 'jaxlib', 'flax', 'optax', 'orbax', 'numpy', 'torch', 'timm', 'absl',
             'yaml', 'ml_collections', 'ml_dtypes', 'opt_einsum', 'scipy', 'msgpack',
             'tensorstore', 'rich', 'typing_extensions', 'etils', 'treescope', 'chex',
             'toolz', 'nest_asyncio', 'humanize', 'simplejson', 'aiofiles', 'psutil',
             'importlib_resources', 'zipp', 'fsspec', 'markdown_it', 'mdurl', 'pygments',
             'google', 'protobuf', 'attr', 'attrs', 'tqdm', 'packaging', 'jaxtyping',
             'sympy', 'mpmath', 'networkx', 'jinja2', 'markupsafe', 'filelock',
             'safetensors', 'huggingface_hub', 'requests', 'certifi', 'urllib3', 'idna',
             'charset_normalizer', 'PIL', 'dcinet_jax', 'configs', 'input_pipeline',
             'wadler_lindig', 'cloudpickle', 'sklearn', 'joblib', 'threadpoolctl',
             'flatbuffers', 'cython_runtime', 'uvloop'}   # jax's, Cython's, orbax's (optional)


def test_full_suite_fits_its_budget_and_every_config_loads():
    items = gpu_suite.FULL + gpu_suite.CONV1X1_PAIR
    assert gpu_suite.check_budgets(items) <= gpu_suite.TOTAL_BUDGET_S == 480
    for item in items:
        config = gpu_suite.load_config(item.config)
        for o in item.overrides:
            gpu_suite._set(config, o)
        assert item.dtype in ('float32', 'bfloat16')
    too_much = gpu_suite.FULL + (gpu_suite.Item('x', 'configs/test.py', budget_s=400),)
    with pytest.raises(ValueError, match='budgets add up'):
        gpu_suite.check_budgets(too_much)


def test_suite_imports_nothing_the_gpu_image_lacks():
    code = ('import sys\n'
            'import dcinet_jax.perf.gpu_suite as s, dcinet_jax.perf.bench\n'
            'from dcinet_jax.methods import dcinet, fgcrossnet, dsffn, hslm\n'
            'from dcinet_jax.evaluators import fgxmedia, blockwise, device_ranking\n'
            'for i in s.FULL: s.load_config(i.config)\n'
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=REPO, env={'JAX_PLATFORMS': 'cpu', 'PATH': '',
                                        'PYTHONPATH': str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(out.stdout.split())
    third_party = {m for m in loaded if m not in sys.stdlib_module_names
                   and not m.startswith('_')}
    assert not {'tensorflow', 'tensorflow_datasets', 'librosa'} & loaded
    assert third_party <= GPU_IMAGE, sorted(third_party - GPU_IMAGE)


def test_rows_replace_only_the_marked_block(tmp_path):
    md = tmp_path / 'RESULTS.md'
    md.write_text(f'# head\n{gpu_suite.RESULTS_BEGIN}\nold\n{gpu_suite.RESULTS_END}\ntail\n')
    assert gpu_suite.write_rows(md, '| new |')
    assert md.read_text() == (f'# head\n{gpu_suite.RESULTS_BEGIN}\n| new |\n'
                              f'{gpu_suite.RESULTS_END}\ntail\n')
    bare = tmp_path / 'other.md'
    bare.write_text('no markers\n')
    assert not gpu_suite.write_rows(bare, '| new |') and bare.read_text() == 'no markers\n'
    assert not gpu_suite.write_rows(tmp_path / 'missing.md', '| new |')


def test_a_failed_or_timed_out_item_is_a_row_not_a_crash():
    suite = {'device': 'cpu', 'versions': {'jax': '0'}, 'command': 'c', 'date': 'd',
             'items': {'a': {'status': 'over its 5 s budget'}}, 'eval': {'status': 'ok'}}
    rows = gpu_suite.format_rows(suite)
    assert '| a |' in rows and 'over its 5 s budget' in rows


@pytest.mark.slow
def test_tiny_suite_runs_on_cpu_and_writes_json_and_rows(tmp_path):
    (tmp_path / 'RESULTS.md').write_text(
        f'x\n{gpu_suite.RESULTS_BEGIN}\n{gpu_suite.RESULTS_END}\n')
    proc = subprocess.run([sys.executable, '-m', 'dcinet_jax', 'bench', '--suite', 'gpu',
                           '--tiny', '--out_dir', str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800,
                          env={'JAX_PLATFORMS': 'cpu', 'PATH': '', 'PYTHONPATH': str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite = json.loads((tmp_path / 'gpu_suite.json').read_text())
    assert [i.name for i in gpu_suite.TINY] == list(suite['items'])
    for name, r in suite['items'].items():
        assert r['status'] == 'ok', (name, r['status'])
        assert r['step_time_s'] > 0 and r['images_per_sec'] > 0 and r['flops_per_step'] > 0
    assert suite['items']['hslm_test_bf16']['dtype'] == 'bfloat16'
    ev = suite['eval']
    assert ev['status'] == 'ok', ev
    assert ev['hslm_bfloat16']['pairs_per_sec'] > 0 and ev['dsffn']['features_per_sec'] > 0
    assert 0 <= ev['fgxmedia_ranking']['bimodal_average'] <= 1
    text = (tmp_path / 'RESULTS.md').read_text()
    assert '| dcinet_test_bf16 | bfloat16 |' in text and 'HSLM bfloat16' in text
    assert suite['versions']['jax'] and suite['device'] != '?'
