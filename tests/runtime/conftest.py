import pytest

from edgeaudio.backends import BACKENDS_FOR_FORMAT, backend_available
from tests.conftest import PLACEHOLDER

ALL_BACKENDS = [(fmt, b) for fmt, names in BACKENDS_FOR_FORMAT.items() for b in names]


@pytest.fixture(params=ALL_BACKENDS, ids=[b for _, b in ALL_BACKENDS])
def model_file_and_backend(request):
    """Every backend on the same real model (tflite-runtime where installed: numpy<2 only)."""
    fmt, backend = request.param
    if not backend_available(backend):
        pytest.skip(f"backend {backend} is not installed here")
    return PLACEHOLDER.with_suffix("." + fmt), backend
