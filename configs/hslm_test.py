"""Tiny HSLM for unit tests (docs/hslm.md): 6 regions of 16-d from the data or the
fallback below, joint space 16, words 8, similarity 8, two relation blocks of 2 x 8
heads and two text blocks, batch 8."""

from configs import hslm_demo


def get_config():
    c = hslm_demo.get_config()
    c.data.data_dir = 'data/hslm_test'
    c.data.batch_per_modality = 8
    c.data.num_regions, c.data.region_dim = 6, 16       # without data only
    c.data.synthetic_length = 10
    c.model.vocab_size = 40          # without data only
    c.model.embed_dim = 16
    c.model.word_dim = 8
    c.model.sim_dim = 8
    c.model.relation_heads = 2
    c.model.relation_head_dim = 8
    c.eval.batch_size = 32
    c.eval.image_block = 8
    c.eval.caption_block = 40
    c.num_epochs = 2
    c.log_every_steps = 5
    c.checkpoint_every_steps = 50
    return c
