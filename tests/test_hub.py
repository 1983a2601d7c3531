"""Supply chain: weights checked against their sha256 before pickle runs, the published defaults pinned in one
agreement (settings, README's preload_from_hub), and no package installed at run time."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import IntegrityError, ModelRef, analyze, load_profile, testing
from pipeline.hub import file_sha256
from pipeline.settings import DEFAULT_CAR_MODEL, DEFAULT_DAMAGE_MODEL, DEFAULT_SEG_MODEL

ROOT = Path(__file__).resolve().parents[1]


def test_a_weights_file_with_another_sha256_is_never_loaded(settings_factory, seg_model, tmp_path):
    weights = tmp_path / "seg.pt"
    shutil.copyfile(seg_model, weights)
    good = ModelRef.parse(f"{weights}#sha256={file_sha256(weights)}")
    assert analyze(testing.photo(64, 48), settings_factory().with_models(segmenter=good)).detections
    bad = ModelRef.parse(f"{weights}#sha256={'0' * 64}")
    with pytest.raises(IntegrityError, match="SEG_MODEL") as raised:
        analyze(testing.photo(64, 48), settings_factory().with_models(segmenter=bad))
    assert "sha256" in str(raised.value) and "\n" not in str(raised.value)


def test_profiles_carry_a_commit_and_a_sha256(tmp_path):
    digest = "ab" * 32
    (tmp_path / "p.toml").write_text(
        f'[segmenter]\nmodel = "owner/seg"\nfile = "w/best.pt"\nrevision = "{"c" * 40}"\nsha256 = "{digest}"\n'
        f'[parts]\nmodel = "owner/parts@{"d" * 40}:best.pt#sha256={digest}"\n'
    )
    models = load_profile(tmp_path / "p.toml").models
    assert models.segmenter == ModelRef("owner/seg", "c" * 40, "w/best.pt", digest)
    assert models.parts == ModelRef("owner/parts", "d" * 40, "best.pt", digest)
    assert ModelRef.parse(str(models.parts)) == models.parts  # the text form round-trips


def _preloads() -> dict[str, list[str]]:
    """README front matter: preload_from_hub lines 'repo [files] [commit]', by repo."""
    front = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("---")[1]
    after = front.split("preload_from_hub:\n", 1)[1].splitlines()
    items = []
    for line in after:
        if not line.startswith("  - "):
            break
        items.append(line[4:].split())
    return {fields[0]: fields[1:] for fields in items}


def test_readme_preloads_exactly_the_default_models():
    """The Space downloads at build time what the settings load at run time, at the same commit (when pinned:
    ``python -m pipeline.hub pin`` writes both)."""
    preloads = _preloads()
    for text in (DEFAULT_CAR_MODEL, DEFAULT_DAMAGE_MODEL, DEFAULT_SEG_MODEL):
        ref = ModelRef.parse(text)
        assert ref.id in preloads, ref.id
        fields = preloads[ref.id]
        files = [f for f in fields if not re.fullmatch(r"[0-9a-f]{40}", f)]
        commits = [f for f in fields if re.fullmatch(r"[0-9a-f]{40}", f)]
        assert (commits or [None])[0] == ref.revision, ref.id
        if ref.filename:
            assert ref.filename in ",".join(files).split(","), ref.id


def test_ultralytics_never_installs_packages_at_run_time(seg_model):
    code = (
        "from pipeline import ModelRef\nfrom pipeline.segment import Segmenter\n"
        f"Segmenter(ModelRef({str(seg_model)!r}), 'fp32', 'torch').model\n"
        "from ultralytics.utils import checks\nprint(checks.AUTOINSTALL)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
