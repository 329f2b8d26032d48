"""Parameter counts of `summarize` vs a PyTorch ResNet, the text-net formula and a
second method."""

import pytest

from configs import dcinet_fgxmedia
from dcinet_jax.summary import summarize
from test_resnet import TORCH_BLOCKS, TorchResNet


def torch_count(block, stages, num_classes, width=64):
    model = TorchResNet(TORCH_BLOCKS[block], stages, num_classes, width)
    return sum(p.numel() for p in model.parameters())


def text_net_count(alphabet_chars, embed=16, length=448, hidden=None):
    """Embedding (alphabet + padding) + Conv1D E->H + Conv1D H->L + Conv2D 1->3, all k3 with bias."""
    hidden = hidden or length // 2
    return ((alphabet_chars + 1) * embed + (3 * embed * hidden + hidden)
            + (3 * hidden * length + length) + (9 * 1 * 3 + 3))


def test_paper_config_matches_torch_resnet50_plus_text_net():
    table, total = summarize(dcinet_fgxmedia.get_config())
    # The 69-character default alphabet (docs/data.md#alphabets): a leading space + the 68 originals.
    original = 'abcdefghijklmnopqrstuvwxyz0123456789,;.!?:\'"/\\|_@#$%^&*~`+-=<>()[]{}'
    assert len(original) == 68
    want = torch_count('bottleneck', (3, 4, 6, 3), 200) + text_net_count(len(' ' + original))
    assert abs(total - want) <= 0.01 * want   # the task's tolerance ...
    assert total == want                      # ... and in fact the counts agree exactly
    assert f'{total:,}' in table
    assert 'backbone/layer4/2/conv3' in table and 'kernel[1, 1, 512, 2048]' in table
    assert 'backbone/fc' in table and 'kernel[2048, 200]' in table
    lines = table.splitlines()
    assert lines.index(next(l for l in lines if l.startswith('backbone/layer4/2/conv3'))) < \
        lines.index(next(l for l in lines if l.startswith('backbone/fc')))


@pytest.mark.parametrize('backbone,block,stages', [('resnet18', 'basic', (2, 2, 2, 2)),
                                                    ('resnet101', 'bottleneck', (3, 4, 23, 3))])
def test_other_backbones_without_text(backbone, block, stages):
    c = dcinet_fgxmedia.get_config()
    c.model.backbone = backbone
    c.data.modalities = ('image', 'audio')
    c.data.num_classes = 37
    table, total = summarize(c)
    assert total == torch_count(block, stages, 37)
    assert 'text_net' not in table
    if backbone == 'resnet101':  # natural order: block 10 after block 9, not after block 1
        lines = [l.split()[0] for l in table.splitlines() if l.startswith('backbone/layer3/')]
        blocks = [int(l.split('/')[2]) for l in lines]
        assert blocks == sorted(blocks) and max(blocks) == 22


def test_custom_backbone_original_alphabet_and_hidden():
    c = dcinet_fgxmedia.get_config()
    c.model.backbone, c.model.stage_sizes, c.model.block, c.model.num_filters = 'custom', (1, 1, 1, 1), 'bottleneck', 8
    c.data.alphabet, c.data.image_size, c.data.text_length = 'original', 112, 112
    c.model.text_hidden, c.model.text_embed_dim = 40, 12
    _, total = summarize(c)
    assert total == (torch_count('bottleneck', (1, 1, 1, 1), 200, width=8)
                     + text_net_count(68, embed=12, length=112, hidden=40))


def test_any_method_is_summarised_through_its_contract():
    import tiny_method
    table, total = summarize(tiny_method.get_config())
    d, h, k = tiny_method.DIM, 16, tiny_method.CLASSES
    assert total == d * h + h + h * k + k
    assert 'method tiny_method' in table and 'Dense_0' in table
