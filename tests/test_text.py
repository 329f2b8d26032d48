"""input_pipeline/fgxmedia/text.py: alphabets, encoding, file reading, position shift."""

import numpy as np
import pytest

from input_pipeline import spec
from input_pipeline.fgxmedia import text
from input_pipeline.errors import DecodeError


def test_alphabets_exactly_as_spec():
    original = ('abcdefghijklmnopqrstuvwxyz' + '0123456789' + ',;.!?:\'"/\\|_@#$%^&*~'
                + '`' + '+-=<>()[]{}')
    assert text.ALPHABETS['original'] == original
    assert len(text.ALPHABETS['original']) == 68
    assert text.ALPHABETS['lower_space'] == ' ' + original
    assert len(set(text.ALPHABETS['lower_space'])) == 69
    assert text.vocab_size('lower_space') == spec.VOCAB_SIZES['lower_space'] == 70
    assert text.vocab_size('original') == spec.VOCAB_SIZES['original'] == 69


def test_known_string_lower_space():
    # lower_space: ' '=1, a=2 ... z=27, '0'=28 ... '9'=37, ','=38, ';'=39, '.'=40, '!'=41
    got = text.encode_text('Ab c9!', length=8)
    np.testing.assert_array_equal(got, [2, 3, 1, 4, 37, 41, 0, 0])
    assert got.dtype == np.uint8


def test_known_string_original_keeps_case_and_drops_upper_and_space():
    # original: a=1 ... z=26, '0'=27 ... '9'=36, ','=37, ';'=38, '.'=39, '!'=40
    got = text.encode_text('Ab c9!', alphabet='original', length=6)
    np.testing.assert_array_equal(got, [2, 3, 36, 40, 0, 0])   # 'A' and ' ' dropped


def test_last_characters_of_alphabet_and_dropped_characters():
    # '{' and '}' are the last two of 68 (original) -> 67, 68; in lower_space -> 68, 69.
    np.testing.assert_array_equal(text.encode_text('{é}', alphabet='original', length=3),
                                  [67, 68, 0])
    np.testing.assert_array_equal(text.encode_text('{é—}', length=3), [68, 69, 0])
    np.testing.assert_array_equal(text.encode_text('ÉÜ\n\t', length=2), [0, 0])


def test_truncation_and_padding():
    s = 'abcdefghij'
    np.testing.assert_array_equal(text.encode_text(s, length=4), [2, 3, 4, 5])
    out = text.encode_text(s, length=448)
    assert out.shape == (448,)
    np.testing.assert_array_equal(out[:10], np.arange(2, 12))
    assert not out[10:].any()


def test_unknown_alphabet():
    with pytest.raises(ValueError, match='unknown alphabet'):
        text.encode_text('x', alphabet='nope')


def test_read_text_whole(tmp_path):
    p = tmp_path / 'a.txt'
    p.write_text('  First line.\n\nSecond  line \r\nLast line!\n\n', encoding='utf-8')
    assert text.read_text(p) == 'First line. Second  line Last line!'
    with pytest.raises(ValueError, match='unknown text mode'):
        text.read_text(p, mode='first')


def _reference_last_line(path):
    """The reference reading, restated literally: the last of the lines a text-mode
    file yields (universal newlines), without its line break."""
    with open(path, encoding='utf-8-sig') as f:
        return f.readlines()[-1].rstrip('\n')


LAST_LINE_CASES = [
    'First line.\nSecond  line \r\nLast line!\n',   # final break ends the last line
    'First line.\nLast line!\n\n',                  # ends in a blank line: empty text
    'a\r\nb\r\n\r\n',                               # the same with CR LF
    'a\rb\r',                                       # lone CR breaks lines too
    'only line, no break',
    '  spaced   out  \n',                           # spaces are kept, nothing stripped
    'x\x0cy\u2028z\x85w \n',                        # FF, LS, NEL stay inside the line
    'one\n\t \n',                                   # whitespace-only last line is kept
    '\n',
    '\ufeffBOM, then text',
]


@pytest.mark.parametrize('content', LAST_LINE_CASES)
def test_last_line_is_the_reference_reading(tmp_path, content):
    p = tmp_path / 'a.txt'
    p.write_bytes(content.encode('utf-8'))
    got = text.read_text(p, mode='last_line')
    assert got == _reference_last_line(p)
    for alphabet in spec.ALPHABETS:
        np.testing.assert_array_equal(
            text.load_text(p, mode='last_line', alphabet=alphabet, length=32),
            text.encode_text(_reference_last_line(p), alphabet=alphabet, length=32))


