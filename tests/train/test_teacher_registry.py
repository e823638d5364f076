"""The teacher registry: names, aliases, "a+b", fitted-teacher folders, the CLI's check; and the
train room's imports pointing one way (no circles; the registry needs no torch)."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.errors import EdgeAudioError  # noqa: E402
from edgeaudio.train.teachers.base import ConcatTeacher  # noqa: E402
from edgeaudio.train.teachers.efficientat import EfficientATClassifier  # noqa: E402
from edgeaudio.train.teachers.fitted import FittedTeacher, save_member  # noqa: E402
from edgeaudio.train.teachers.registry import (  # noqa: E402
    ALIASES, UnknownTeacherError, get_teacher, is_fitted_teacher_path, kd_head_for,
    list_teachers, parse_teacher_names, registry_name, validate_teacher_names)

from ..conftest import REPO  # noqa: E402

LABELS = ["dog", "rooster"]


@pytest.fixture(scope="module")
def fitted_dirs(tmp_path_factory):
    """Three one-member fitted teachers (mn04, random init); the second's folder has a '+'."""
    root = tmp_path_factory.mktemp("fitted")
    folders = [root / "Mn04-A", root / "mn04+b", root / "c"]
    for seed, folder in enumerate(folders):
        torch.manual_seed(seed)
        save_member(folder / "member-0.pt", EfficientATClassifier(2, pretrained=False), LABELS)
    return folders


def test_names_aliases_and_case():
    assert list_teachers() == ["efficientat", "yamnet"]
    assert {alias: registry_name(alias) for alias in ALIASES} == \
        {"mn04": "efficientat", "mn04_as": "efficientat"}
    assert registry_name(" YAMNet ") == "yamnet" and registry_name("vggish") is None


def test_parse_flattens_lowercases_and_keeps_paths(fitted_dirs):
    a, b, _ = (str(f) for f in fitted_dirs)
    assert parse_teacher_names(["yamnet", "YAMNet+efficientat", "mn04"]) == \
        ["yamnet", "efficientat", "mn04"]
    assert parse_teacher_names("yamnet+ +efficientat") == ["yamnet", "efficientat"]
    # a fitted folder keeps its case, and one whose name holds a '+' is not split
    assert parse_teacher_names([f"{a}+yamnet", b]) == [a, "yamnet", b]
    assert is_fitted_teacher_path(b) and is_fitted_teacher_path(str(fitted_dirs[0] /
                                                                     "member-0.pt"))
    assert not is_fitted_teacher_path("yamnet") and not is_fitted_teacher_path(a + "/nothing")


def test_validate_names_every_part_and_the_known_ones():
    assert validate_teacher_names(["yamnet+MN04"]) == ["yamnet", "mn04"]
    with pytest.raises(UnknownTeacherError) as info:
        validate_teacher_names(["yamnet", "vggish+efficientat"])
    message = str(info.value)
    assert message.startswith("unknown teacher 'vggish'")
    assert all(name in message for name in ["efficientat", "yamnet", "mn04", "teacher fit"])
    with pytest.raises(UnknownTeacherError, match="fitted teacher not found: runs/gone"):
        validate_teacher_names(["runs/gone"])
    with pytest.raises(UnknownTeacherError, match="no teacher named"):
        get_teacher(" + ")
    assert issubclass(UnknownTeacherError, EdgeAudioError)  # the CLI's exit 2


def test_fitted_folders_and_their_concatenation(fitted_dirs):
    a, b, c = (str(f) for f in fitted_dirs)
    single = get_teacher(b)   # the whole name first: a path holding a '+'
    assert isinstance(single, FittedTeacher) and single.class_names == LABELS
    joined = get_teacher(f"{a}+{c}")
    assert isinstance(joined, ConcatTeacher) and joined.dim == 2 * single.dim
    assert [t.member_paths for t in joined.teachers] == [
        [fitted_dirs[0] / "member-0.pt"], [fitted_dirs[2] / "member-0.pt"]]


def test_kd_head_only_for_one_fitted_teacher_on_the_runs_labels(fitted_dirs):
    a = str(fitted_dirs[0])
    assert kd_head_for([a], LABELS) is not None
    assert kd_head_for([a], list(reversed(LABELS))) is None
    assert kd_head_for(["efficientat"], LABELS) is None
    assert kd_head_for([a, str(fitted_dirs[1])], LABELS) is None


def test_registry_and_cache_import_without_torch():
    code = ("import sys; import edgeaudio.train.teachers.registry, edgeaudio.train.cache; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def _train_import_graph() -> dict[str, set[str]]:
    """Module -> the train-room modules it imports (at the top or inside a function)."""
    root = REPO / "train"
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(["edgeaudio.train", *parts])] = path
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                edges |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)]
                          if t in modules}
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
        # importing a submodule runs its packages' __init__, which is not an edge back
        graph[name] = {t for t in edges if t != name and not name.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circles_in_the_train_room():
    graph = _train_import_graph()
    assert "edgeaudio.train.teachers.registry" in graph and len(graph) > 20
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the checker
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    teachers = [m for m in graph if m.startswith("edgeaudio.train.teachers.")]
    assert not [m for m in teachers if "edgeaudio.train.teachers.registry" in graph[m]
                and m != "edgeaudio.train.teachers.registry"]
