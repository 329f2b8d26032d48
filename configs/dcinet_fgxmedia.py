"""DCINet on PKU FG-XMedia with the paper's settings (docs/training.md#optimizer).

Every other config imports this one and overrides fields, so this file is also the
reference for what each field means.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = 'dcinet'         # dcinet_jax/methods/<method>.py: model, loss, optimizer, data
    c.seed = 0
    # Output directory of `dcinet prepare` (the TFDS data_dir).
    c.data_dir = ''

    c.data = d = ml_collections.ConfigDict()
    d.modalities = ('image', 'audio', 'text')  # order fixes modality ids 0, 1, 2 (docs/model.md#channel-groups)
    d.num_classes = 200
    d.image_size = 448          # centre crop fed to the ResNet (docs/data.md#resize-and-centre-crop)
    d.resize_size = 512         # square resize before the crop (reference code: 512)
    d.store_source_jpegs = False  # `dcinet prepare`: True keeps RGB JPEGs <= resize_size (photos, frames) as they are, ~5x less disk for video, the input resizes them at about half the speed (docs/data.md#source-jpegs)
    d.text_length = 448         # characters per text; must equal image_size (text net output)
    d.alphabet = 'lower_space'  # 'lower_space' (69 chars, default) or 'original' (68, no lower-casing)
    d.text_mode = 'whole'       # 'whole' file joined by spaces, or 'last_line' (reference behaviour)
    d.text_shift = True         # train-time position shift: prepend k zeros, k in {0,2,4,6,8}
    d.batch_per_modality = 8    # b; the global batch per modality (all devices and hosts together)
    d.class_aligned = False     # sample P classes x b/P items per modality so CMCI finds partners
    d.classes_per_batch = 4     # P, when class_aligned
    d.augment = False           # random crop + flip at train time (off: the paper's setting)
    d.prefetch = 2              # batches prefetched by tf.data and to the device
    d.eval_batch_size = 64
    d.on_error = 'fail'         # `dcinet prepare`: 'fail' or 'skip' (writes a report)
    d.text_errors = 'strict'    # `dcinet prepare`, non-UTF-8 text bytes: 'strict' (error), 'replace' or 'ignore'

    c.model = m = ml_collections.ConfigDict()
    # Backbone (docs/model.md#backbone-contract): resnet18/34/50/101/152, 'custom' (ResNet
    # with the two fields below), vgg16, vgg19, vgg16_bn, vgg19_bn, vit_ti16, vit_s16,
    # vit_b16, vit_b32, vit_l16. configs/backbones.py holds the paper's Table 4 presets.
    m.backbone = 'resnet50'
    m.stage_sizes = ()          # custom stage depths, e.g. (1, 1, 1, 1)
    m.block = ''                # custom block: 'basic' or 'bottleneck'
    m.num_filters = 64          # ResNet/VGG base width; tiny test models use 8
    m.cut = 'layer4'            # cut point: 'layer1' .. 'layer4'; ViT also 'block1' .. (docs/model.md#backbone-contract)
    m.head = 'tv'               # VGG head: 'tv' (7x7 pool + fc6/fc7/fc8), 'dense' (timm: fc6/fc7 as convs) or 'gap'
    m.head_hidden = 4096        # VGG fc6/fc7 width
    m.vit_width = 0             # ViT overrides, 0 = the named size's value
    m.vit_depth = 0
    m.vit_heads = 0
    m.vit_mlp_dim = 0
    m.vit_patch = 0
    m.vit_grid = 0              # side of the ViT map given to CMSI/CMCI; 0 = ceil(image_size / 32)
    m.dtype = 'float32'         # compute dtype: 'float32' or 'bfloat16' (params stay float32)
    m.zero_init_last_bn = False
    m.conv1x1 = 'auto'          # ResNet 1x1 convs: 'conv' (lax.conv), 'einsum' (channel matmul) or 'auto' (einsum on CPU, conv elsewhere; docs/model.md#1x1-convolutions)
    m.text_embed_dim = 16
    m.text_hidden = 0           # 0: text_length // 2 (224 at 448)
    m.text_norm = 'none'        # 'batch': BatchNorm on the text image (ours; docs/fgcrossnet.md)
    m.bn_sync = True            # BatchNorm statistics averaged across devices
    m.pretrained = ''           # PyTorch .pth/.safetensors for the backbone (torchvision or timm key names)

    c.interaction = i = ml_collections.ConfigDict()
    i.cmsi = True
    i.cmci = True
    i.label_smoothing = 0.1
    i.cutmix_minmax = (0.5, 0.6)

    c.optim = o = ml_collections.ConfigDict()
    o.learning_rate = 1e-3
    o.momentum = 0.9
    o.nesterov = False
    o.weight_decay = 1e-4
    o.schedule = 'constant'     # 'constant' or 'cosine'
    o.warmup_steps = 0

    c.num_epochs = 150
    c.num_train_steps = -1      # > 0 overrides num_epochs
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 5      # room to go back before a divergence (--restore_step)
    c.eval_every_steps = 5000   # 0: evaluate only at the end
    c.nan_check = True

    c.eval = e = ml_collections.ConfigDict()
    e.metrics = 'fgxmedia'      # dcinet_jax/evaluators/<metrics>.py ('' = the method's default)
    e.best_metric = 'bimodal_average'  # evaluator metric that ranks checkpoints (higher is better)
    e.exclude_self = False      # X->all: drop the query from its own gallery (reference keeps it)
    e.feature = 'softmax'       # 'softmax' of the logits (benchmark) or 'pooled' 2048-d feature
    e.chunk_size = 1024         # queries scored per chunk (bounds memory)
    e.num_workers = 1           # threads scoring query chunks on the host (numpy scoring)
    e.scoring = 'auto'          # 'numpy' (host, float64), 'device' (float32), 'auto' (device off CPU)

    c.profile = p = ml_collections.ConfigDict()
    p.start_step = -1           # >= 0: trace steps [start_step, start_step + num_steps) in training
    p.num_steps = 5

    c.compilation_cache_dir = '~/.cache/dcinet_jax/xla'  # '' disables the persistent cache
    c.distributed = False       # call jax.distributed.initialize() (also when SLURM/coordinator env is set)
    return c
