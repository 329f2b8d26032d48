"""Random host batches in the training layout, shared by the step tests."""

import numpy as np


def host_batch(config, seed: int = 0) -> dict:
    """{modality: {'inputs', 'label'}} with uint8 pixels and in-vocabulary text ids."""
    rng = np.random.default_rng(seed)
    b, s, length = (config.data.batch_per_modality, config.data.image_size,
                    config.data.text_length)
    k = config.data.num_classes
    vocab = 70 if config.data.alphabet == 'lower_space' else 69   # alphabet + padding
    return {
        'image': {'inputs': rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
                  'label': rng.integers(0, k, b).astype(np.int32)},
        'audio': {'inputs': rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
                  'label': rng.integers(0, k, b).astype(np.int32)},
        'text': {'inputs': rng.integers(0, vocab, (b, length)).astype(np.int32),
                 'label': rng.integers(0, k, b).astype(np.int32)},
    }
