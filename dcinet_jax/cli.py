"""`dcinet` command line: thin subcommands that parse flags and call into the library.

    dcinet demo-data --out DIR [--format fgxmedia|vegas|ave|precomp --classes N --per_class K
                     --seed S --feature_dim D --difficulty easy|hard --force | --scale full|F]
    dcinet data check --config FILE [--config.data_dir=DIR --deep --json]
    dcinet prepare   --manual_dir SRC --data_dir DST [--config FILE] [--on_error fail|skip]
    dcinet summary   --config FILE
    dcinet train     --config FILE --workdir DIR [--restore_step N --config.field=value ...]
    dcinet eval      --config FILE (--workdir DIR [--step N] | --weights FILE [--workdir DIR])
    dcinet export    --config FILE --workdir DIR --out FILE [--step N --format safetensors --force]
    dcinet bench     --config FILE [--batch_per_modality N --steps K --dtype bfloat16|float32
                     --peer torch --conv1x1 conv|einsum|both --rounds R]
    dcinet bench     --suite gpu [--tiny --out_dir benchmarks]   (every GPU figure, one command)
    dcinet profile   --config FILE --workdir DIR [--steps a:b]
    dcinet report    --config FILE --workdir DIR [--out DIR --step N --top_k 5 --queries 3]
    dcinet index     --config FILE --workdir DIR [--split test | --folder DIR] [--step N --name X]
    dcinet search    --config FILE --workdir DIR --query FILE [--query FILE ...] [--top_k 10
                     --modality all|image|audio|text|video --index X --step N --json]
    dcinet sweep     --config FILE[:ARG] --root DIR [--variants a,b --seeds 0,1,2
                     --launcher sequential|local_gpus|slurm --config.field=value ...]
                     | --root DIR --report-only | --root DIR --task I

Every `--config` is an ml_collections `get_config()` file; any field can be overridden
as `--config.data.batch_per_modality=16`. Each subcommand has its own absl flag set.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path

from absl import flags

from dcinet_jax import cli_config
from dcinet_jax.cli_flags import (COMMANDS, command, config_flag, flag_values, load_config,
                                  workdir_flag)
from input_pipeline import atomic


@command('demo-data', 'write a built-in demo dataset (FG-XMedia layout, VEGAS/AVE features, '
         'or a precomp image-text folder)')
def demo_data(argv):
    def define(fv):
        flags.DEFINE_string('out', None, 'output directory', flag_values=fv, required=True)
        flags.DEFINE_enum('format', 'fgxmedia', ['fgxmedia', 'vegas', 'ave', 'precomp'],
                          'fgxmedia: the FG-XMedia folder layout; vegas / ave: a synthetic '
                          'audio-visual feature file (vegas_feature_norm.h5 / '
                          'ave_feature_norm.h5); precomp: a SCAN-format image-text folder '
                          '(HSLM)', flag_values=fv)
        flags.DEFINE_integer('classes', None, 'number of classes (default: 10 for '
                             'fgxmedia and vegas, 15 for ave)', flag_values=fv)
        flags.DEFINE_integer('per_class', None, 'items per class, modality and split '
                             '(default 12); vegas/ave: train pairs per class (default 80, '
                             'test a quarter of it); precomp: train images per attribute '
                             'value (default 50; --classes = values per attribute group, '
                             'default 8)', flag_values=fv)
        flags.DEFINE_alias('per-class', 'per_class', flag_values=fv)
        flags.DEFINE_integer('feature_dim', None, 'precomp: region feature width (default '
                             '64; the real releases have 2048)', flag_values=fv)
        flags.DEFINE_integer('seed', 0, 'random seed (the output is deterministic)',
                             flag_values=fv)
        flags.DEFINE_enum('difficulty', 'easy', ['easy', 'hard'],
                          'fgxmedia: easy (separable classes, the two-command demo) or hard '
                          '(confusable sister classes for ablations; default 30 items per '
                          'class, no video; docs/ablation_demo.md)', flag_values=fv)
        flags.DEFINE_bool('force', False, 'write into a folder that is not empty, '
                          'replacing files of the same names', flag_values=fv)
        flags.DEFINE_string('scale', None, 'full, or a fraction like 0.01: the published '
                            'release\'s counts and file sizes (for measuring; README "Data at '
                            'full size")', flag_values=fv)
        flags.DEFINE_enum('release', 'f30k', ['f30k', 'coco'], 'precomp with --scale: '
                          'whose counts', flag_values=fv)
    fv = flag_values(argv, define, 'dcinet demo-data')
    if fv.scale is not None:
        from input_pipeline.demo import scaled
        scaled.scaled_main(fv.out, fv.format, fv.scale, fv.seed, fv.release)
        return
    if fv.difficulty != 'easy' and fv.format != 'fgxmedia':
        sys.exit(f'dcinet demo-data: --difficulty={fv.difficulty} exists for --format=fgxmedia '
                 f'only, not {fv.format}')
    from input_pipeline import demo as demo_pkg
    demo_pkg.check_target(fv.out, fv.force)
    if fv.format == 'fgxmedia' and fv.difficulty == 'hard':
        from input_pipeline.demo import fgxmedia_hard as demo_hard
        demo_hard.hard_demo_main(fv.out, fv.classes or 10, fv.per_class or 30, fv.seed)
    elif fv.format == 'fgxmedia':
        from input_pipeline.demo import fgxmedia as demo
        demo.demo_main(fv.out, fv.classes or 10, fv.per_class or 12, fv.seed)
    elif fv.format == 'precomp':
        from input_pipeline.demo import precomp as precomp_demo
        precomp_demo.precomp_demo_main(fv.out, fv.classes, fv.per_class, fv.seed,
                                       fv.feature_dim)
    else:
        from input_pipeline.demo import vegas_ave as av_demo
        av_demo.av_demo_main(fv.out, fv.format, fv.classes, fv.per_class, fv.seed)


@command('data', 'data check: a data folder against the published release (exit 0 matches, '
         '1 differs, 2 unreadable)')
def data(argv):
    if not argv or argv[0] != 'check':
        sys.exit('usage: dcinet data check --config FILE [--config.data_dir=DIR] [--deep] [--json]')
    from input_pipeline import check
    argv = argv[1:]

    def define(fv):
        config_flag(fv)
        flags.DEFINE_bool('deep', False, 'decode every file (in parallel)', flag_values=fv)
        flags.DEFINE_bool('json', False, 'print the report as JSON', flag_values=fv)
    fv = flag_values(argv, define, 'dcinet data check')
    sys.exit(check.check_main(load_config(fv), deep=fv.deep, as_json=fv.json))


@command('prepare', 'turn an FG-XMedia directory into prepared TFDS shards')
def prepare(argv):
    def define(fv):
        flags.DEFINE_string('manual_dir', None, 'FG-XMedia root (list/, image/, ...)',
                            flag_values=fv, required=True)
        flags.DEFINE_string('data_dir', None, 'where prepared data goes (config data_dir)',
                            flag_values=fv, required=True)
        flags.DEFINE_enum('on_error', None, ['fail', 'skip'],
                          'bad items: stop (fail) or skip them and write a report '
                          '(default: the config\'s data.on_error)', flag_values=fv)
        flags.DEFINE_bool('force', False, 'rebuild the prepared variant even when its '
                          'record matches the sources', flag_values=fv)
        config_flag(fv, required=False, default=_default_config_path())
    fv = flag_values(argv, define, 'dcinet prepare')
    from input_pipeline.fgxmedia import prepare as prepare_lib
    from input_pipeline.errors import DataError
    config = load_config(fv)
    on_error = fv.on_error or config.data.on_error
    try:
        prepare_lib.prepare_main(fv.manual_dir, fv.data_dir, config, on_error, force=fv.force)
    except DataError as e:
        if os.environ.get('DCINET_TRACEBACK'):
            raise
        # One message: the fault, then what to do (never the mode already chosen).
        sys.exit(f'dcinet prepare: error: {e}\n{prepare_lib.error_hint(on_error)}\n'
                 '(set DCINET_TRACEBACK=1 for the traceback)')


@command('summary', 'print the parameter table of a config without allocating it')
def summary(argv):
    fv = flag_values(argv, config_flag, 'dcinet summary')
    from dcinet_jax.summary import summarize
    table, total = summarize(load_config(fv))
    print(table)
    print(f'total parameters: {total:,}')


@command('train', 'train (resumes automatically from the workdir), then evaluate')
def train(argv):
    def define(fv):
        config_flag(fv)
        workdir_flag(fv)
        flags.DEFINE_bool('progress', True, 'show a progress bar', flag_values=fv)
        flags.DEFINE_integer('restore_step', None, 'restart from this kept checkpoint step '
                             '(0: from scratch) instead of the newest; later steps are moved '
                             'to WORKDIR/checkpoints.superseded/', flag_values=fv)
    fv = flag_values(argv, define, 'dcinet train')
    from dcinet_jax import exit_codes, train as train_lib
    try:
        summary_ = train_lib.train_and_evaluate(load_config(fv), fv.workdir, progress=fv.progress,
                                                restore_step=fv.restore_step)
    except train_lib.NonFiniteLossError as e:
        print(f'dcinet train: error: {e}', file=sys.stderr)
        sys.exit(exit_codes.NON_FINITE)
    if summary_['results']:
        from dcinet_jax import evaluate
        print(evaluate.format_table(load_config(fv), summary_['results']))
    print(json.dumps({k: v for k, v in summary_.items() if k != 'results'}))
    if summary_['stopped_by_signal']:
        sys.exit(exit_codes.INTERRUPTED)  # unfinished: schedulers requeue, scripts stop


@command('eval', 'evaluate a checkpoint (or a weights file) with the benchmark protocol')
def eval_(argv):
    def define(fv):
        config_flag(fv)
        flags.DEFINE_string('workdir', None, 'run directory: its checkpoint is evaluated (with '
                            '--weights it only receives the results)', flag_values=fv)
        flags.DEFINE_integer('step', None, 'checkpoint step (default: latest)', flag_values=fv)
        flags.DEFINE_bool('best', False, 'evaluate the best checkpoint by config.eval.best_metric',
                          flag_values=fv)
        flags.DEFINE_string('weights', None, "evaluate this whole-model file in the method's "
                            'public PyTorch layout instead (docs/weights.md)', flag_values=fv)
    fv = flag_values(argv, define, 'dcinet eval')
    from dcinet_jax import evaluate
    from dcinet_jax.weights import commands
    results = commands.run_eval(load_config(fv), fv.workdir, step=fv.step, best=fv.best,
                                 weights_path=fv.weights)
    print(evaluate.format_table(load_config(fv), results))
    if fv.workdir:
        print(f'results written to {evaluate.results_path(fv.workdir, results)}')


@command('export', "write a checkpoint's weights in the method's public PyTorch layout")
def export(argv):
    def define(fv):
        config_flag(fv)
        workdir_flag(fv)
        flags.DEFINE_integer('step', None, 'checkpoint step (default: latest)', flag_values=fv)
        flags.DEFINE_enum('format', 'pytorch', ['pytorch', 'safetensors'], 'file format',
                          flag_values=fv)
        flags.DEFINE_string('out', None, 'output file', flag_values=fv, required=True)
        flags.DEFINE_bool('force', False, 'overwrite an existing --out', flag_values=fv)
    fv = flag_values(argv, define, 'dcinet export')
    from dcinet_jax.weights import commands
    path, step = commands.export(load_config(fv), fv.workdir, fv.out, fmt=fv.format, step=fv.step,
                                 force=fv.force)
    print(f'step {step} of {fv.workdir} written to {path} ({fv.format})')


# The tool commands register after the data and run commands, so `dcinet --help` lists
# them in workflow order.
from dcinet_jax import cli_tools  # noqa: E402,F401


def _default_config_path() -> str | None:
    import configs
    path = Path(configs.__file__).parent / 'dcinet_fgxmedia.py'
    return str(path) if path.exists() else None


def _usage() -> str:
    lines = ['usage: dcinet COMMAND [flags]   (dcinet COMMAND --help for its flags)', '']
    lines += [f'  {name:<10} {help_text}' for name, (help_text, _) in COMMANDS.items()]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    for noisy in ('absl', 'orbax', 'jax._src', 'tensorflow'):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(_usage())
        return
    if argv[0] not in COMMANDS:
        sys.exit(f'dcinet: unknown command {argv[0]!r}\n\n{_usage()}')
    try:
        COMMANDS[argv[0]][1](argv[1:])
    except (AttributeError, KeyError) as e:
        # A field the method reads that the config lacks (another method's config).
        line = cli_config.missing_field(e)
        if line is None or os.environ.get('DCINET_TRACEBACK'):
            raise
        sys.exit(f'dcinet {argv[0]}: error: {line}\n(set DCINET_TRACEBACK=1 for the traceback)')
    except atomic.NotWrittenError as e:
        # The work is done: print what it computed, then where it could not be written.
        print(e.text)
        if os.environ.get('DCINET_TRACEBACK'):
            raise
        sys.exit(f'dcinet {argv[0]}: error: {e}')
    except (FileNotFoundError, ValueError, OSError) as e:
        # Bad input (missing data or checkpoint, bad config field, corrupt item) or a full
        # disk: one clear line naming what is wrong; the traceback on request.
        one_line = not isinstance(e, OSError) or isinstance(e, FileNotFoundError) \
            or e.errno == errno.ENOSPC
        if os.environ.get('DCINET_TRACEBACK') or not one_line:
            raise
        sys.exit(f'dcinet {argv[0]}: error: {e}\n(set DCINET_TRACEBACK=1 for the traceback)')


if __name__ == '__main__':
    main()
