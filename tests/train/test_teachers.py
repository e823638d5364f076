"""Teachers on real weights and real ESC-50 clips from ../shared (skipped where it is absent)."""
from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")
sf = pytest.importorskip("soundfile")

from edgeaudio.errors import AudioError  # noqa: E402
from edgeaudio.files import shared_dir  # noqa: E402
from edgeaudio.train.teachers.base import (  # noqa: E402
    ConcatTeacher, TeacherWeightsError, align_frames)
from edgeaudio.train.teachers.registry import get_teacher, list_teachers  # noqa: E402

torch.set_num_threads(1)

SHARED = shared_dir()
DOG_CLIPS = ["1-30344-A-0", "1-30226-A-0"]  # ESC-50 fold 1, category "dog"
OTHER_CLIP = "1-17367-A-10"  # ESC-50 fold 1, category "rain"
DOG, BARK = "Dog", "Bark"
AUDIOSET_DOG, AUDIOSET_BARK = 74, 75


@pytest.fixture(scope="module")
def shared():
    if not (SHARED / "weights").is_dir() or not (SHARED / "data" / "esc50").is_dir():
        pytest.skip(f"shared data and weights not found at {SHARED} "
                    f"(set EDGEAUDIO_SHARED to the folder holding weights/ and data/)")
    return SHARED


@pytest.fixture(scope="module")
def clips(shared):
    meta = {row["filename"][:-4]: row["category"]
            for row in csv.DictReader(open(shared / "data/esc50/meta/esc50.csv"))}
    assert [meta[c] for c in DOG_CLIPS + [OTHER_CLIP]] == ["dog", "dog", "rain"]
    loaded = {}
    for stem in DOG_CLIPS + [OTHER_CLIP]:
        audio, rate = sf.read(shared / f"data/esc50/audio/{stem}.flac", dtype="float32")
        assert rate == 16000 and audio.shape == (80000,)
        loaded[stem] = audio
    return loaded


@pytest.fixture(scope="module")
def yamnet(shared):
    return get_teacher("yamnet", shared)


@pytest.fixture(scope="module")
def efficientat(shared):
    return get_teacher("efficientat", shared)


# ----------------------------------------------------------------------------- registry

def test_registry_names_and_aliases(shared):
    assert list_teachers() == ["efficientat", "yamnet"]
    assert get_teacher("mn04", shared).name == "efficientat"
    combined = get_teacher("yamnet+mn04", shared)
    assert isinstance(combined, ConcatTeacher) and combined.dim == 1024 + 384
    with pytest.raises(ValueError, match="unknown teacher 'vggish'"):
        get_teacher("vggish", shared)


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(TeacherWeightsError, match=re.escape(
            str(tmp_path / "weights" / "yamnet" / "yamnet_waveform.tflite"))):
        get_teacher("yamnet", tmp_path)
    with pytest.raises(TeacherWeightsError, match="mn04_as_mAP_432.pt"):
        get_teacher("efficientat", tmp_path)


def test_shared_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEAUDIO_SHARED", str(tmp_path))
    assert shared_dir() == tmp_path
    assert shared_dir("/elsewhere").as_posix() == "/elsewhere"


def test_weights_hash_is_the_published_sha256(yamnet, efficientat):
    assert yamnet.weights_hash.startswith("2d5e1e0577beb1fd")
    assert efficientat.weights_hash.startswith("899a8c62") and \
        efficientat.weights_hash.endswith("321c")
    assert yamnet.cache_identity()["weights_sha256"] == yamnet.weights_hash


# ----------------------------------------------------------------------------- YAMNet

def test_yamnet_embeddings_shape_and_hop(yamnet, clips):
    embeddings = yamnet.embed(list(clips.values()))
    for embedding in embeddings:
        # 1 + ceil((80000 - 15600) / 7680) frames of 0.48 s
        assert embedding.shape == (10, 1024) and embedding.dtype == np.float32
    assert yamnet.hop_seconds == 0.48 and yamnet.sample_rate == 16000
    one_second = clips[DOG_CLIPS[0]][:16000]
    assert yamnet.embed([one_second])[0].shape == (2, 1024)


def test_yamnet_hears_the_dog(yamnet, clips):
    top = dict(yamnet.top_classes(clips["1-30344-A-0"], k=5))
    assert DOG in top and BARK in top, top
    assert top[DOG] > 0.5
    assert DOG not in dict(yamnet.top_classes(clips[OTHER_CLIP], k=10))


def test_yamnet_event_vectors_are_its_output_layer(yamnet, clips):
    weight, bias = yamnet.output_layer()
    assert weight.shape == (521, 1024) and np.array_equal(yamnet.event_vectors(), weight)
    out = yamnet.run(clips[DOG_CLIPS[0]])
    rebuilt = 1.0 / (1.0 + np.exp(-np.clip(out["embeddings"] @ weight.T + bias, -60, 60)))
    # LiteRT quantizes the activations of this int8-weight layer on the fly: small differences.
    np.testing.assert_allclose(rebuilt, out["scores"], atol=1e-2)


