"""The model-to-firmware generator: the model bytes, labels and front end land in C sources
that compile with the C front end, and the array holds exactly the model file."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PLACEHOLDER, REPO

FIRMWARE = REPO / "firmware_demo"
sys.path.insert(0, str(FIRMWARE))
from gen_firmware import generate  # noqa: E402


@pytest.fixture(scope="module")
def gcc():
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (make setup installs it)")
    return "gcc"


def test_generated_sources_compile_and_hold_the_model(tmp_path, gcc):
    model = PLACEHOLDER.with_suffix(".tflite")
    result = generate(model, tmp_path)
    assert result["model_bytes"] == model.stat().st_size and result["labels"] == 10
    probe = tmp_path / "probe.c"
    probe.write_text("""
#include <stdio.h>
#include "ea_frontend.h"
#include "ea_model_data.h"
int main(void) {
    FILE *f = fopen("model.bin", "wb");
    fwrite(ea_model_data, 1, ea_model_data_len, f);
    fclose(f);
    printf("%d %d %s %s %d\\n", EA_N_LABELS, EA_N_FRAMES, ea_labels[0], ea_labels[EA_N_LABELS - 1],
           EA_N_BINS);
    return ((unsigned long)ea_model_data % 16) != 0;  /* TFLM wants it aligned */
}
""")
    exe = tmp_path / "probe"
    subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1",
                    f"-I{tmp_path}", f"-I{FIRMWARE / 'frontend'}", str(probe),
                    str(tmp_path / "ea_model_data.c"), str(FIRMWARE / "frontend/ea_frontend.c"),
                    "-lm", "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10", "98", "chainsaw", "sneezing", "64"]
    assert (tmp_path / "model.bin").read_bytes() == model.read_bytes()


def test_refuses_onnx(tmp_path):
    with pytest.raises(SystemExit, match="needs a .tflite"):
        generate(PLACEHOLDER.with_suffix(".onnx"), tmp_path)
