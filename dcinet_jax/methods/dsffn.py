"""DSFFN behind the method contract: audio-visual retrieval from VEGAS / AVE features.

Everything method-specific is here (docs/dsffn.md): the model (`models/dsffn.py`), the
loss, the optimizer with its two parameter groups, the in-memory data path over the h5
file (`input_pipeline/vegas_ave/reader.py`) and the evaluation outputs consumed by the
'audiovisual' evaluator.

Loss (reference form, docs/dsffn.md#losses), over a batch of aligned pairs:

    L = CE(logits_v, y) + CE(logits_a, y) + alpha * mean_i ||O^v_i - O^a_i||
        + beta * (C(O^v) + C(O^a))

C is the normalised centre loss over one centre table shared by both modalities; the
centres are params of their own group, updated by plain SGD (`loss.center_lr`) on the
gradient of L, the network by Adam. Switches: `loss.dis_loss` ('ce' or the paper's
'label_regression'), `loss.centers` ('shared_normalized' or the paper's
'per_modality_raw'), `loss.use_dis`, `loss.use_intra`, `loss.use_mfa` (Tables III-IV).

Several devices: CE and the distance are per-device means of equal slices (their
average is the global mean); the centre loss is a sum divided by per-class counts, so
the counts are summed over the devices and each device's sum is scaled by the device
count, which makes the averaged gradient that of the global-batch loss.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dcinet_jax import losses, parallel, state
from dcinet_jax.models import dsffn as dsffn_model

DEFAULT_EVALUATOR = 'audiovisual'
PAIRINGS = ('aligned', 'shuffled', 'self')


def validate_config(config: Any) -> None:
    """Labels are checked against `data.num_classes` (0..num_classes-1): zero classes
    made every label 'out of range (expected >= 0)'."""
    if int(config.data.num_classes) < 1:
        raise ValueError(f'config.data.num_classes={config.data.num_classes}: must be >= 1 '
                         '(the number of classes in the feature file)')


def build_model(config: Any, *, axis_name: str | None = None) -> dsffn_model.DSFFN:
    dtype = str(config.model.get('dtype', 'float32'))
    if dtype != 'float32':
        raise ValueError(f'model.dtype={dtype!r}: DSFFN computes in float32 only (its '
                         'networks are small MLPs on precomputed features; bfloat16 would '
                         'save nothing measurable)')
    bn_axis = axis_name if config.model.get('bn_sync', True) else None
    return dsffn_model.build(config, visual_dim=int(config.data.visual_dim),
                             audio_dim=int(config.data.audio_dim), bn_axis_name=bn_axis)


def init_variables(model, rng, config) -> dict:
    v = jnp.zeros((2, int(config.data.visual_dim)), jnp.float32)
    a = jnp.zeros((2, int(config.data.audio_dim)), jnp.float32)
    return dict(model.init({'params': rng}, v, a, train=False))


def _center_loss(params, out, labels, config, axis_name):
    """beta-weighted centre term (already scaled for the device average) and its value."""
    lc = config.loss
    if lc.centers == 'per_modality_raw':
        c = (losses.center_loss(out['visual'], labels, params['centers_visual'])
             + losses.center_loss(out['audio'], labels, params['centers_audio']))
        return c, c
    m = params['centers'].shape[0]
    counts = jnp.zeros(m, jnp.float32).at[labels].add(1.0)
    n_dev = 1
    if axis_name is not None:
        counts = jax.lax.psum(counts, axis_name)
        n_dev = jax.lax.psum(1, axis_name)
    c = (losses.normalized_center_loss(out['visual'], labels, params['centers'],
                                       class_counts=counts)
         + losses.normalized_center_loss(out['audio'], labels, params['centers'],
                                         class_counts=counts)) * n_dev
    return c, c


def loss_fn(params, variables, batch, rng, *, model, config, step, axis_name=None):
    """(loss, (collections, metrics)) of one device's slice of aligned pairs."""
    del step
    lc = config.loss
    labels = batch['label'].astype(jnp.int32)
    out, mutated = model.apply({'params': params, **variables}, batch['visual'],
                               batch['audio'], train=True, mutable=['batch_stats'],
                               rngs={'dropout': rng})
    metrics: dict[str, jax.Array] = {}
    total = jnp.float32(0.0)
    if lc.use_dis:
        if lc.dis_loss == 'ce':
            dv = losses.cross_entropy(out['logits_visual'], labels)
            da = losses.cross_entropy(out['logits_audio'], labels)
        elif lc.dis_loss == 'label_regression':
            dv = losses.label_regression_loss(out['logits_visual'], labels)
            da = losses.label_regression_loss(out['logits_audio'], labels)
        else:
            raise ValueError(f"loss.dis_loss={lc.dis_loss!r}: expected 'ce' or "
                             "'label_regression'")
        metrics.update(dis_visual=dv, dis_audio=da)
        total = total + dv + da
    dist = losses.paired_distance(out['visual'], out['audio'])
    metrics['pair_distance'] = dist
    total = total + float(lc.pair_distance_weight) * dist
    if lc.use_intra:
        scaled, value = _center_loss(params, out, labels, config, axis_name)
        metrics['center'] = value
        total = total + float(lc.center_weight) * scaled
    metrics['accuracy_visual'] = jnp.mean(jnp.argmax(out['logits_visual'], -1) == labels)
    metrics['accuracy_audio'] = jnp.mean(jnp.argmax(out['logits_audio'], -1) == labels)
    metrics['loss'] = total
    batch_stats = mutated['batch_stats']
    if axis_name is not None and not config.model.get('bn_sync', True):
        batch_stats = jax.lax.pmean(batch_stats, axis_name)
    return total, ({'batch_stats': batch_stats}, metrics)


