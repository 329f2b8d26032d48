"""FGCrossNet on PKU FG-XMedia, all four media (docs/fgcrossnet.md).

    --config=configs/fgcrossnet_fgxmedia.py:VARIANT

VARIANT (the two-stage schedule and the ablations of the paper's Table 5):
  stage0   image-only fine-tuning of the ImageNet ResNet50 (CE, new 200-way FC, 30 epochs)
  stage1   CE + 0.001 * centre (50 epochs; init_from the stage-0 workdir)
  stage2   CE + 0.001 * centre + 0.1 * ranking (50 epochs; init_from the stage-1 workdir),
           the full method (default)
  cls      Table 5 "classification only" (CE on all four media)
  centre   Table 5 "+Center" (= stage1)
  ranking  Table 5 "+Ranking" (= stage2)

A later stage names the earlier stage's workdir in `init_from` (command line:
`--config.init_from=DIR`); its latest checkpoint's weights and centres are taken, the
optimizer and the learning rate start over. `previous_stage` is the earlier stage's
config (set for stage1 and stage2): training such a stage without `init_from` stops at
start-up with the command to run first, instead of silently starting from scratch
(`--config.previous_stage=''` trains it from its fresh initialisation on purpose).
"""

import ml_collections

from configs import dcinet_fgxmedia

# variant -> (modalities, centre weight, ranking weight, epochs)
ALL_MEDIA = ('image', 'video', 'audio', 'text')     # the reference concatenation order
VARIANTS = {
    'stage0': (('image',), 0.0, 0.0, 30),
    'stage1': (ALL_MEDIA, 0.001, 0.0, 50),
    'stage2': (ALL_MEDIA, 0.001, 0.1, 50),
    'cls': (ALL_MEDIA, 0.0, 0.0, 50),
    'centre': (ALL_MEDIA, 0.001, 0.0, 50),
    'ranking': (ALL_MEDIA, 0.001, 0.1, 50),
}
PREVIOUS_STAGE = {'stage1': 'stage0', 'stage2': 'stage1'}   # stage -> the one it starts from


def apply_variant(c: ml_collections.ConfigDict, variant: str,
                  config_file: str = 'configs/fgcrossnet_fgxmedia.py') -> ml_collections.ConfigDict:
    """The variant's media, loss weights and epochs; `previous_stage` names the earlier
    stage as `config_file:STAGE` (the config the user trains first)."""
    if variant not in VARIANTS:
        raise ValueError(f'fgcrossnet variant {variant!r}: expected one of {sorted(VARIANTS)}')
    modalities, centre, ranking, epochs = VARIANTS[variant]
    c.data.modalities = modalities
    c.loss.centre_weight = centre
    c.loss.ranking_weight = ranking
    c.num_epochs = epochs
    c.variant = variant
    previous = PREVIOUS_STAGE.get(variant, '')
    c.previous_stage = f'{config_file}:{previous}' if previous else ''
    if len(modalities) == 1:    # stage 0: no retrieval between media, top-1 accuracy instead
        c.eval.metrics, c.eval.best_metric = 'classification', 'accuracy'
    else:
        c.eval.metrics, c.eval.best_metric = 'fgxmedia', 'bimodal_average'
    return c


def get_config(arg: str = 'stage2', config_file: str = 'configs/fgcrossnet_fgxmedia.py'
               ) -> ml_collections.ConfigDict:
    """The paper's settings for variant `arg`; `config_file` is the file a derived config
    (demo, test) passes so that `previous_stage` names it."""
    c = dcinet_fgxmedia.get_config()
    c.method = 'fgcrossnet'
    c.init_from = ''            # an earlier stage's workdir (or checkpoints folder); '' = fresh
    c.variant = ''
    c.previous_stage = ''       # set by the variant: the config whose workdir init_from must name

    d = c.data
    d.alphabet = 'original'     # the reference text reading: 68 chars, case kept, no space
    d.text_mode = 'last_line'   # ... and only the file's last line ('lower_space'/'whole': the project's)
    d.batch_per_modality = 4    # b per medium: 16 items per step with four media
    d.shuffle = True            # reshuffle every epoch; False = the reference's list order
    d.sampler = ''              # 'quadruplet': the paper's batches (per slot, 3 classes over the
                                # 4 media, one same-class pair); '' = the code's random batches
    d.class_aligned = False
    d.eval_batch_size = 50

    c.model.backbone = 'resnet50'
    c.model.cut = 'layer4'      # one pass through the whole ResNet (no interactions)
    c.model.pretrained = ''     # torchvision resnet50 state dict for stage 0
    c.interaction.cmsi = False
    c.interaction.cmci = False

    c.loss = lc = ml_collections.ConfigDict()
    lc.centre_weight = 0.001
    lc.centre_mode = 'learned'  # 'learned' (SGD, code) or 'batch_mean' (per-batch class means, paper)
    lc.centre_grad_scale = 1000.0  # the centres' gradient multiplier (code)
    lc.reinit_centres = False   # with init_from: draw fresh centres (what the released code does)
    lc.ranking_weight = 0.1
    lc.ranking_form = 'code'    # 'code': plain L2, one hinge on the sum, mean over positive terms;
                                # 'paper': squared L2, two hinges, sum
    lc.margin1 = 1.0
    lc.margin2 = 0.5

    o = c.optim
    o.learning_rate = 1e-3
    o.momentum = 0.9
    o.weight_decay = 0.0
    o.schedule = 'constant'     # not used: the halving below is FGCrossNet's schedule (and logged)
    o.halve_every_epochs = 3    # lr_e = 1e-3 * 0.5^floor(e / 3)
    o.steps_per_epoch = 0       # 0: read from the prepared data

    c.eval.feature = 'softmax'  # softmax of the FC output (code); 'pooled' for the 2048-d feature
    c.checkpoint_every_steps = 1000
    c.eval_every_steps = 0
    return apply_variant(c, arg, config_file)
