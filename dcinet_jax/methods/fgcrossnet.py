"""FGCrossNet (the FG-XMedia benchmark's own method) behind the method contract.

One ResNet over every medium (image, video frames, spectrograms, and texts through the
char-CNN text net), no interactions; the feature of an item is its 200-way FC output.
The model is DCINet's shared backbone and text net cut after the last stage, wrapped
with the learned class centres of the centre loss (docs/fgcrossnet.md#model).

Loss (docs/fgcrossnet.md#losses): sum over media of the CE of that medium's slice +
`loss.centre_weight` * centre loss + `loss.ranking_weight` * quadruplet ranking loss
over the whole global batch (all-gathered across devices; the labels travel with the
logits, so every row keeps its own label whatever the device count).

Optimizer: SGD with momentum, the centres' gradient multiplied by
`loss.centre_grad_scale` (1000) before the update, lr = learning_rate *
0.5^floor(epoch / optim.halve_every_epochs).

Stages (docs/fgcrossnet.md#stages): `init_from` names an earlier stage's workdir (or
its checkpoints folder); every array whose path and shape match is taken from its
latest checkpoint (centres too unless `loss.reinit_centres`), the rest keeps its
fresh initialisation; the optimizer state and the step start over.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from dcinet_jax import checkpoints, evaluators, losses, parallel
from dcinet_jax.methods import dcinet as dcinet_method
from dcinet_jax.models import dcinet as dcinet_model

DEFAULT_EVALUATOR = 'fgxmedia'
CENTRE_MODES = ('learned', 'batch_mean')
RANKING_FORMS = ('code', 'paper')

synthetic_batch = dcinet_method.synthetic_batch
eval_outputs = dcinet_method.eval_outputs
validate_data = dcinet_method.validate_data
examples_per_step = dcinet_method.examples_per_step
steps_per_epoch = dcinet_method.steps_per_epoch
train_batches = dcinet_method.train_batches
data_description = dcinet_method.data_description


class FGCrossNet(nn.Module):
    """The shared network (`net`, a DCINet module cut after its last stage, run without
    interactions) plus the (K, K) centres of the centre loss, initialised N(0, 1)."""

    net: dcinet_model.DCINet

    def setup(self) -> None:
        k = self.net.num_classes
        self.centres = self.param('centres', nn.initializers.normal(1.0), (k, k), jnp.float32)

    def __call__(self, inputs, train: bool) -> dict:
        """The DCINet outputs ('logits', 'pooled', 'features', 'modality') and 'centres'."""
        out = self.net(inputs, train)
        return dict(out, centres=self.centres)


def build_model(config: Any, *, axis_name: str | None = None) -> FGCrossNet:
    if config.model.cut != 'layer4':
        raise ValueError(f"config.model.cut={config.model.cut!r}: FGCrossNet runs the whole "
                         "ResNet in one pass; use 'layer4'")
    net = dcinet_model.build_model(
        config, bn_axis_name=axis_name if config.model.bn_sync else None)
    return FGCrossNet(net=net)


def init_variables(model: FGCrossNet, rng: jax.Array, config: Any) -> dict:
    variables = model.init(rng, dcinet_model.dummy_inputs(model.net, config), train=False)
    return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}


def validate_config(config: Any) -> None:
    """DCINet's checks of classes and modalities, which FGCrossNet shares."""
    dcinet_method.validate_config(config, DEFAULT_EVALUATOR)


def _check_loss_config(config: Any) -> None:
    lc = config.loss
    if lc.centre_mode not in CENTRE_MODES:
        raise ValueError(f'config.loss.centre_mode={lc.centre_mode!r}: expected one of {CENTRE_MODES}')
    if lc.ranking_form not in RANKING_FORMS:
        raise ValueError(f'config.loss.ranking_form={lc.ranking_form!r}: expected one of {RANKING_FORMS}')


