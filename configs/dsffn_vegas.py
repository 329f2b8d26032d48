"""DSFFN on VEGAS features (docs/dsffn.md): the reference code's settings.

`data_dir` is the folder holding `vegas_feature_norm.h5` as distributed (or the
output of `dcinet demo-data --format vegas --out DIR`). Visual features 1024-d
(Inception), audio 128-d (VGGish), 10 classes; every size is read from the file and
checked against these widths.

Departures from the reference, both switchable back (docs/dsffn.md#choices):
- `data.shuffle=True` (reference: file order every epoch);
- `data.select_on='val'`: checkpoints are ranked on a validation split carved from
  train (10 % of each class); `select_on='test'` with `eval.best_metric='average'`
  reproduces the reference's test-set selection, and the results say so.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.method = 'dsffn'
    c.seed = 0
    c.data_dir = 'data/vegas'        # the folder of the feature file

    c.data = d = ml_collections.ConfigDict()
    d.name = 'vegas'
    d.file = ''                      # default: vegas_feature_norm.h5 / ave_feature_norm.h5
    d.num_classes = 10
    d.visual_dim = 1024
    d.audio_dim = 128
    d.batch_per_modality = 128       # aligned pairs per global batch (drop_last)
    d.shuffle = True                 # False: the reference's file order every epoch
    d.select_on = 'val'              # 'test': the reference's model selection
    d.val_fraction = 0.1
    d.split_seed = 0
    d.input_norm = 'none'            # 'l2' | 'standardize' (train statistics)
    d.prefetch = 2

    c.model = m = ml_collections.ConfigDict()
    m.encoder_width = 1024
    m.channels = (64, 128, 256)      # stem/branch conv 1, branch conv 2, branch conv 3 (= MFA width)
    m.stem_kernel, m.stem_stride, m.stem_pad = 32, 8, 12
    m.head_hidden = 512
    m.embed_dim = 64
    m.classifier_hidden = 32
    m.dropout = 0.5
    m.gate_form = 'code'             # 'paper': sigmoid(Phi_va W1 + Phi_v) * Phi_v
    m.attention_scale = 'after_softmax'   # 'before_softmax': scaled dot product
    m.learn_tau = True               # False: tau fixed to 1 (paper Eq. 4)
    m.shared_encoder_fc = False      # True: a shared FC after the two encoders (paper text)
    m.bn_sync = True
    m.dtype = 'float32'

    c.loss = lo = ml_collections.ConfigDict()
    lo.dis_loss = 'ce'               # 'label_regression': the paper's Eq. 6
    lo.centers = 'shared_normalized'  # 'per_modality_raw': the paper's Eq. 7
    lo.pair_distance_weight = 1e-4   # alpha
    lo.center_weight = 5e-4          # beta (AVE: 1e-4)
    lo.center_lr = 0.05              # plain SGD on the centres
    lo.use_mfa = True                # ablation switches (Tables III-IV)
    lo.use_dis = True
    lo.use_intra = True

    c.optim = o = ml_collections.ConfigDict()
    o.learning_rate = 1e-4
    o.b1, o.b2 = 0.5, 0.999
    o.schedule = 'constant'
    o.warmup_steps = 0

    c.eval = e = ml_collections.ConfigDict()
    e.metrics = 'audiovisual'
    e.best_metric = 'selection'      # val_average (or the test average with select_on='test')
    e.pairings = ('aligned', 'shuffled', 'self')
    e.batch_size = 1024
    e.drop_last_batch = False        # True: score only full batches of reference_batch
    e.reference_batch = 128
    e.chunk_size = 1024
    e.num_workers = 1

    c.profile = ml_collections.ConfigDict({'start_step': -1, 'num_steps': 5})
    c.num_epochs = 40
    c.num_train_steps = -1
    c.log_every_steps = 50
    c.checkpoint_every_steps = 800
    c.eval_every_steps = 800         # ~5 epochs of VEGAS (the reference scores every 5)
    c.keep_checkpoints = 5      # room to go back before a divergence (--restore_step)
    c.nan_check = True
    c.distributed = False
    c.compilation_cache_dir = ''
    return c