def param_group(path, _) -> str:
    """'centers' for the class-centre tables, 'net' for everything else."""
    top = str(getattr(path[0], 'key', path[0]))
    return 'centers' if top.startswith('centers') else 'net'


def optimizer(config: Any, total_steps: int) -> optax.GradientTransformation:
    """Adam (optim.learning_rate, b1, b2; no weight decay) for the network, plain SGD
    (loss.center_lr) for the centres."""
    o = config.optim
    net = optax.adam(state.learning_rate_schedule(config, total_steps), b1=float(o.b1),
                     b2=float(o.b2), eps=float(o.get('eps', 1e-8)))
    centers = optax.sgd(float(config.loss.center_lr))
    return optax.multi_transform(
        {'net': net, 'centers': centers},
        lambda params: jax.tree_util.tree_map_with_path(param_group, params))


def batch_rule(config: Any, num_devices: int) -> None:
    parallel.check_divisible(int(config.data.batch_per_modality), num_devices,
                             'data.batch_per_modality')


def examples_per_step(config: Any) -> int:
    """Pairs per global batch (each pair is one visual and one audio item)."""
    return int(config.data.batch_per_modality)


def load_data(config: Any):
    """The config's feature file, checked against the model's input widths."""
    from input_pipeline.vegas_ave import reader as av_features
    data = av_features.load(config.data_dir, config.data)
    want = (int(config.data.visual_dim), int(config.data.audio_dim))
    if (data.visual_dim, data.audio_dim) != want:
        raise ValueError(f'{data.path}: features are visual {data.visual_dim}-d and audio '
                         f'{data.audio_dim}-d, but the config says data.visual_dim='
                         f'{want[0]}, data.audio_dim={want[1]}')
    return data


def validate_data(config: Any) -> None:
    """Every split the run reads is present and usable (the reader has checked shapes,
    dtypes, labels and NaN): checked before the first step, not at the final evaluation."""
    data = load_data(config)
    if not len(data.train):
        raise ValueError(f'{data.path}: the train split is empty')
    if not len(data.test):
        raise ValueError(f'{data.path}: the test split is empty (lab_test has 0 rows); '
                         'there would be nothing to evaluate after training')
    e = config.eval
    if e.get('drop_last_batch', False) and len(data.test) < int(e.reference_batch):
        raise ValueError(f'{data.path}: eval.drop_last_batch: the test split has '
                         f'{len(data.test)} pairs, fewer than one batch of '
                         f'eval.reference_batch={int(e.reference_batch)}')
    unknown = [p for p in e.pairings if p not in PAIRINGS]
    if unknown:
        raise ValueError(f'eval.pairings: {unknown} not among {PAIRINGS}')


def data_description(config: Any) -> dict:
    """The data card of the feature file this config reads (results.json "data")."""
    from input_pipeline.vegas_ave import manifest, reader as av_features
    return manifest.describe(av_features.feature_file(
        str(config.data_dir), str(config.data.name),
        str(config.data.get('file', '') or '')))


def steps_per_epoch(config: Any, process_count: int) -> int:
    from input_pipeline.vegas_ave import reader as av_features
    return av_features.steps_per_epoch(len(load_data(config).train),
                                       int(config.data.batch_per_modality))


def train_batches(config: Any, *, start_step: int) -> Iterator[dict]:
    from input_pipeline.vegas_ave import reader as av_features
    return av_features.train_batches(
        load_data(config).train, global_batch=int(config.data.batch_per_modality),
        seed=int(config.seed), shuffle=bool(config.data.shuffle), start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())


def synthetic_batch(rng: jax.Array, config: Any) -> dict:
    """Random aligned pairs: non-negative features of the configured widths, labels in range."""
    b = int(config.data.batch_per_modality)
    kv, ka, ky = jax.random.split(rng, 3)
    return {'visual': jax.random.uniform(kv, (b, int(config.data.visual_dim)), jnp.float32, 0, 8),
            'audio': jax.random.uniform(ka, (b, int(config.data.audio_dim)), jnp.float32, 0, 8),
            'label': jax.random.randint(ky, (b,), 0, int(config.data.num_classes), jnp.int32)}


