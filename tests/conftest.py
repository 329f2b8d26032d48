"""Shared fixtures. Environment first: JAX sees 4 CPU devices so sharded paths run here."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def test_config():
    """configs/test.py: tiny model, 64 px, 4 classes."""
    from configs import test
    return test.get_config()


@pytest.fixture(scope='session')
def demo_raw_dir(tmp_path_factory):
    """A small generated dataset in the FG-XMedia on-disk layout (read-only for tests)."""
    from input_pipeline.demo import fgxmedia as demo
    out = tmp_path_factory.mktemp('demo_raw')
    demo.generate_demo_dataset(out, num_classes=4, per_class=6, seed=0)
    return out


@pytest.fixture(scope='session')
def demo_prepared_dir(demo_raw_dir, tmp_path_factory, test_config):
    """`dcinet prepare` output of demo_raw_dir for configs/test.py (read-only for tests)."""
    from input_pipeline.fgxmedia import prepare
    out = tmp_path_factory.mktemp('demo_prepared')
    prepare.prepare(demo_raw_dir, out, test_config.data, progress=False)
    return out
