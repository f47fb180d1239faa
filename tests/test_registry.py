"""Every registered method, through the same checks (timm's test over every model): adding a model card
to ``models/`` is enough for it to be built, saved, loaded, listed by the CLI and imported."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facerestore_cli import METHODS
from facerestore_cli.cli import METHOD_CHOICES, app
from facerestore_cli.models import create_model, get_method, methods
from facerestore_cli.weights import load_weights, save_weights

REGISTERED = sorted(methods())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_registry_holds_both_papers_models():
    assert REGISTERED == ["dmdnet", "memgan"]
    assert get_method("dmdnet").uses_references and not get_method("memgan").uses_references
    assert get_method("dmdnet").official.licence.startswith("CC BY-NC-SA 4.0")
    assert get_method("memgan").official is None
    with pytest.raises(KeyError, match="known: dmdnet, memgan"):
        get_method("codeformer")


def test_the_cli_choices_and_the_library_methods_are_the_registry():
    assert METHOD_CHOICES == (*REGISTERED, "none") == METHODS
    help_text = CliRunner().invoke(app, ["restore", "--help"], terminal_width=200).output
    for name in REGISTERED:
        assert name in help_text


def _forward(name: str, model, x: torch.Tensor) -> torch.Tensor:
    if get_method(name).uses_references:
        boxes = torch.from_numpy(np.stack([get_method(name).module.component_boxes(_template_landmarks())]))
        return model(x, boxes)
    return model(x)


def _template_landmarks() -> np.ndarray:
    from skimage import data

    from facerestore_cli.face.align import align_face
    from facerestore_cli.face.detect import create_detector
    from facerestore_cli.face.landmarks import default_predictor

    rgb = data.astronaut()
    face = create_detector("retinaface").detect(rgb)[0]
    return default_predictor().predict(align_face(rgb, face.landmarks).image)


@pytest.mark.parametrize("name", REGISTERED)
def test_every_method_builds_runs_and_round_trips_its_weights(name, tmp_path):
    spec = get_method(name)
    config = spec.tiny_config()
    model = create_model(name, config).eval()
    size = getattr(config, "size", 512)
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.inference_mode():
        y = _forward(name, model, x)
    assert y.shape == x.shape and torch.isfinite(y).all()

    path = tmp_path / f"{name}.safetensors"
    save_weights(model.state_dict(), path, {"method": name, "config": dataclasses.asdict(config)})
    loaded = load_weights(path)
    assert loaded.method == name
    again = spec.build(loaded.config)
    again.load_state_dict({k: v.float() for k, v in loaded.tensors.items()}, strict=True)
    with torch.inference_mode():
        assert torch.equal(_forward(name, again.eval(), x), y)


@pytest.mark.parametrize("name", [n for n in REGISTERED if get_method(n).has_converter])
def test_every_official_converter_accepts_its_own_layout_and_refuses_others(name):
    spec = get_method(name)
    if name == "dmdnet":
        from test_dmdnet import official_state

        state, _ = official_state(spec.tiny_config())
    else:  # pragma: no cover - a new method with a converter adds its own official layout here
        pytest.fail(f"add an official-layout state dict for {name}")
    folded, config = spec.module.convert_official(state)
    assert config == spec.tiny_config()
    spec.build(config).load_state_dict(folded, strict=True)
    with pytest.raises(ValueError):
        spec.module.convert_official({"not": torch.zeros(1)})
