"""FGCrossNet whole-model weights <-> the public code's state dict (docs/weights.md#fgcrossnet).

The public code (PKU-ICST-MIPL/FGCrossNet_ACMMM2019) trains `resnet50(num_classes=200)`
of its `model.py`: a torchvision ResNet50 with a 200-way `fc`, plus the char-CNN text
net in front (`embed`, `conv01`, `conv02`, `conv0`), and saves `model.state_dict()` of
the DataParallel wrapper (every key prefixed `module.`, stripped on reading). The key
table is DCINet's network table (`weights.dcinet.network_entries`) under `params/net`.

Two details of that file:
- `embed` has 70 rows; the reference reading uses ids 1..68 (its 68-character
  alphabet), so a model with fewer rows (69 for `data.alphabet='original'`) takes the
  first rows and the unused ones are dropped; export pads back to 70 with zeros.
- The centre-loss centres live in a separate `CenterLoss` module whose parameter is
  `centers`; the public code does not save them. When the file has a `centers` key it
  is loaded into `params/centres`, otherwise the centres keep their initial values
  (evaluation does not use them). Export leaves them out, so the file loads into the
  public model with a strict `load_state_dict`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dcinet_jax.weights import dcinet as dcinet_weights
from dcinet_jax.weights import files, layout
from dcinet_jax.weights.layout import Entry

logger = logging.getLogger(__name__)

FORMAT = 'fgcrossnet-pytorch'
ALLOWED_GLOBALS: tuple = ()
PUBLIC_EMBED_ROWS = 70      # nn.Embedding(70, 16) in the public model.py
CENTRES_KEY = 'centers'     # CenterLoss's parameter name


def entries(variables: dict, config: Any) -> list[Entry]:
    return dcinet_weights.network_entries(variables, config, ('net',))


def import_state(obj: Any, variables: dict, config: Any, *, source: str = 'weights') -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f'{source}: expected a state dict (name -> tensor), got {type(obj).__name__}')
    state = files.strip_prefix(dict(obj))
    key = dcinet_weights.EMBED_KEY
    table = variables['params']['net'].get('text_net', {}).get('embedding')
    if key in state and table is not None and getattr(state[key], 'ndim', 0) == 2:
        rows = table.shape[0]
        if state[key].shape[0] > rows:
            logger.info('%s: %s has %d rows, the model %d; rows %d.. are not used by the '
                        'reading and are dropped', source, key, state[key].shape[0], rows, rows)
            state[key] = state[key][:rows]
    table_entries = entries(variables, config)
    if CENTRES_KEY in state:
        table_entries.append(Entry(CENTRES_KEY, 'params', ('centres',), 'copy'))
    return layout.import_entries(state, table_entries, variables, source=source,
                                 keep=('params/centres',))


def export_state(variables: dict, config: Any) -> dict:
    state = layout.export_entries(variables, entries(variables, config))
    key = dcinet_weights.EMBED_KEY
    if key in state and state[key].shape[0] < PUBLIC_EMBED_ROWS:
        pad = np.zeros((PUBLIC_EMBED_ROWS - state[key].shape[0], state[key].shape[1]),
                       state[key].dtype)
        state[key] = np.concatenate([state[key], pad])
    return state