def test_last_line_values(tmp_path):
    p = tmp_path / 'a.txt'
    p.write_bytes(b'First.\nLast line!\n')
    assert text.read_text(p, mode='last_line') == 'Last line!'
    p.write_bytes(b'First.\nLast line!\n\n')
    assert text.read_text(p, mode='last_line') == ''
    # The reference keeps such a file as an all-padding sample; so does last_line.
    assert not text.load_text(p, mode='last_line', length=8).any()
    p.write_bytes(b' a b\n')
    np.testing.assert_array_equal(text.load_text(p, mode='last_line', length=6),
                                  [1, 2, 1, 3, 0, 0])   # space is index 1


def test_read_text_bom_and_non_ascii(tmp_path):
    p = tmp_path / 'b.txt'
    p.write_bytes('\ufeffCafé naïve'.encode('utf-8'))
    assert text.read_text(p) == 'Café naïve'


def test_non_utf8_file_raises_with_line_offset_and_hint(tmp_path):
    p = tmp_path / 'bad.txt'
    p.write_bytes(b'good line\nbad \xff byte\n')
    with pytest.raises(DecodeError) as e:
        text.read_text(p)
    assert e.value.path == str(p) and e.value.line == 2
    assert str(e.value).startswith(f'{p}:2:')
    assert 'byte offset 14' in str(e.value)
    assert 'set --config.data.text_errors=replace to decode anyway' in str(e.value)
    assert '\n' not in str(e.value)
    assert text.read_text(p, errors='ignore') == 'good line bad  byte'
    with pytest.raises(ValueError, match='unknown errors'):
        text.read_text(p, errors='surrogateescape')
    # The documented fallback: replacement characters, dropped by the encoder.
    s = text.read_text(p, errors='replace')
    assert s == 'good line bad \ufffd byte'
    np.testing.assert_array_equal(text.encode_text(s, length=20)[9:15],
                                  text.encode_text(' bad  byte', length=20)[:6])


@pytest.mark.parametrize('content', [b'', b'\n\n  \n'])
def test_empty_file_raises(tmp_path, content):
    p = tmp_path / 'empty.txt'
    p.write_bytes(content)
    with pytest.raises(DecodeError, match='empty') as e:
        text.read_text(p)
    assert e.value.path == str(p)


def test_zero_byte_file_is_empty_in_both_modes(tmp_path):
    p = tmp_path / 'empty.txt'
    p.write_bytes(b'')
    for mode in spec.TEXT_MODES:
        with pytest.raises(DecodeError, match=r'file is empty \(0 bytes\)'):
            text.read_text(p, mode=mode)


def test_missing_file_raises(tmp_path):
    with pytest.raises(DecodeError, match='cannot read'):
        text.read_text(tmp_path / 'nope.txt')


def test_load_text_all_outside_alphabet(tmp_path):
    p = tmp_path / 'x.txt'
    p.write_text('ÄÖÜ', encoding='utf-8')
    with pytest.raises(DecodeError, match='alphabet'):
        text.load_text(p, alphabet='original')


def test_position_shift():
    ids = np.arange(1, 9, dtype=np.uint8)
    for k in spec.TEXT_SHIFTS:
        got = text.position_shift(ids, k)
        ref = np.concatenate([np.zeros(k, np.uint8), ids])[:8]   # the reference's list build
        np.testing.assert_array_equal(got, ref)
        assert got.dtype == ids.dtype
    np.testing.assert_array_equal(text.position_shift(ids, 20), np.zeros(8))
    assert spec.TEXT_SHIFTS == (0, 2, 4, 6, 8)
    with pytest.raises(ValueError):
        text.position_shift(ids, -1)


def test_decode_text_inverts_encode_text_for_kept_characters():
    raw = 'Red-Winged Blackbird: sings at dawn!'
    for alphabet in ('lower_space', 'original'):
        ids = text.encode_text(raw, alphabet=alphabet, length=64)
        chars = spec.ALPHABETS[alphabet]
        kept = ''.join(c for c in (raw.lower() if alphabet == 'lower_space' else raw)
                       if c in chars)
        assert text.decode_text(ids, alphabet) == kept and len(kept) > 10
    with pytest.raises(ValueError, match='unknown alphabet'):
        text.decode_text(np.zeros(3, np.uint8), 'greek')
