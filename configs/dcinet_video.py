"""DCINet with video as a fourth modality (beyond the paper, which drops video), so that
DCINet and FGCrossNet can be compared on all 16 FG-XMedia tasks (docs/fgcrossnet.md#dcinet-with-video).

    --config=configs/dcinet_video.py[:BASE]     BASE: paper (default) or demo

Video frames train as independent samples like images; CMCI cuts the cut-point map into
four channel groups (floor(k * C / 4)), one per modality; evaluation scores a video
by the softmax of the mean of its frames' logits.
"""

from configs import dcinet_fgxmedia, demo

BASES = {'paper': dcinet_fgxmedia, 'demo': demo}


def get_config(arg: str = 'paper'):
    if arg not in BASES:
        raise ValueError(f'dcinet_video base {arg!r}: expected one of {sorted(BASES)}')
    c = BASES[arg].get_config()
    c.data.modalities = ('image', 'audio', 'text', 'video')   # ids 0..3, CMCI groups C/4
    if arg == 'demo':
        # The demo's 60 video frames per split make 7 steps per epoch (b = 8): 130 epochs
        # give the ~900 steps of configs/demo.py. At lr 0.1 the four-modality run
        # collapsed (image, audio and video logits constant); 0.05 trains. Measured
        # without the text BatchNorm the 3-modality demo has since taken on.
        c.num_epochs = 130
        c.optim.learning_rate = 0.05
        c.model.text_norm = 'none'
    return c
