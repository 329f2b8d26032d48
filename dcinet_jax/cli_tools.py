"""The `dcinet` tool commands around training: bench (and the GPU suite), profile, sweep,
report, index and search. Thin: flags in, library calls out (usage: `cli.py`'s docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from dcinet_jax import cli_config
from dcinet_jax.cli_flags import command, config_flag, flag_values, load_config, workdir_flag


@command('bench', "time the method's full train step on synthetic device batches")
def bench(argv):
    def define(fv):
        config_flag(fv, required=False)
        flags.DEFINE_enum('suite', None, ['gpu'], 'run a whole suite instead of one config: '
                          "'gpu' writes benchmarks/gpu_suite.json and the RESULTS.md rows",
                          flag_values=fv)
        flags.DEFINE_bool('tiny', False, 'with --suite: the small CPU variant (test configs)',
                          flag_values=fv)
        flags.DEFINE_string('out_dir', 'benchmarks', 'with --suite: where gpu_suite.json, '
                            'gpu_suite.md go (RESULTS.md there gets the rows)', flag_values=fv)
        flags.DEFINE_integer('batch_per_modality', None, 'override data.batch_per_modality',
                             flag_values=fv)
        flags.DEFINE_integer('steps', 20, 'timed steps after warm-up', flag_values=fv)
        flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'], 'compute dtype',
                          flag_values=fv)
        flags.DEFINE_enum('peer', None, ['torch'], 'also run a peer implementation',
                          flag_values=fv)
        flags.DEFINE_bool('find_max_batch', False, 'search the largest batch that fits',
                          flag_values=fv)
        flags.DEFINE_string('json_out', None, 'also write the figures here as JSON',
                            flag_values=fv)
        flags.DEFINE_bool('cache_check', None, 'time a cold compile and a warm-cache '
                          'restart in fresh processes (default: when the config sets '
                          'compilation_cache_dir)', flag_values=fv)
        flags.DEFINE_bool('torch_compile', False, 'torch.compile the PyTorch peer',
                          flag_values=fv)
        flags.DEFINE_enum('conv1x1', None, ['conv', 'einsum', 'both'],
                          "ResNet 1x1 convolutions: one path (= --config.model.conv1x1), or "
                          "'both' side by side in alternated windows with their ratio",
                          flag_values=fv)
        flags.DEFINE_integer('rounds', 2, 'with --conv1x1 both: timed windows per path',
                             flag_values=fv)
    fv = flag_values(argv, define, 'dcinet bench')
    if fv.suite == 'gpu':
        from dcinet_jax.perf import gpu_suite
        gpu_suite.run_suite(tiny=fv.tiny, out_dir=fv.out_dir,
                            results_md=Path(fv.out_dir) / 'RESULTS.md')
        return
    if fv.conv1x1 == 'both':
        from dcinet_jax.perf import conv1x1 as pair_lib
        result = pair_lib.bench_conv1x1_pair(
            load_config(fv), steps=fv.steps, rounds=fv.rounds,
            batch_per_modality=fv.batch_per_modality, dtype=fv.dtype, peer=fv.peer,
            torch_compile=fv.torch_compile)
        print(pair_lib.format_pair(result))
        if fv.json_out:
            from dcinet_jax.perf import bench as bench_lib
            print(f'figures written to {bench_lib.write_json(fv.json_out, result)}')
        return
    from dcinet_jax.perf import bench as bench_lib
    config = load_config(fv)
    if fv.conv1x1:
        config.model.conv1x1 = fv.conv1x1
    bench_lib.bench_main(config, batch_per_modality=fv.batch_per_modality,
                         steps=fv.steps, dtype=fv.dtype, peer=fv.peer,
                         find_max_batch=fv.find_max_batch, json_out=fv.json_out,
                         cache_check=fv.cache_check, torch_compile=fv.torch_compile)


@command('profile', 'trace train steps, dump optimized HLO and memory analysis')
def profile(argv):
    def define(fv):
        config_flag(fv)
        workdir_flag(fv)
        flags.DEFINE_string('steps', '3:6', 'step range a:b to trace (after compile)',
                            flag_values=fv)
    fv = flag_values(argv, define, 'dcinet profile')
    from dcinet_jax.perf import profiling
    profiling.profile_main(load_config(fv), fv.workdir, steps=fv.steps)


@command('sweep', 'run config variants x seeds, each in its own workdir; mean ± std table')
def sweep(argv):
    # --config.field=value overrides go to every run as they are (checked when planned).
    overrides = [a for a in argv if a.startswith('--config.')]

    def define(fv):
        flags.DEFINE_string('config', None, 'config FILE or FILE:ARG (required to plan)',
                            flag_values=fv)
        flags.DEFINE_string('variants', None, 'comma-separated ARGs replacing the config\'s '
                            'ARG, e.g. baseline@demo,cmsi@demo', flag_values=fv)
        flags.DEFINE_string('seeds', '0', 'comma-separated seeds (--config.seed per run)',
                            flag_values=fv)
        flags.DEFINE_string('root', None, 'sweep directory: sweep.json, <variant>/seed<k>/, '
                            'sweep_results.{json,md}', flag_values=fv, required=True)
        flags.DEFINE_enum('launcher', 'sequential', ['sequential', 'local_gpus', 'slurm'],
                          'one run at a time; one run per local GPU; a SLURM job array',
                          flag_values=fv)
        flags.DEFINE_bool('report_only', False, 'only re-aggregate the finished runs',
                          flag_values=fv)
        flags.DEFINE_alias('report-only', 'report_only', flag_values=fv)
        flags.DEFINE_integer('task', None, 'run entry I of ROOT/sweep.json (a SLURM array '
                             'task: SLURM_ARRAY_TASK_ID)', flag_values=fv)
    fv = flag_values([a for a in argv if not a.startswith('--config.')], define,
                      'dcinet sweep')
    from dcinet_jax import sweep as sweep_lib
    sys.exit(sweep_lib.sweep_main(root=fv.root, config=fv.config, variants=fv.variants,
                                  seeds=fv.seeds, overrides=overrides, launcher=fv.launcher,
                                  report_only=fv.report_only, task=fv.task))


@command('report', 'static HTML retrieval report of a checkpoint (tables, curves, examples)')
def report(argv):
    def define(fv):
        config_flag(fv)
        workdir_flag(fv)
        flags.DEFINE_string('out', None, 'report folder (default: WORKDIR/report)',
                            flag_values=fv)
        flags.DEFINE_integer('step', None, 'checkpoint step (default: latest)', flag_values=fv)
        flags.DEFINE_integer('top_k', 5, 'retrieved items shown and counted per query',
                             flag_values=fv)
        flags.DEFINE_integer('queries', 3, 'example queries per task (best, median, worst)',
                             flag_values=fv)
    fv = flag_values(argv, define, 'dcinet report')
    from dcinet_jax.html_report import build_report
    print(build_report(load_config(fv), fv.workdir, out=fv.out, step=fv.step, top_k=fv.top_k,
                       num_queries=fv.queries))


@command('index', "save a checkpoint's gallery of a prepared split or a folder of raw files")
def index(argv):
    def define(fv):
        config_flag(fv)
        workdir_flag(fv)
        flags.DEFINE_string('split', None, 'prepared split to index (default: test)',
                            flag_values=fv)
        flags.DEFINE_string('folder', None, 'index every image/audio/text file under this '
                            'folder instead (layout rules: docs/search.md)', flag_values=fv)
        flags.DEFINE_integer('step', None, 'checkpoint step (default: latest)', flag_values=fv)
        flags.DEFINE_string('name', None, 'index name under WORKDIR/index/ (default: the '
                            'split, or folder-<folder name>)', flag_values=fv)
    fv = flag_values(argv, define, 'dcinet index')
    from dcinet_jax.search import index as search_index
    search_index.index_main(load_config(fv), fv.workdir, split=fv.split, folder=fv.folder,
                            step=fv.step, name=fv.name)


@command('search', 'rank indexed items against raw query files (image, audio, text)')
def search(argv):
    def define(fv):
        config_flag(fv)
        workdir_flag(fv)
        flags.DEFINE_multi_string('query', [], 'query file (repeatable)', flag_values=fv)
        flags.DEFINE_integer('top_k', 10, 'results per query', flag_values=fv)
        flags.DEFINE_string('modality', 'all', 'gallery modality to search, or all',
                            flag_values=fv)
        flags.DEFINE_string('index', 'test', 'index name (the default test index is built '
                            'on first use)', flag_values=fv)
        flags.DEFINE_integer('step', None, 'checkpoint step (default: latest)', flag_values=fv)
        flags.DEFINE_enum('query_modality', None, ['image', 'audio', 'text', 'video'],
                          'treat the queries as this modality (default: by extension)',
                          flag_values=fv)
        flags.DEFINE_bool('json', False, 'print the results as JSON', flag_values=fv)
    fv = flag_values(argv, define, 'dcinet search')
    from dcinet_jax.search import query as search_lib
    search_lib.search_main(load_config(fv), fv.workdir, fv.query, top_k=fv.top_k,
                           modality=fv.modality, index=fv.index, step=fv.step,
                           query_modality=fv.query_modality, as_json=fv.json,
                           config_args=cli_config.config_args(argv))
