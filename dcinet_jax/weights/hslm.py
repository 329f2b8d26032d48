"""HSLM whole-model weights <-> the public code's checkpoint (docs/hslm_model.md#weights).

The public HSLM code (an SGRAF/SCAN-style PyTorch model: `EncoderImage`, `EncoderText`,
`EncoderSimilarity`) saves `torch.save({'model': [img_enc.state_dict(),
txt_enc.state_dict(), sim_enc.state_dict()], 'opt': argparse.Namespace, 'epoch': ...,
...})`, and its `evaluation.py` loads exactly that, with the vocabulary JSON
(`<opt.vocab_path>/<opt.data_name>_vocab.json`) next to it. Why a module of its own: the
three state dicts, the per-head convolutions and the fused GRU gates need conversions that
are not one key to one array; they are done here by first viewing our variables in the
public shapes (`_expand`), so that every key is a plain `layout.Entry` (checked, converted
and inverted by `layout`), and collapsing back (`_collapse`): concatenations and splits,
bit-exact both ways.

    img_enc.fc                               <-> image_encoder/fc                  linear
    img_enc.IM_GCN_{i+1}.theta, theta1..     <-> relation_i/theta columns h        conv1d k=1
    img_enc.IM_GCN_{i+1}.phi, phi1..         <-> relation_i/phi columns h          conv1d k=1
    img_enc.IM_GCN_{i+1}.fc1 / fc2           <-> relation_i/fc_mu / fc_nu          linear
    img_enc.IM_GCN_{i+1}.g / W.0             <-> relation_i/w_g / w_r              conv1d k=1
    img_enc.IM_GCN_{i+1}.W.1                 <-> relation_i/bn                     BatchNorm
    txt_enc.embed                            <-> text_encoder/embed/embedding      copy
    txt_enc.W_att{i+1}.embedding_local.0     <-> text_attn_i/key                   linear
    txt_enc.W_att{i+1}.embedding_global.0    <-> text_attn_i/query                 linear
    txt_enc.W_att{i+1}.embedding_v.0         <-> text_attn_i/value                 linear
    txt_enc.cap_rnn.weight_ih_l0 rows r|z|n  <-> gru_forward/ir|iz|in kernels      linear
    txt_enc.cap_rnn.weight_hh_l0 rows r|z|n  <-> gru_forward/hr|hz|hn kernels      linear
    txt_enc.cap_rnn.bias_ih_l0 / bias_hh_l0  <-> gru_forward/i* / h* biases        copy
    txt_enc.cap_rnn.*_l0_reverse             <-> gru_backward/...
    sim_enc.v_global_w.embedding_local.0/.1  <-> head/visual_pool/local / bn_local
    sim_enc.v_global_w.embedding_global.0/.1 <-> head/visual_pool/global / bn_global
    sim_enc.v_global_w.embedding_common.0    <-> head/visual_pool/common           linear
    sim_enc.t_global_w.embedding_{local,global,common}.0 <-> head/text_pool/...    linear
    sim_enc.sim_tranloc_w / sim_tranglo_w    <-> head/local_sim_* / global_sim_*   linear
    sim_enc.cal_sim_base_atten.attn_sim_w    <-> head/saf_gate                     linear
    sim_enc.cal_sim_base_atten.bn            <-> head/saf_bn                       BatchNorm
    sim_enc.sim_eval_w                       <-> head/score                        linear

BatchNorm = weight, bias, running_mean, running_var (-> scale, bias, mean, var) and
num_batches_tracked (ignored in, 0 out). The GRU keeps PyTorch's six biases
(models/gru.py), so nothing is folded and export is the exact inverse of import.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dcinet_jax.weights import layout
from dcinet_jax.weights.layout import Entry

FORMAT = 'hslm-scan-checkpoint'
ALLOWED_GLOBALS: tuple = (argparse.Namespace,)
PARTS = ('img_enc', 'txt_enc', 'sim_enc')       # the order of checkpoint['model']
GATES = ('r', 'z', 'n')                          # PyTorch's row blocks of a GRU weight
GRU_KEY = 'txt_enc.cap_rnn'
# (our text attention projection, the public TextAttn branch)
TEXT_ATTN = (('key', 'embedding_local'), ('query', 'embedding_global'), ('value', 'embedding_v'))
# (ours, public) of the image / text global poolings
POOL = (('local', 'embedding_local.0'), ('global', 'embedding_global.0'),
        ('common', 'embedding_common.0'))
# the vocabulary must be the checkpoint's: ids are positions in its JSON
VOCAB_FIELD = 'vocab_path'


def sizes(variables: Mapping) -> dict:
    """The public options' sizes (opts.py names) of a model, read from its variables (the
    config's `model.vocab_size` is replaced by the data's vocabulary size at run time)."""
    p = variables['params']
    embed = p['text_encoder']['embed']['embedding']
    head = p['head']
    sim = head['local_sim_kernel'] if 'local_sim_kernel' in head else head['global_sim_kernel']
    return {'img_dim': int(p['image_encoder']['fc']['kernel'].shape[0]),
            'vocab_size': int(embed.shape[0]), 'word_dim': int(embed.shape[1]),
            'embed_size': int(p['image_encoder']['fc']['kernel'].shape[1]),
            'sim_dim': int(sim.shape[1])}


def _head_name(base: str, h: int) -> str:
    """The public per-head convolution names: theta, theta1, theta2, theta3."""
    return base if h == 0 else f'{base}{h}'


def _count(tree: Mapping, prefix: str) -> int:
    return sum(1 for k in tree if k.startswith(prefix))


# ----------------------------------------------------------------------------- views

def _gru_gate(path: tuple[str, ...]) -> bool:
    """Whether `path` is a leaf of one GRU gate (text_encoder/gru_*/{ir,...,hn}/...)."""
    return (len(path) == 4 and path[0] == 'text_encoder' and path[1].startswith('gru_')
            and path[2][:1] in ('i', 'h') and path[2][1:] in GATES)


def _expand(variables: Mapping, heads: int) -> dict:
    """Our variables seen in the public shapes: per-head relation projections and k=1
    convolutions as (1, in, out) kernels; each GRU direction as two fused (in, 3H) kernels
    `ih`, `hh` with (3H,) biases. Works on arrays and on ShapeDtypeStructs (shapes only)."""
    flat = layout.flatten(variables['params'])
    out = {}
    for path, value in flat.items():
        module, leaf = path[-2] if len(path) > 1 else '', path[-1]
        if path[0] == 'image_encoder' and module in ('theta', 'phi'):
            width = value.shape[-1] // heads
            for h in range(heads):
                part = _slice(value, (..., slice(h * width, (h + 1) * width)))
                out[path[:-2] + (f'{module}_{h}', leaf)] = (
                    _reshape(part, (1, *part.shape)) if leaf == 'kernel' else part)
        elif path[0] == 'image_encoder' and module in ('w_g', 'w_r') and leaf == 'kernel':
            out[path] = _reshape(value, (1, *value.shape))
        elif _gru_gate(path):
            continue                                   # fused below
        else:
            out[path] = value
    for direction in ('gru_forward', 'gru_backward'):
        cell = variables['params']['text_encoder'][direction]
        for side in 'ih':
            for leaf, axis in (('kernel', 1), ('bias', 0)):
                out[('text_encoder', direction, side + 'h', leaf)] = _concat(
                    [cell[side + g][leaf] for g in GATES], axis)
    return {**variables, 'params': layout.unflatten(out)}


def _collapse(expanded: Mapping, variables: Mapping, heads: int) -> dict:
    """The inverse of `_expand`, onto the structure of `variables`."""
    flat = layout.flatten(expanded['params'])
    out = {}
    for path, like in layout.flatten(variables['params']).items():
        module, leaf = path[-2] if len(path) > 1 else '', path[-1]
        if path[0] == 'image_encoder' and module in ('theta', 'phi'):
            parts = [flat[path[:-2] + (f'{module}_{h}', leaf)] for h in range(heads)]
            parts = [p[0] for p in parts] if leaf == 'kernel' else parts
            out[path] = np.concatenate(parts, axis=-1)
        elif path[0] == 'image_encoder' and module in ('w_g', 'w_r') and leaf == 'kernel':
            out[path] = flat[path][0]
        elif _gru_gate(path):
            fused = flat[path[:-2] + (module[0] + 'h', leaf)]
            hidden = like.shape[-1]
            g = GATES.index(module[1:])
            out[path] = fused[..., g * hidden:(g + 1) * hidden]
        else:
            out[path] = flat[path]
        out[path] = np.asarray(out[path]).astype(like.dtype)
    return {**expanded, 'params': layout.unflatten(out)}


def _is_array(value) -> bool:
    return hasattr(value, '__array__')


def _slice(value, index):
    if _is_array(value):
        return np.asarray(value)[index]
    return _shape_like(value, np.empty(value.shape, np.bool_)[index].shape)


def _reshape(value, shape):
    return np.asarray(value).reshape(shape) if _is_array(value) else _shape_like(value, shape)


def _concat(values: Sequence, axis: int):
    if all(_is_array(v) for v in values):
        return np.concatenate([np.asarray(v) for v in values], axis=axis)
    shape = list(values[0].shape)
    shape[axis] = sum(v.shape[axis] for v in values)
    return _shape_like(values[0], tuple(shape))


def _shape_like(value, shape):
    """A ShapeDtypeStruct: the variables given may be shapes only (jax.eval_shape)."""
    import jax
    return jax.ShapeDtypeStruct(tuple(shape), value.dtype)


# ----------------------------------------------------------------------------- table

def entries(expanded: Mapping, heads: int) -> list[Entry]:
    """The (public key, our expanded path, kind) table of a model's expanded variables."""
    p = expanded['params']
    image, text, head = p['image_encoder'], p['text_encoder'], p['head']
    table = layout.dense_entries('img_enc.fc', ('image_encoder', 'fc'))
    for i in range(_count(image, 'relation_')):
        ours, public = ('image_encoder', f'relation_{i}'), f'img_enc.IM_GCN_{i + 1}'
        for base in ('theta', 'phi'):
            for h in range(heads):
                table += layout.dense_entries(f'{public}.{_head_name(base, h)}',
                                              ours + (f'{base}_{h}',), kind='conv1d')
        table += layout.dense_entries(f'{public}.fc1', ours + ('fc_mu',))
        table += layout.dense_entries(f'{public}.fc2', ours + ('fc_nu',))
        table += layout.dense_entries(f'{public}.g', ours + ('w_g',), kind='conv1d')
        table += layout.dense_entries(f'{public}.W.0', ours + ('w_r',), kind='conv1d')
        table += layout.batchnorm_entries(f'{public}.W.1', ours + ('bn',))
    table.append(Entry('txt_enc.embed.weight', 'params', ('text_encoder', 'embed', 'embedding'),
                       'copy'))
    for i in range(_count(text, 'text_attn_')):
        for ours, public in TEXT_ATTN:
            table += layout.dense_entries(f'txt_enc.W_att{i + 1}.{public}.0',
                                          ('text_encoder', f'text_attn_{i}', ours))
    for direction, suffix in (('gru_forward', ''), ('gru_backward', '_reverse')):
        for side in 'ih':
            path = ('text_encoder', direction, side + 'h')
            table.append(Entry(f'{GRU_KEY}.weight_{side}h_l0{suffix}', 'params',
                               path + ('kernel',), 'linear'))
            table.append(Entry(f'{GRU_KEY}.bias_{side}h_l0{suffix}', 'params',
                               path + ('bias',), 'copy'))
    if 'visual_pool' in head:
        for ours, public in POOL:
            table += layout.dense_entries(f'sim_enc.v_global_w.{public}',
                                          ('head', 'visual_pool', ours))
        table += layout.batchnorm_entries('sim_enc.v_global_w.embedding_local.1',
                                          ('head', 'visual_pool', 'bn_local'))
        table += layout.batchnorm_entries('sim_enc.v_global_w.embedding_global.1',
                                          ('head', 'visual_pool', 'bn_global'))
        for ours, public in POOL:
            table += layout.dense_entries(f'sim_enc.t_global_w.{public}',
                                          ('head', 'text_pool', ours))
    for ours, public in (('local_sim', 'sim_tranloc_w'), ('global_sim', 'sim_tranglo_w')):
        if f'{ours}_kernel' in head:
            table += [Entry(f'sim_enc.{public}.weight', 'params', ('head', f'{ours}_kernel'),
                            'linear'),
                      Entry(f'sim_enc.{public}.bias', 'params', ('head', f'{ours}_bias'), 'copy')]
    table += layout.dense_entries('sim_enc.cal_sim_base_atten.attn_sim_w', ('head', 'saf_gate'))
    table += layout.batchnorm_entries('sim_enc.cal_sim_base_atten.bn', ('head', 'saf_bn'))
    table += layout.dense_entries('sim_enc.sim_eval_w', ('head', 'score'))
    return table


