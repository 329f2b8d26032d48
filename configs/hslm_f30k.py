"""HSLM on Flickr30K "precomp" features (docs/hslm.md): the paper's settings.

`data_dir` is the precomp folder (`{train,dev,test}_ims.npy` of 36 x 2048 bottom-up
region features, `{split}_caps.txt` with five captions per image), `data.vocab_path` the
vocab JSON (`f30k_precomp_vocab.json`; empty: a vocab is built from the train captions,
words seen at least `data.min_word_count` times, at every start). The vocab size and the
region shape are read from the data; `model.vocab_size`, `data.num_regions` and
`data.region_dim` below only serve runs without data (bench, summary).

Training: hardest-negative triplet loss (margin 0.2, summed) on the 128 x 128 batch
score matrix, Adam 2e-4 with global-norm clipping 2.0, 40 epochs, learning rate x 0.1
after epoch 20 [paper]. Evaluation: 1,000 test images x 5,000 captions (R@1/5/10 both
ways, rsum); checkpoints ranked by the rsum on the first 1,000 dev images.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.method = 'hslm'
    c.seed = 0
    c.data_dir = 'data/f30k_precomp'  # the precomp folder

    c.data = d = ml_collections.ConfigDict()
    d.name = 'f30k'
    d.vocab_path = ''                # '' : built from the train captions at every start
    d.min_word_count = 4             # for a vocab built here
    d.max_length = 0                 # 0: the split's longest caption (bucketed to 8s), no cut
    d.train_split = 'train'
    d.batch_per_modality = 128       # (image, caption) pairs per global batch (drop_last)
    d.num_regions = 36               # without data only (bench): read from train_ims.npy
    d.region_dim = 2048
    d.synthetic_length = 24          # caption length of bench's synthetic batches
    d.prefetch = 2

    c.model = m = ml_collections.ConfigDict()
    m.vocab_size = 8481              # without data only: the reference F30K vocab
    m.embed_dim = 1024               # d1, joint space
    m.word_dim = 300                 # d2
    m.sim_dim = 256                  # d_s, similarity vectors
    m.num_relation_blocks = 4        # image relation (IM_GCN) blocks
    m.num_text_blocks = 4            # TextAttn blocks
    m.relation_heads = 4
    m.relation_head_dim = 256
    m.dropout_rate = 0.4
    m.smooth = 9.0                   # lambda of the text-to-image attention
    m.text_attn_padding = 'masked'   # 'reference': pad tokens act as keys (batch-dependent)
    m.use_local = True               # Table 4 switches
    m.use_global = True
    m.caption_chunk = 0              # > 0: score captions in chunks of this many (memory)
    m.dtype = 'float32'              # or 'bfloat16' (compute; scores and loss float32)

    c.loss = lo = ml_collections.ConfigDict()
    lo.margin = 0.2
    lo.mask_same_image = False       # True: captions of one image are not each other's negatives
    lo.negatives = 'hardest'         # 'all': summed over every negative (VSE0) throughout
    lo.warmup_epochs = 0.0           # > 0: 'hardest' starts with this many epochs of 'all'

    c.optim = o = ml_collections.ConfigDict()
    o.learning_rate = 2e-4
    o.b1, o.b2 = 0.9, 0.999
    o.grad_clip = 2.0
    o.decay_epoch = 20               # lr x decay_factor from this epoch on (0: never)
    o.decay_factor = 0.1
    o.decay_steps = 0                # > 0: decay at this step instead (runs without data)
    o.schedule = 'constant'          # the generic schedule does not apply (the step decay is
    o.warmup_steps = 0               # HSLM's learning_rate hook); other values are refused

    c.eval = e = ml_collections.ConfigDict()
    e.metrics = 'recall'
    e.dataset = 'f30k'
    e.protocol = ('1k',)             # or several: the first is reported unprefixed
    e.best_metric = 'selection'      # dev rsum
    e.test_split = 'test'
    e.dev_split = 'dev'
    e.dev_images = 1000              # the reference validates on the first 5,000 dev captions
    e.batch_size = 128               # images / captions per encoder call
    e.image_block = 100              # score tiles (the reference's 100 x 100 shards)
    e.caption_block = 100
    e.ensemble_workdirs = ''         # 'w1,w2': average their test score matrices with this run's
    e.spill_mb = 256.0               # host arrays above this many MiB (embeddings, scores)
    e.spill_dir = ''                 # spill to unlinked files here ('': temp dir); mb < 0: never

    c.profile = ml_collections.ConfigDict({'start_step': -1, 'num_steps': 5})
    c.num_epochs = 40
    c.num_train_steps = -1
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1132  # one epoch of 145,000 captions
    c.eval_every_steps = 1132        # validate every epoch [paper, reference code]
    c.keep_checkpoints = 5      # room to go back before a divergence (--restore_step)
    c.nan_check = True
    c.distributed = False
    c.compilation_cache_dir = ''
    return c
