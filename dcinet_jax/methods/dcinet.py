"""DCINet behind the method contract: shared CCRN, CMSI + CMCI, FG-XMedia mAP.

The loss (docs/model.md#loss): every modality's batch goes through sub-module 1 once;
the original branch is scored with hard-label CE per modality; with CMSI and/or CMCI on,
the interacted cut-point maps go through sub-module 2 again and are scored with
soft-target CE against the CMSI targets. BatchNorm statistics are synchronised over the
`data` axis when `model.bn_sync` (the default); otherwise each device normalises with
its own statistics and the running averages are averaged after the step.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp

from dcinet_jax import losses, parallel, state
from dcinet_jax.interaction import interact
from dcinet_jax.models import dcinet as dcinet_model
from input_pipeline import spec as data_spec

DEFAULT_EVALUATOR = 'fgxmedia'

init_variables = dcinet_model.init_variables
optimizer = state.sgd_with_l2


def build_model(config: Any, *, axis_name: str | None = None) -> dcinet_model.DCINet:
    """The DCINet module; BatchNorm reduces over `axis_name` when `model.bn_sync`."""
    return dcinet_model.build_model(
        config, bn_axis_name=axis_name if config.model.bn_sync else None)


def concat_labels(batch: dict, modalities) -> jax.Array:
    return jnp.concatenate([batch[m]['label'].astype(jnp.int32) for m in modalities])


def loss_fn(params, variables, batch, rng, *, model, config, step, axis_name=None):
    """Forward of both branches and the total loss: (loss, (collections, metrics))."""
    del step  # constant schedule of the loss terms
    modalities = tuple(config.data.modalities)
    ia = config.interaction
    inputs = {m: batch[m]['inputs'] for m in modalities}
    labels = concat_labels(batch, modalities)

    # Dropout (VGG's `tv` head) draws from its own stream; `rng` itself still feeds the
    # interactions, so backbones without dropout see the same draws as before.
    rngs = {'dropout': jax.random.fold_in(rng, 1)}
    out, mutated = model.apply({'params': params, **variables}, inputs, train=True,
                               mutable=['batch_stats'], rngs=rngs)
    dual_logits = dual_targets = None
    if ia.cmsi or ia.cmci:
        mixed, dual_targets = interact(
            rng, out['features'], labels, out['modality'],
            num_classes=config.data.num_classes, num_modalities=len(modalities),
            use_cmsi=ia.cmsi, use_cmci=ia.cmci, label_smoothing=ia.label_smoothing,
            minmax=tuple(ia.cutmix_minmax))
        dual_logits, mutated = model.apply(
            {'params': params, **mutated}, mixed, train=True,
            mutable=['batch_stats'], method='head', rngs={'dropout': jax.random.fold_in(rng, 2)})
    loss, terms = losses.dcinet_loss(out['logits'], labels, out['modality'],
                                     modalities=modalities, dual_logits=dual_logits,
                                     dual_targets=dual_targets)
    accuracy = jnp.mean(jnp.argmax(out['logits'], -1) == labels)
    collections = dict(mutated)  # {'batch_stats': ...}, or {} without BatchNorm
    if axis_name is not None and not config.model.bn_sync and collections:
        # Normalised with per-device statistics; running averages kept replicated.
        collections = jax.lax.pmean(collections, axis_name)
    return loss, (collections, dict(terms, loss=loss, accuracy=accuracy))


def validate_config(config: Any, default_evaluator: str | None = None) -> None:
    """Classes and modalities the model and the evaluator can use: the FG-XMedia mAP
    evaluator scores pairs of modalities (one alone trained, then failed at
    evaluation); FGCrossNet's image-only stage 0 uses the classification evaluator."""
    if int(config.data.num_classes) < 1:
        raise ValueError(f'config.data.num_classes={config.data.num_classes}: must be >= 1')
    modalities = tuple(config.data.modalities)
    unknown = [m for m in modalities if m not in data_spec.MODALITIES]
    evaluator = str(config.eval.get('metrics', '') or default_evaluator or DEFAULT_EVALUATOR)
    if unknown or len(set(modalities)) != len(modalities) or not modalities or (
            len(modalities) < 2 and evaluator == 'fgxmedia'):
        cross = evaluator == 'fgxmedia'
        raise ValueError(f'config.data.modalities={modalities}: expected '
                         f'{"two or more" if cross else "one or more"} distinct of '
                         f'{data_spec.MODALITIES}, as a tuple'
                         + (' (the fgxmedia evaluator scores retrieval between modalities)'
                            if cross else '')
                         + ': --config.data.modalities="(\'image\',\'text\')"')