# ----------------------------------------------------------------------------- checkpoint

def _state(obj: Any, source: str) -> dict:
    """The three state dicts of a public checkpoint as one flat dict ('img_enc.fc.weight')."""
    model = obj.get('model') if isinstance(obj, Mapping) else None
    if not (isinstance(model, Sequence) and len(model) == len(PARTS)
            and all(isinstance(m, Mapping) for m in model)):
        if isinstance(obj, Mapping):
            got = 'a dict with keys ' + ', '.join(sorted(map(str, obj))[:layout.SHOWN]) + (
                ', ...' if len(obj) > layout.SHOWN else '')
        else:
            got = type(obj).__name__
        raise ValueError(f"{source}: not an HSLM checkpoint: expected {{'model': [img_enc, "
                         f"txt_enc, sim_enc state dicts], 'opt': Namespace, 'epoch': N}} (what "
                         f"the public evaluation.py loads), got {got}")
    return {f'{part}.{key}': value for part, state in zip(PARTS, model)
            for key, value in state.items()}


def _option_hint(obj: Mapping, variables: Mapping) -> str:
    """A line naming the sizes where the checkpoint's recorded options contradict the
    model (the usual cause of mis-shaped keys: another vocabulary JSON than the one the
    checkpoint was trained with); '' when they agree or are not recorded."""
    opt = obj.get('opt')
    if opt is None:
        return ''
    opt = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)
    wrong = [f'opt.{name}={opt[name]} vs {value} here' for name, value in sizes(variables).items()
             if isinstance(opt.get(name), int) and opt[name] != value]
    if not wrong:
        return ''
    return (f'  the checkpoint was trained with other sizes ({"; ".join(wrong)}): use its '
            'vocabulary JSON (data.vocab_path) and model sizes')


