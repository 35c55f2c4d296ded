"""make_clip_pipeline: featurizer and head on one CLIP model."""

import pytest

from sklearn_clip import (
    TipAdapterClassifier,
    make_clip_pipeline,
)

from .conftest import TINY


def test_make_clip_pipeline_puts_featurizer_and_head_on_one_model():
    head = TipAdapterClassifier(sharpness=3.0)
    pipe = make_clip_pipeline(head, **TINY, batch_size=8)
    clip, fitted_head = pipe.named_steps["clip"], pipe.named_steps["head"]
    assert (clip.model, clip.pretrained) == (fitted_head.model, fitted_head.pretrained)
    assert fitted_head.sharpness == 3.0 and fitted_head is not head
    assert clip.batch_size == 8 and clip.device == "cpu"
    with pytest.raises(ValueError, match="takes images"):
        from sklearn_clip import VisualPromptClassifier

        make_clip_pipeline(VisualPromptClassifier())