def batch_rule(config: Any, num_devices: int) -> None:
    """Equal slices of every modality per device and process, and an even per-device
    batch: CMSI pairs sample i with sample B-1-i of the same device."""
    b = int(config.data.batch_per_modality)
    parallel.check_divisible(b, num_devices, 'data.batch_per_modality')
    local = b // num_devices * len(config.data.modalities)
    if local % 2:
        raise ValueError(
            f'each device holds {local} samples ({b // num_devices} per modality x '
            f'{len(config.data.modalities)}), but CMSI pairs sample i with sample B-1-i and '
            'needs an even per-device batch: change data.batch_per_modality or the number '
            'of devices.')


def examples_per_step(config: Any) -> int:
    return int(config.data.batch_per_modality) * len(config.data.modalities)


def steps_per_epoch(config: Any, process_count: int) -> int:
    from input_pipeline.fgxmedia import pipeline  # TensorFlow only where data is read
    return pipeline.steps_per_epoch(config, process_count)


def train_batches(config: Any, *, start_step: int) -> Iterator[dict]:
    from input_pipeline.fgxmedia import pipeline
    return pipeline.create_train_iterator(config, start_step=start_step)


def synthetic_batch(rng: jax.Array, config: Any) -> dict:
    """Random `{modality: {'inputs', 'label'}}` global batch: uint8 pixels, in-vocabulary
    character ids (0 = padding included), labels in range."""
    b = int(config.data.batch_per_modality)
    size, length = int(config.data.image_size), int(config.data.text_length)
    out = {}
    for i, m in enumerate(config.data.modalities):
        k_in, k_label = jax.random.split(jax.random.fold_in(rng, i))
        if m == 'text':
            vocab = data_spec.VOCAB_SIZES[config.data.alphabet]
            x = jax.random.randint(k_in, (b, length), 0, vocab, jnp.int32)
        else:
            x = jax.random.randint(k_in, (b, size, size, 3), 0, 256, jnp.int32).astype(jnp.uint8)
        out[m] = {'inputs': x, 'label': jax.random.randint(
            k_label, (b,), 0, int(config.data.num_classes), jnp.int32)}
    return out


def eval_outputs(model, variables, config) -> dict:
    """{modality: (features [N, D], labels [N])} over the test split, in list order;
    with several processes each extracts its share of the batches, gathered once."""
    from dcinet_jax.evaluators import features, sharding
    from input_pipeline.fgxmedia import pipeline
    iterators = pipeline.create_eval_iterators(config, 'test', share=sharding.process_share)
    return features.extract_features(model, variables, iterators,
                                     feature=config.eval.feature, progress=True)


def validate_data(config: Any) -> None:
    """The train and test splits of every modality exist, are not empty and hold labels
    below data.num_classes (checked before the first step, not after the last)."""
    from input_pipeline.fgxmedia import pipeline
    if int(config.data.eval_batch_size) <= 0:
        raise ValueError(f'data.eval_batch_size={config.data.eval_batch_size} must be positive')
    for split in ('train', 'test'):
        for m in config.data.modalities:
            if pipeline.num_examples(config, m, split) == 0:
                raise ValueError(f'the {m} {split} split in {config.data_dir} is empty')
        pipeline.check_labels(config, split)


def data_description(config: Any) -> dict | None:
    """The data card of the prepared variant this config reads (results.json "data")."""
    from input_pipeline.fgxmedia import fingerprint
    data_dir = str(config.data_dir)
    return fingerprint.describe_prepared(data_dir, config.data) if data_dir else None


def describe(config: Any) -> str:
    """One line for `dcinet summary`."""
    mc, dc = config.model, config.data
    return (f'backbone {mc.backbone}, cut {mc.cut}, compute {mc.dtype}, {dc.num_classes} '
            f'classes, {dc.image_size} px, modalities {tuple(dc.modalities)}')


def load_pretrained(variables: dict, config: Any) -> dict | None:
    """`model.pretrained`: a PyTorch state dict (torchvision/timm names) for the shared backbone."""
    if not config.model.pretrained:
        return None
    from dcinet_jax import pretrained
    from dcinet_jax.models.backbones import registry as backbones
    return pretrained.load_pretrained_backbone(
        config.model.pretrained, variables, family=backbones.family(config.model.backbone))