def _check_vocab(config: Any, source: str) -> None:
    """A vocabulary built from the captions has other ids than the checkpoint's JSON, even
    at the same size: refuse rather than score with shuffled word ids."""
    data = config.get('data', None)
    if data is not None and VOCAB_FIELD in data and not str(data[VOCAB_FIELD] or ''):
        raise ValueError(f'{source}: an HSLM checkpoint needs the vocabulary JSON it was trained '
                         'with (the public code keeps it in vocab/<data_name>_vocab.json): set '
                         '--config.data.vocab_path=FILE')


def import_state(obj: Any, variables: dict, config: Any, *, source: str = 'weights') -> dict:
    """New variables holding the public checkpoint `obj` (see the module docstring)."""
    state = _state(obj, source)
    _check_vocab(config, source)
    heads = int(config.model.relation_heads)
    expanded = _expand(variables, heads)
    table = entries(expanded, heads)
    try:
        layout.check(state, table, expanded, source=source)
    except ValueError as e:
        hint = _option_hint(obj, variables)
        raise ValueError(f'{e}\n{hint}' if hint else str(e)) from None
    new = layout.import_entries(state, table, expanded, source=source)
    return _collapse(new, variables, heads)


def options(variables: Mapping, config: Any) -> argparse.Namespace:
    """The `opt` the public code rebuilds the model from (its opts.py names); `data_name`
    is the data folder's name (f30k_precomp) and `data_path` its parent, as the public
    code joins them (and names its vocab JSON after `data_name`)."""
    data_dir = Path(str(config.data_dir))
    return argparse.Namespace(
        data_path=str(data_dir.parent), data_name=data_dir.name, vocab_path='./vocab/',
        **sizes(variables), num_layers=1, bi_gru=True, no_imgnorm=False, no_txtnorm=False,
        drop_out=0.0, margin=float(config.loss.get('margin', 0.2)), max_violation=True,
        grad_clip=2.0, batch_size=128, workers=2,
        learning_rate=float(config.optim.learning_rate))


def export_state(variables: dict, config: Any) -> dict:
    """Our variables as the public checkpoint dict (numpy arrays; `epoch` 0)."""
    heads = int(config.model.relation_heads)
    expanded = _expand(variables, heads)
    flat = layout.export_entries(expanded, entries(expanded, heads))
    model = [{key[len(part) + 1:]: value for key, value in flat.items()
              if key.startswith(part + '.')} for part in PARTS]
    return {'model': model, 'opt': options(variables, config), 'epoch': 0}