def loss_fn(params, variables, batch, rng, *, model, config, step, axis_name=None):
    """CE per medium + centre + ranking: (loss, (collections, metrics))."""
    _check_loss_config(config)
    lc = config.loss
    modalities = tuple(config.data.modalities)
    inputs = {m: batch[m]['inputs'] for m in modalities}
    labels = dcinet_method.concat_labels(batch, modalities)   # same order as the logits
    out, mutated = model.apply({'params': params, **variables}, inputs, train=True,
                               mutable=['batch_stats'], rngs={'dropout': rng})
    logits = out['logits'].astype(jnp.float32)
    loss, terms = losses.dcinet_loss(logits, labels, out['modality'], modalities=modalities)
    # The ranking loss (and per-batch centres) need the whole global batch: gather the
    # rows with their own labels. Gradients come back through the gather, so after the
    # step's average over devices they equal the single-device gradients.
    if axis_name is not None:
        all_logits = jax.lax.all_gather(logits, axis_name, tiled=True)
        all_labels = jax.lax.all_gather(labels, axis_name, tiled=True)
    else:
        all_logits, all_labels = logits, labels
    if float(lc.centre_weight):
        if lc.centre_mode == 'learned':
            centres = out['centres']
        else:
            centres = losses.batch_mean_centres(all_logits, all_labels, logits.shape[-1])
        terms['loss_centre'] = losses.fgcrossnet_centre_loss(logits, labels, centres)
        loss = loss + float(lc.centre_weight) * terms['loss_centre']
    if float(lc.ranking_weight):
        paper = lc.ranking_form == 'paper'
        terms['loss_ranking'] = losses.quadruplet_ranking_loss(
            all_logits, all_labels, margin1=float(lc.margin1), margin2=float(lc.margin2),
            squared=paper, two_hinges=paper, reduction='sum' if paper else 'mean_positive')
        loss = loss + float(lc.ranking_weight) * terms['loss_ranking']
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    collections = dict(mutated)
    if axis_name is not None and not config.model.bn_sync and collections:
        collections = jax.lax.pmean(collections, axis_name)
    metrics = dict(terms, loss=loss, accuracy=accuracy)
    return loss, (collections, metrics)


# ----------------------------------------------------------------------------- optimizer

def decay_period_steps(config: Any) -> int:
    """Steps between two halvings of the learning rate (0: never halve).

    `optim.halve_every_epochs` epochs of `optim.steps_per_epoch` steps; when that is 0
    the epoch length is read from the prepared data (none without `data_dir`)."""
    epochs = int(config.optim.get('halve_every_epochs', 0))
    if epochs <= 0:
        return 0
    spe = int(config.optim.get('steps_per_epoch', 0))
    if spe <= 0:
        if not config.get('data_dir', ''):
            return 0
        spe = steps_per_epoch(config, 1)
    return epochs * spe


def learning_rate(config: Any, total_steps: int) -> optax.Schedule:
    """lr_step = learning_rate * 0.5^floor(step / decay_period_steps): the contract's
    schedule hook, so the loop logs the halved rate; the optimizer below uses it too.

    The generic `optim.schedule` / `optim.warmup_steps` do not apply (the halving is the
    schedule); a value other than constant / 0 is refused rather than ignored."""
    del total_steps
    from dcinet_jax import state
    state.refuse_generic_schedule(
        config, "FGCrossNet's rate is the halving (optim.halve_every_epochs)")
    lr = float(config.optim.learning_rate)
    period = decay_period_steps(config)
    if period <= 0:
        return optax.constant_schedule(lr)
    return optax.exponential_decay(lr, transition_steps=period, decay_rate=0.5, staircase=True)


def optimizer(config: Any, total_steps: int) -> optax.GradientTransformation:
    """SGD (PyTorch momentum form, L2 weight decay on the gradient); the centres'
    gradient is scaled by `loss.centre_grad_scale` first, as the released code does
    after backward. Its rate is `learning_rate` (the one the loop logs)."""
    o = config.optim

    def labels(params):
        return {k: jax.tree.map(lambda _, k=k: 'centres' if k == 'centres' else 'net', v)
                for k, v in params.items()}

    return optax.chain(
        optax.multi_transform({'centres': optax.scale(float(config.loss.centre_grad_scale)),
                               'net': optax.identity()}, labels),
        optax.add_decayed_weights(float(o.weight_decay)),
        optax.sgd(learning_rate(config, total_steps), momentum=float(o.momentum),
                  nesterov=bool(o.nesterov)),
    )


def batch_rule(config: Any, num_devices: int) -> None:
    """Equal slices of every medium per device (the ranking loss gathers them all)."""
    parallel.check_divisible(int(config.data.batch_per_modality), num_devices,
                             'data.batch_per_modality')


# ----------------------------------------------------------------------------- stages

def checkpoint_dir(path: str | os.PathLike) -> Path:
    """A workdir's checkpoints folder, or `path` itself when it is one."""
    p = Path(os.path.expanduser(str(path))).absolute()
    return p / 'checkpoints' if (p / 'checkpoints').is_dir() else p


def read_checkpoint_variables(path: str | os.PathLike) -> tuple[int, dict]:
    """(step, {'params': ..., **collections}) of the latest checkpoint under `path`, as
    host arrays, whatever the device count and config that wrote it."""
    ckpt = checkpoints.Checkpointer(checkpoint_dir(path), best_metric='loss', read_only=True)
    try:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(f'init_from={os.fspath(path)!r}: no checkpoint there')
        return ckpt.read_saved_variables()
    finally:
        ckpt.close()


