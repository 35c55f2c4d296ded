import numpy as np
import pytest
import torch

from sklearn_clip import TEMPLATES, encode_class_names, load_clip
from sklearn_clip._text import resolve_templates

from .conftest import TINY


def test_template_sets_and_user_lists():
    assert resolve_templates("simple") == ("a photo of a {}.",)
    assert len(TEMPLATES["imagenet"]) == 80
    assert all(t.count("{}") == 1 for t in TEMPLATES["imagenet"])
    assert resolve_templates("a {} plane") == ("a {} plane",)
    assert resolve_templates(["x {}", "y {}"]) == ("x {}", "y {}")
    for bad in ("nonsense", ["no placeholder"], [], ["{} and {}"]):
        with pytest.raises(ValueError, match="templates"):
            resolve_templates(bad)


def test_class_embedding_is_renormalised_mean_over_templates():
    templates = ["a photo of a {}.", "a drawing of the {}."]
    names = ["ant", "bee", "wasp"]
    text = encode_class_names(names, templates, **TINY)
    assert text.shape == (3, 64) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-6)

    clip = load_clip(**TINY)
    with torch.no_grad():
        for row, name in zip(text, names):
            prompts = clip.tokenizer([t.format(name) for t in templates])
            emb = torch.nn.functional.normalize(clip.model.encode_text(prompts), dim=-1)
            mean = torch.nn.functional.normalize(emb.mean(0), dim=0).numpy()
            np.testing.assert_allclose(row, mean, atol=1e-5)


def test_empty_class_list_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        encode_class_names([], **TINY)