def partner_permutation(n: int, seed: int) -> np.ndarray:
    """A seeded derangement: item i's audio partner is item perm[i] != i (n >= 2)."""
    if n < 2:
        return np.arange(n)
    order = np.random.default_rng([seed, 0x5F]).permutation(n)
    perm = np.empty(n, np.int64)
    perm[order] = np.roll(order, -1)
    return perm


_FORWARD_CACHE: dict = {}


def _forward(model, pairing: str):
    """The jitted eval forward of `model` (one compile per model and pairing)."""
    key = (id(model), pairing)
    if key not in _FORWARD_CACHE or _FORWARD_CACHE[key][0] is not model:
        if len(_FORWARD_CACHE) > 8:
            _FORWARD_CACHE.clear()
        _FORWARD_CACHE[key] = (model, jax.jit(
            lambda var, v, a: model.apply(var, v, a, train=False, pairing=pairing)))
    return _FORWARD_CACHE[key][1]


def pair_features(model, variables, visual, audio, *, pairing, batch_size):
    """Eval features of every pair; with several processes each computes its share of
    the batches (the same batches as one process's) and the rows are gathered once."""
    from dcinet_jax.evaluators import sharding
    fn = _forward(model, pairing)
    n = visual.shape[0]
    ov, oa = [], []
    starts = range(0, n, batch_size)
    for start in (starts[i] for i in sharding.process_share(len(starts))):
        v, a = visual[start:start + batch_size], audio[start:start + batch_size]
        pad = batch_size - v.shape[0] if n > batch_size else 0
        if pad:   # one compiled shape; eval-mode rows are independent
            v = np.concatenate([v, np.repeat(v[-1:], pad, 0)])
            a = np.concatenate([a, np.repeat(a[-1:], pad, 0)])
        out = fn(variables, v, a)
        keep = v.shape[0] - pad
        ov.append(np.asarray(out['visual'])[:keep])
        oa.append(np.asarray(out['audio'])[:keep])
    rows = np.concatenate(ov), np.concatenate(oa)
    return sharding.gather_rows(rows) if sharding.shares_work(len(starts)) else rows


def split_outputs(model, variables, split, *, pairings, batch_size, seed) -> dict:
    """{pairing: {'visual': (features, labels), 'audio': (features, labels)}}."""
    out = {}
    for p in pairings:
        if p not in PAIRINGS:
            raise ValueError(f'eval.pairings: {p!r} is not one of {PAIRINGS}')
        if p == 'shuffled':
            perm = partner_permutation(len(split), seed)
            ov, oa = pair_features(model, variables, split.visual, split.audio[perm],
                               pairing='aligned', batch_size=batch_size)
            out[p] = {'visual': (ov, split.label), 'audio': (oa, split.label[perm])}
        else:
            ov, oa = pair_features(model, variables, split.visual, split.audio, pairing=p,
                               batch_size=batch_size)
            out[p] = {'visual': (ov, split.label), 'audio': (oa, split.label)}
    return out


def eval_outputs(model, variables, config) -> dict:
    """Features of the test split under every `eval.pairings` entry and, when model
    selection uses a validation split, of that split (aligned pairs), plus what the
    evaluator reports about the protocol."""
    data = load_data(config)
    e = config.eval
    test = data.test
    if e.get('drop_last_batch', False):   # the reference's train/test scripts
        b = int(e.reference_batch)
        if len(test) < b:
            raise ValueError(f'eval.drop_last_batch: the test split has {len(test)} pairs, '
                             f'fewer than one batch of eval.reference_batch={b}')
        test = test.take(np.arange(len(test) // b * b))
    pairings = tuple(e.pairings)
    if 'aligned' not in pairings:
        pairings = ('aligned',) + pairings
    bs = int(e.batch_size)
    outputs = {'test': split_outputs(model, variables, test, pairings=pairings,
                                     batch_size=bs, seed=int(config.seed))}
    if len(data.val):
        outputs['val'] = split_outputs(model, variables, data.val, pairings=('aligned',),
                                       batch_size=bs, seed=int(config.seed))
    outputs['info'] = {'dataset': str(config.data.name), 'file': data.path.split('/')[-1],
                       'select_on': str(config.data.select_on),
                       'num_classes': int(config.data.num_classes),
                       'train_pairs': len(data.train), 'val_pairs': len(data.val),
                       'test_pairs': len(test),
                       'switches': {k: config.loss[k] for k in
                                    ('dis_loss', 'centers', 'use_mfa', 'use_dis', 'use_intra')}}
    return outputs