def test_bad_waveforms_are_refused(yamnet, efficientat):
    for teacher in (yamnet, efficientat):
        with pytest.raises(AudioError, match="1-D"):
            teacher.embed([np.zeros((16000, 2), np.float32)])
        with pytest.raises(AudioError, match="NaN"):
            teacher.embed([np.full(16000, np.nan, np.float32)])
        with pytest.raises(AudioError, match="empty"):
            teacher.embed([np.zeros(0, np.float32)])


# ----------------------------------------------------------------------------- EfficientAT

def _listed_state_dict(shared):
    listed = {}
    for line in open(shared / "weights/efficientat/mn04_as.state_dict.txt"):
        if line.startswith("#") or not line.strip():
            continue
        name, rest = line.split(" ", 1)
        shape = rest[rest.index("(") + 1:rest.index(")")]
        listed[name] = tuple(int(s) for s in shape.split(",") if s.strip())
    return listed


def test_efficientat_matches_the_released_state_dict(efficientat, shared):
    from edgeaudio.train.teachers.efficientat import MobileNetV3Audio

    ours = {k: tuple(v.shape) for k, v in MobileNetV3Audio(width_mult=0.4).state_dict().items()}
    assert ours == _listed_state_dict(shared)
    released = torch.load(efficientat.weights_path, map_location="cpu", weights_only=True)
    result = MobileNetV3Audio(width_mult=0.4).load_state_dict(released, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    n_params = sum(p.numel() for p in efficientat.model.parameters())
    assert n_params == 983599  # the count stated in mn04_as.state_dict.txt


def test_efficientat_embeddings_shape_and_hop(efficientat, clips):
    embeddings = efficientat.embed(list(clips.values()))
    # 5 s at 32 kHz -> 500 mel frames -> time stride 32 -> 16 frames of 0.32 s
    assert efficientat.hop_seconds == pytest.approx(0.32)
    for embedding in embeddings:
        assert embedding.shape == (16, 384) and embedding.dtype == np.float32
    short = efficientat.embed([clips[DOG_CLIPS[0]][:1600]])[0]  # 0.1 s
    assert short.shape == (1, 384)


def test_efficientat_embedding_mean_is_the_pooled_feature(efficientat, clips):
    clip = clips[DOG_CLIPS[0]]
    embedding = efficientat.embed([clip])[0]
    head = efficientat.model.classifier[2:].eval()
    with torch.inference_mode():
        logits = head(torch.from_numpy(embedding.mean(axis=0))[None])[0].numpy()
    np.testing.assert_allclose(logits, efficientat.logits(clip), atol=1e-4)


def test_efficientat_hears_the_dog(efficientat, clips):
    names = efficientat.class_names
    assert len(names) == 527 and names[AUDIOSET_DOG] == DOG and names[AUDIOSET_BARK] == BARK
    for stem in DOG_CLIPS:
        scores = efficientat.predict(clips[stem])
        top5 = set(np.argsort(scores)[::-1][:5].tolist())
        assert {AUDIOSET_DOG, AUDIOSET_BARK} <= top5, efficientat.top_classes(clips[stem])
        assert scores[AUDIOSET_DOG] > 0.5
    other = efficientat.predict(clips[OTHER_CLIP])
    assert other[AUDIOSET_DOG] < 0.05 and names[int(np.argmax(other))] == "Rain"


def test_efficientat_event_vectors_are_refused_with_a_reason(efficientat):
    with pytest.raises(NotImplementedError, match="no linear output layer"):
        efficientat.event_vectors()


# ----------------------------------------------------------------------------- concatenation

def test_align_frames_pools_finer_and_repeats_coarser():
    fine = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_allclose(align_frames(fine, 2), [[1, 2], [5, 6]])
    coarse = np.array([[0.0], [10.0]], np.float32)
    np.testing.assert_allclose(align_frames(coarse, 4), [[0], [0], [10], [10]])
    np.testing.assert_allclose(align_frames(coarse, 3), [[0], [5], [10]])  # straddle: mean
    assert align_frames(fine, 4) is fine


def test_concat_teacher_follows_the_first_teachers_time(yamnet, efficientat, clips):
    combined = ConcatTeacher([yamnet, efficientat])
    assert combined.hop_seconds == 0.48 and combined.dim == 1408
    assert combined.sample_rate == 16000 and len(combined.weights_hash) == 64
    waveforms = list(clips.values())
    joined = combined.embed(waveforms)
    for clip_joined, clip_yamnet, clip_eat in zip(joined, yamnet.embed(waveforms),
                                                  efficientat.embed(waveforms)):
        assert clip_joined.shape == (10, 1408)
        np.testing.assert_array_equal(clip_joined[:, :1024], clip_yamnet)
        np.testing.assert_allclose(clip_joined[:, 1024:], align_frames(clip_eat, 10),
                                   rtol=1e-5, atol=1e-6)
        # 16 EfficientAT frames into 10: each output frame averages the 2-3 frames it spans
        np.testing.assert_allclose(clip_joined[0, 1024:], clip_eat[0:2].mean(axis=0),
                                   rtol=1e-5, atol=1e-6)
    reversed_order = ConcatTeacher([efficientat, yamnet]).embed(waveforms[:1])[0]
    assert reversed_order.shape == (16, 1408) and math.isclose(
        ConcatTeacher([efficientat, yamnet]).hop_seconds, 0.32)
