"""An index built from a local CLIP checkpoint file: the app says what to do instead of failing on the record."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.state import AppConfig, load_encoder_for
from search.errors import MissingWeightsError


def test_checkpoint_index_names_the_file_and_the_commands(tmp_path):
    index = SimpleNamespace(manifest={"encoder": {"model": "ViT-B-32", "pretrained": None,
                                                  "checkpoint": {"name": "clip_marine.pt", "size": 123}}})
    with pytest.raises(MissingWeightsError) as err:
        load_encoder_for(index, AppConfig(index=tmp_path, collection=None))
    assert "clip_marine.pt" in str(err.value) and "--checkpoint" in str(err.value)
