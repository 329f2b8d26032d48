"""HSLM on the synthetic precomp folder, sized for a 2-core CPU (a few minutes).

    dcinet demo-data --format precomp --out data/hslm_demo
    dcinet train --config configs/hslm_demo.py --workdir runs/hslm_demo
    dcinet eval  --config configs/hslm_demo.py --workdir runs/hslm_demo

The code paths of configs/hslm_f30k.py with small widths: joint space 64, words 32,
similarity 32, two relation blocks of 2 x 32 heads and two text blocks, batch 32 and
a larger learning rate. The region count and width, and the vocabulary
(`vocab.json` of the demo folder), come from the data, so the same config also runs on
36 x 2048 region files.
"""

from configs import hslm_f30k


def get_config():
    c = hslm_f30k.get_config()
    c.data.name = 'demo'
    c.data_dir = 'data/hslm_demo'
    c.data.vocab_path = 'vocab.json'  # the demo folder's (relative: inside data_dir)
    c.data.batch_per_modality = 32
    c.data.num_regions, c.data.region_dim = 36, 2048    # without data only
    c.data.synthetic_length = 16
    c.model.vocab_size = 64          # without data only
    c.model.embed_dim = 64
    c.model.word_dim = 32
    c.model.sim_dim = 32
    c.model.num_relation_blocks = 2
    c.model.num_text_blocks = 2
    c.model.relation_heads = 2
    c.model.relation_head_dim = 32
    c.model.dropout_rate = 0.1
    c.optim.learning_rate = 1e-3
    c.loss.negatives = 'all'         # the hardest negative collapses every score to one value
                                     # on this data (docs/hslm.md#negatives)
    c.optim.decay_epoch = 12
    c.num_epochs = 15
    c.eval.dataset = 'demo'
    c.eval.dev_images = 0            # the whole dev split
    c.eval.image_block = 50
    c.eval.caption_block = 250
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    c.eval_every_steps = 0
    return c