def _method_of(path: str | os.PathLike) -> str:
    """'that checkpoint was trained with method X; ' when X is not fgcrossnet, else ''."""
    ckpt = checkpoints.Checkpointer(checkpoint_dir(path), best_metric='loss', read_only=True)
    try:
        method = ckpt.saved_config(ckpt.latest_step()).get('method', 'fgcrossnet')
    finally:
        ckpt.close()
    return (f'that checkpoint was trained with method {method!r}, not fgcrossnet; '
            if method != 'fgcrossnet' else '')


def overlay(fresh: dict, saved: dict, *, skip: tuple[str, ...] = ()) -> tuple[dict, list, list]:
    """`fresh` with every leaf whose path (and shape) is in `saved` replaced by the saved
    one, except paths starting with an entry of `skip`. Returns (tree, taken, kept)."""
    flat_saved = {checkpoints.leaf_path(p): x
                  for p, x in jax.tree_util.tree_leaves_with_path(saved)}
    taken, kept = [], []

    def pick(path, x):
        name = checkpoints.leaf_path(path)
        if not any(name.startswith(s) for s in skip) and name in flat_saved \
                and tuple(flat_saved[name].shape) == tuple(x.shape):
            taken.append(name)
            return jnp.asarray(flat_saved[name], x.dtype)
        kept.append(name)
        return x
    return jax.tree_util.tree_map_with_path(pick, fresh), taken, kept


def check_training(config: Any) -> None:
    """A stage that starts from an earlier stage's weights (`previous_stage`, set by the
    stage configs) needs `init_from`: without it the ranking stage would silently train
    from scratch, to a much lower mAP, with nothing in the logs to say so."""
    previous = str(config.get('previous_stage', ''))
    if previous and not str(config.get('init_from', '')):
        raise ValueError(
            f'config.init_from is empty, but stage {config.get("variant", "")!r} starts from '
            f'the weights of {previous}: train that first (dcinet train --config {previous} '
            '--workdir DIR1 ...), then add --config.init_from=DIR1 here '
            "(--config.previous_stage='' trains this stage from scratch on purpose)")


def load_pretrained(variables: dict, config: Any) -> dict | None:
    """`model.pretrained` (a torchvision/timm state dict for the shared ResNet), then
    `init_from` (an earlier stage's checkpoint) on top."""
    out = None
    if config.model.pretrained:
        from dcinet_jax import pretrained
        from dcinet_jax.models.backbones import registry as backbones
        sub = {c: variables[c]['net'] for c in ('params', 'batch_stats') if c in variables}
        sub = pretrained.load_pretrained_backbone(
            config.model.pretrained, sub, family=backbones.family(config.model.backbone))
        out = {c: {**variables[c], 'net': sub[c]} if c in sub else variables[c]
               for c in variables}
    if config.get('init_from', ''):
        base = out or variables
        step, saved = read_checkpoint_variables(config.init_from)
        skip = ('params/centres',) if config.loss.reinit_centres else ()
        out, taken, kept = overlay(base, saved, skip=skip)
        if not taken:
            raise ValueError(f'init_from={config.init_from!r}: ' + _method_of(
                config.init_from) + 'no array of that checkpoint fits this model (another '
                'backbone or class count?)')
        logging.info('init_from %s step %d: %d arrays taken, %d kept fresh (%s)',
                     config.init_from, step, len(taken), len(kept), ', '.join(kept[:8]))
    return out


# ----------------------------------------------------------------------------- stage 0

class Classification:
    """Evaluator `classification`: top-1 accuracy of the argmax of each test item's
    feature (softmax of the logits) per medium, and their mean as 'accuracy'. Used by
    the image-only stage 0, where no cross-media retrieval exists."""

    @staticmethod
    def evaluate(outputs, *, config):
        import numpy as np
        per = {m: float(np.mean(np.argmax(np.asarray(f), -1) == np.asarray(y)))
               for m, (f, y) in outputs.items()}
        return {'accuracy': float(np.mean(list(per.values()))), 'per_modality': per,
                'protocol': {'counts': {m: int(len(y)) for m, (_, y) in outputs.items()}}}

    @staticmethod
    def format_table(results, *, name='This run', with_paper=False):
        cells = ' | '.join(f'{m} {v:.3f}' for m, v in results['per_modality'].items())
        return f'| {name} | top-1 accuracy {results["accuracy"]:.3f} | {cells} |'


evaluators.register('classification', Classification)
