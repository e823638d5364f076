"""The model-to-firmware generator: the model graph (without the edgeaudio metadata buffer and
the strings TFLM never reads), labels and front end land in C sources that compile with the C
front end; the array TFLM runs gives exactly the original file's outputs."""
import shutil
import subprocess

import numpy as np
import pytest

from edgeaudio.export.tflm import fits, smallest_arena, tflm_available
from edgeaudio.modelfile import METADATA_KEY
from firmware_demo.gen_firmware import firmware_model_bytes, generate, model_ops, resolver_method
from tests.conftest import PLACEHOLDER, REPO

FIRMWARE = REPO / "firmware_demo"
HAS_TFLM = tflm_available()


@pytest.fixture(scope="module")
def gcc():
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (make setup installs it)")
    return "gcc"


def _flatbuffer(data: bytes):
    from ai_edge_litert.tools import flatbuffer_utils
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def _metadata_names(model) -> list:
    return [m.name.decode() if isinstance(m.name, bytes) else m.name
            for m in model.metadata or []]


def test_generated_sources_compile_and_hold_the_model_graph(tmp_path, gcc):
    model = PLACEHOLDER.with_suffix(".tflite")
    result = generate(model, tmp_path)
    assert result["file_bytes"] == model.stat().st_size and result["labels"] == 10
    assert result["model_bytes"] < result["file_bytes"] - 4000  # metadata and names gone
    probe = tmp_path / "probe.c"
    probe.write_text("""
#include <stdio.h>
#include "ea_frontend.h"
#include "ea_model_data.h"
int main(void) {
    FILE *f = fopen("model.bin", "wb");
    fwrite(ea_model_data, 1, ea_model_data_len, f);
    fclose(f);
    printf("%d %d %s %s %d %d\\n", EA_N_LABELS, EA_N_FRAMES, ea_labels[0],
           ea_labels[EA_N_LABELS - 1], EA_N_BINS, EA_N_MODEL_OPS);
    return ((unsigned long)ea_model_data % 16) != 0;  /* TFLM wants it aligned */
}
""")
    exe = tmp_path / "probe"
    subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1",
                    f"-I{tmp_path}", f"-I{FIRMWARE / 'frontend'}", str(probe),
                    str(tmp_path / "ea_model_data.c"), str(FIRMWARE / "frontend/ea_frontend.c"),
                    "-lm", "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, check=True)
    # labels and front end come from the metadata, which the array no longer holds
    assert out.stdout.split() == ["10", "98", "chainsaw", "sneezing", "64",
                                  str(len(result["ops"]))]
    flashed = (tmp_path / "model.bin").read_bytes()
    assert len(flashed) == result["model_bytes"]
    assert flashed == firmware_model_bytes(model.read_bytes())
    graph = _flatbuffer(flashed)
    assert METADATA_KEY in _metadata_names(_flatbuffer(model.read_bytes()))
    assert METADATA_KEY not in _metadata_names(graph)
    assert all(t.name is None for g in graph.subgraphs for t in g.tensors)
    assert b'"labels"' not in flashed and b"chainsaw" not in flashed


def test_keep_names_keeps_tensor_names_but_not_the_metadata(tmp_path):
    data = PLACEHOLDER.with_suffix(".tflite").read_bytes()
    named = firmware_model_bytes(data, keep_names=True)
    stripped = firmware_model_bytes(data)
    assert len(stripped) < len(named) < len(data)
    assert METADATA_KEY not in _metadata_names(_flatbuffer(named))
    assert any(t.name for t in _flatbuffer(named).subgraphs[0].tensors)
    result = generate(PLACEHOLDER.with_suffix(".tflite"), tmp_path, keep_names=True,
                      arena=False)
    assert result["model_bytes"] == len(named) and result["arena_bytes"] is None
    assert "EA_ARENA_MIN_BYTES" not in (tmp_path / "ea_model_data.h").read_text()


def test_same_graph_as_the_export_rooms_strip_metadata():
    from edgeaudio.export.tflm import strip_metadata

    data = PLACEHOLDER.with_suffix(".tflite").read_bytes()
    assert firmware_model_bytes(data, keep_names=True, keep_zero_points=True) == \
        strip_metadata(data)


def test_ops_header_lists_the_graphs_ops_as_tflm_resolver_calls(tmp_path):
    result = generate(PLACEHOLDER.with_suffix(".tflite"), tmp_path, arena=False)
    ops = model_ops(PLACEHOLDER.with_suffix(".tflite").read_bytes())
    assert result["ops"] == ops and "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    header = (tmp_path / "ea_model_data.h").read_text()
    assert f"#define EA_N_MODEL_OPS {len(ops)}" in header
    for op in ops:
        assert f"(resolver).{resolver_method(op)}();" in header
    # names as tflite-micro's MicroMutableOpResolver spells them
    assert [resolver_method(o) for o in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D",
                                         "REDUCE_MAX", "FULLY_CONNECTED", "CONCATENATION",
                                         "BATCH_MATMUL", "PADV2", "L2_NORMALIZATION")] == [
        "AddConv2D", "AddDepthwiseConv2D", "AddMaxPool2D", "AddReduceMax",
        "AddFullyConnected", "AddConcatenation", "AddBatchMatMul", "AddPadV2",
        "AddL2Normalization"]


@pytest.mark.skipif(not HAS_TFLM, reason="tflite-micro not installed")
def test_tflm_runs_the_stripped_graph_exactly_as_the_file_in_the_smallest_arena(tmp_path):
    from tflite_micro.python.tflite_micro import runtime

    data = PLACEHOLDER.with_suffix(".tflite").read_bytes()
    result = generate(PLACEHOLDER.with_suffix(".tflite"), tmp_path)
    graph = firmware_model_bytes(data)
    arena = result["arena_bytes"]
    assert f"#define EA_ARENA_MIN_BYTES {arena}" in (tmp_path / "ea_model_data.h").read_text()
    assert arena == smallest_arena(graph) and arena % 256 == 0
    assert fits(graph, arena) and not fits(graph, arena - 256)
    original = runtime.Interpreter.from_bytes(data, arena_size=arena + 64 * 1024)
    flashed = runtime.Interpreter.from_bytes(graph, arena_size=arena)
    shape = tuple(original.get_input_details(0)["shape"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(-5, 3, shape).astype(np.float32)
        original.set_input(x, 0)
        flashed.set_input(x, 0)
        original.invoke()
        flashed.invoke()
        np.testing.assert_array_equal(flashed.get_output(0), original.get_output(0))


def test_refuses_onnx(tmp_path):
    with pytest.raises(SystemExit, match="needs a .tflite"):
        generate(PLACEHOLDER.with_suffix(".onnx"), tmp_path)
