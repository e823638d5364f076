"""A TFLite file written by the export room (``writers.pack_tflite``) stores each distinct
quantization vector and table once: the bundled int8 student repacked so is smaller by at least
its per-channel int64 zero points, and the interpreter computes exactly the same logits."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="TFLite packing needs ai-edge-litert")

from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402

from edgeaudio import Model, load_model  # noqa: E402
from edgeaudio.export.writers import pack_tflite  # noqa: E402

from ..conftest import esc50_clip  # noqa: E402


def per_channel_zero_points(model) -> int:
    return sum(len(t.quantization.zeroPoint) for g in model.subgraphs for t in g.tensors
               if t.quantization is not None and t.quantization.zeroPoint is not None
               and len(t.quantization.zeroPoint) > 1)


def test_shared_quantization_vectors_shrink_the_file_and_change_no_output(tmp_path):
    bundled = load_model().path
    assert str(bundled).endswith(".int8.tflite")
    source = bytearray(bundled.read_bytes())
    channels = per_channel_zero_points(flatbuffer_utils.convert_bytearray_to_object(source))
    assert channels > 100  # per-channel weights: the case this is for
    plain = bytes(flatbuffer_utils.convert_object_to_bytearray(
        flatbuffer_utils.convert_bytearray_to_object(source)))
    packed = pack_tflite(flatbuffer_utils.convert_bytearray_to_object(source))
    # most of the 8 bytes a channel's zero point takes are saved (0.88 on the bundled file)
    assert len(packed) <= len(plain) - 8 * channels * 0.8, (len(plain), len(packed), channels)

    paths = {}
    for name, data in (("plain", plain), ("packed", packed)):
        paths[name] = tmp_path / f"{name}.int8.tflite"
        paths[name].write_bytes(data)
    reread = flatbuffer_utils.convert_bytearray_to_object(bytearray(packed))
    assert per_channel_zero_points(reread) == channels  # every tensor still has its own view
    plain_model, packed_model = Model(paths["plain"]), Model(paths["packed"])
    assert packed_model.info == plain_model.info
    clip = esc50_clip("1-100032-A-0")
    np.testing.assert_array_equal(packed_model.classify(clip).window_scores,
                                  plain_model.classify(clip).window_scores)
