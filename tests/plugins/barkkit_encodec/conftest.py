"""Random-weight EnCodec checkpoints, written once per session in each real format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from barkkit_encodec.checkpoints import convert_original_keys, save_encodec_checkpoint

# A few real token sequences: a short one, the uint16 `announcer`, a long one.
PROMPTS = ["v2/en_speaker_1", "announcer", "v2/de_speaker_3"]


@pytest.fixture(scope="session")
def original_codec(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """(folder holding encodec_24khz-d7cc33bc.th, the same model as the `encodec` package's EncodecModel)."""
    folder = tmp_path_factory.mktemp("encodec-original")
    _, model = save_encodec_checkpoint(folder, seed=1234)
    return folder, model


@pytest.fixture(scope="session")
def fine_prompts(prompts_dir) -> dict[str, np.ndarray]:
    return {name: np.load(prompts_dir / f"{name}.npz")["fine_prompt"] for name in PROMPTS}


def transformers_names(state: dict[str, torch.Tensor], *, legacy: bool) -> dict[str, torch.Tensor]:
    """Original-format weights in transformers' EncodecModel layout, with the weight-norm names of
    transformers < 4.33 (``weight_g``/``weight_v``, as in suno/bark's files) or of today's parametrizations."""
    renamed = {}
    for key, value in convert_original_keys(state).items():
        if not legacy:
            key = key.replace(".weight_g", ".parametrizations.weight.original0")
            key = key.replace(".weight_v", ".parametrizations.weight.original1")
        renamed[key] = value.clone()
    return renamed


@pytest.fixture(scope="session")
def transformers_codec(original_codec, tmp_path_factory):
    """transformers' own EncodecModel holding the original checkpoint's weights, saved with save_pretrained."""
    from transformers import EncodecConfig, EncodecModel

    _, model = original_codec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model = EncodecModel(EncodecConfig())
    hf_model.load_state_dict(transformers_names(model.state_dict(), legacy=False), strict=True)
    hf_model.eval()
    folder = tmp_path_factory.mktemp("encodec-transformers")
    hf_model.save_pretrained(folder)
    return folder, hf_model


@pytest.fixture(scope="session")
def bark_codec_folder(original_codec, transformers_codec, tmp_path_factory) -> Path:
    """A BarkModel-format folder: codec weights under `codec_model.` (legacy weight-norm names) beside other
    sub-models' tensors, and config.json with `codec_config`."""
    from safetensors.torch import save_file

    _, model = original_codec
    _, hf_model = transformers_codec
    tensors = {f"codec_model.{k}": v.contiguous() for k, v in transformers_names(model.state_dict(), legacy=True).items()}
    tensors["semantic.input_embeds_layer.weight"] = torch.zeros(4, 4)
    folder = tmp_path_factory.mktemp("bark-transformers")
    save_file(tensors, str(folder / "model.safetensors"))
    config = {"model_type": "bark", "codec_config": hf_model.config.to_dict(), "semantic_config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder
