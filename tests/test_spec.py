"""input_pipeline/spec.py: the constants both sides of the TensorFlow wall import."""


from input_pipeline.demo import fgxmedia as demo
from input_pipeline import spec
from input_pipeline.fgxmedia import images, lists, text


def test_vocab_sizes_and_shifts():
    assert spec.VOCAB_SIZES == {'lower_space': 70, 'original': 69}
    assert all(spec.VOCAB_SIZES[a] == len(chars) + 1 for a, chars in spec.ALPHABETS.items())
    assert spec.TEXT_SHIFTS == (0, 2, 4, 6, 8)
    assert spec.ALPHABETS['lower_space'][0] == ' '


def test_modalities_and_ids():
    assert spec.MODALITIES == ('image', 'audio', 'text', 'video')
    assert spec.MODALITY_IDS == {'image': 0, 'audio': 1, 'text': 2, 'video': 3}
    assert spec.SPLITS == ('train', 'test')


def test_center_offset_is_torchvisions_rule():
    assert spec.center_offset(512, 448) == 32
    assert spec.center_offset(72, 64) == 4
    assert spec.center_offset(73, 64) == 4    # round(4.5) == 4 (half to even)
    assert spec.center_offset(75, 64) == 6    # round(5.5) == 6
    assert spec.center_offset(64, 64) == 0


def test_the_pipeline_modules_use_the_spec_objects():
    """One home for each constant: the modules hold the spec objects, not copies."""
    assert lists.MODALITIES is spec.MODALITIES and lists.SPLITS is spec.SPLITS
    assert text.ALPHABETS is spec.ALPHABETS
    assert images.center_offset is spec.center_offset
    assert demo.MODALITY_IDS is spec.MODALITY_IDS and demo.SPLITS is spec.SPLITS
