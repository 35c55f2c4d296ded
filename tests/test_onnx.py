"""ONNX export: every classifier's graph against the estimator on real CLIP
features, one file from pixels to probabilities, and ``sklearn-clip
predict`` without torch."""

import csv
import json
import subprocess
import sys
import warnings

import joblib
import numpy as np
import onnxruntime
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPClassifier,
    GDAClassifier,
    LinearProbeClassifier,
    OnnxClassifier,
    TipAdapterClassifier,
    TransCLIPClassifier,
    ZeroShotClassifier,
    ZeroShotLogits,
    ZSLinearProbeClassifier,
    export_onnx,
    load_clip,
    load_image,
    make_clip_pipeline,
    register_onnx_converters,
)
from sklearn_clip._cli import main
from sklearn_clip._onnx_runtime import decode_image, preprocess_image

from .conftest import TINY

#: classes of stanford_cars used (fits stay fast; 4 images per class)
N_CLASSES = 20


@pytest.fixture(scope="module")
def cars(load_features):
    from sklearn_clip import few_shot_indices

    data = load_features("stanford_cars")
    train, test = data["y_train"] < N_CLASSES, data["y_test"] < N_CLASSES
    X_pool, y_pool = data["X_train"][train], data["y_train"][train]
    shots = few_shot_indices(y_pool, 4, random_state=0)
    rest = np.setdiff1d(np.arange(len(y_pool)), shots)
    return dict(
        X=X_pool[shots],
        y=y_pool[shots],
        X_test=data["X_test"][test],
        X_unlabelled=X_pool[rest],
        text=data["text_features"][:N_CLASSES],
    )


def onnx_proba(model, X):
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    labels, proba = session.run(None, {session.get_inputs()[0].name: X})[:2]
    return labels, proba


def assert_onnx_matches(estimator, X, atol=1e-5):
    for dtype in (np.float32, np.float64):
        X_typed = X.astype(dtype)
        options = {
            id(estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator): {
                "zipmap": False
            }
        }
        model = to_onnx(estimator, X_typed[:1], options=options)
        labels, proba = onnx_proba(model, X_typed)
        expected = estimator.predict_proba(X_typed)
        assert proba.dtype == dtype
        # float64 graphs: the estimator's arithmetic to rounding; float32
        # inputs: the float32 cast of the probabilities at the end.
        np.testing.assert_allclose(
            proba, expected, rtol=0, atol=atol if dtype == np.float32 else 1e-9
        )
        np.testing.assert_array_equal(labels, estimator.predict(X_typed))


HEADS = {
    "zero-shot": lambda text: ZeroShotClassifier(text_features=text),
    "linear probe": lambda text: LinearProbeClassifier(random_state=0),
    "linear probe, no BatchNorm": lambda text: LinearProbeClassifier(
        batch_norm=False, random_state=0
    ),
    "GDA": lambda text: GDAClassifier(),
    "GDA + zero-shot": lambda text: GDAClassifier(text_features=text),
    "CLIP-Adapter": lambda text: CLIPAdapterClassifier(
        text_features=text, max_epochs=3, random_state=0
    ),
    "attention probe": lambda text: AttentionProbeClassifier(
        text_features=text, max_epochs=3, random_state=0
    ),
    "ZS linear probe": lambda text: ZSLinearProbeClassifier(
        text_features=text, max_epochs=3, random_state=0
    ),
    "Tip-Adapter": lambda text: TipAdapterClassifier(text_features=text),
    "Tip-Adapter-F": lambda text: TipAdapterClassifier(
        text_features=text, fine_tune=True, max_epochs=2, random_state=0
    ),
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_onnx_converters()


@pytest.mark.parametrize("name", HEADS)
def test_every_head_matches_onnxruntime_on_real_features(cars, name):
    head = HEADS[name](cars["text"]).fit(cars["X"], cars["y"])
    assert_onnx_matches(head, cars["X_test"])


def test_weighted_tip_adapter_cache_and_string_labels(cars):
    # key weights scale the cache rows; labels are strings
    names = np.array([f"car {i:02d}" for i in range(N_CLASSES)])
    weights = np.random.default_rng(0).uniform(0.5, 2, len(cars["y"]))
    head = TipAdapterClassifier(text_features=cars["text"]).fit(
        cars["X"], names[cars["y"]], sample_weight=weights
    )
    assert_onnx_matches(head, cars["X_test"])


def test_clip_classifier_blend_with_a_scikit_learn_member(cars):
    clf = CLIPClassifier(
        text_features=cars["text"],
        candidates=["zero-shot", "Tip-Adapter", "StandardScaler + LR"],
        random_state=0,
    ).fit(cars["X"], cars["y"])
    assert len(clf.chosen_) >= 1
    assert_onnx_matches(clf, cars["X_test"])
    # after with_classes the members' columns come in another order
    wider = clf.__class__(
        text_features=cars["text"], candidates=["zero-shot", "Tip-Adapter"]
    ).fit(cars["X"], cars["y"])
    # a new label sorting first gets the last member column
    new_text = np.vstack([cars["text"][-1:] + cars["text"][:1], cars["text"]])
    reordered = wider.with_classes(
        np.r_[-3, np.arange(N_CLASSES)], text_features=new_text
    )
    assert_onnx_matches(reordered, cars["X_test"])


def test_transclip_inductive_layer(cars):
    X = np.vstack([cars["X"], cars["X_unlabelled"]])
    y = np.r_[cars["y"], -np.ones(len(cars["X_unlabelled"]), dtype=int)]
    clf = TransCLIPClassifier(
        ZeroShotClassifier(text_features=cars["text"]), random_state=0
    ).fit(X, y)
    assert_onnx_matches(clf, cars["X_test"])
    # the mixture's term, whatever weight the fit chose for new images
    assert clf.uses_unlabelled_
    clf.new_image_weight_ = 0.25
    assert_onnx_matches(clf, cars["X_test"])


def test_pipelines_with_scikit_learn_steps(cars):
    for pipe in (
        make_pipeline(
            ZeroShotLogits(text_features=cars["text"]),
            StandardScaler(),
            LogisticRegression(max_iter=500),
        ),
        make_pipeline(StandardScaler(), GDAClassifier()),
    ):
        pipe.fit(cars["X"], cars["y"])
        assert_onnx_matches(pipe, cars["X_test"])


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_norms_reduce_over_rows_in_every_opset(cars, opset):
    # ReduceL2 without axes reduces over everything below opset 18
    clf = ZeroShotClassifier(text_features=cars["text"]).fit(cars["X"], cars["y"])
    X = cars["X_test"][:50]
    model = to_onnx(clf, X[:1], options={"zipmap": False}, target_opset=opset)
    np.testing.assert_allclose(onnx_proba(model, X)[1], clf.predict_proba(X), atol=1e-5)


def test_to_onnx_with_skl2onnx_defaults_gives_a_zipmap(cars):
    # skl2onnx's default output for classifiers: one dict per row
    clf = GDAClassifier().fit(cars["X"], cars["y"])
    X = cars["X_test"][:5]
    session = onnxruntime.InferenceSession(
        to_onnx(clf, X[:1]).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    labels, dicts = session.run(None, {session.get_inputs()[0].name: X})
    np.testing.assert_array_equal(labels, clf.predict(X))
    proba = np.array([[row[c] for c in clf.classes_] for row in dicts])
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-5)


def test_nocl_gives_class_indices(cars):
    names = np.array([f"car {i:02d}" for i in range(N_CLASSES)])
    clf = ZeroShotClassifier(text_features=cars["text"]).fit(
        cars["X"], names[cars["y"]]
    )
    X = cars["X_test"][:20]
    model = to_onnx(clf, X[:1], options={"zipmap": False, "nocl": True})
    labels, _ = onnx_proba(model, X)
    np.testing.assert_array_equal(clf.classes_[labels], clf.predict(X))


def test_old_opsets_are_refused(cars):
    clf = ZeroShotClassifier(text_features=cars["text"]).fit(cars["X"], cars["y"])
    with pytest.raises(ValueError, match="opset 13 or later"):
        to_onnx(clf, cars["X"][:1], target_opset=12)


def test_export_stores_labels_and_serves_embeddings(cars, tmp_path):
    names = np.array([f"car {i:02d}" for i in range(N_CLASSES)])
    clf = GDAClassifier().fit(cars["X"], names[cars["y"]])
    path = tmp_path / "gda.onnx"
    export_onnx(clf, path)
    served = OnnxClassifier(path)
    assert served.input_kind == "embeddings"
    np.testing.assert_array_equal(served.classes_, clf.classes_)
    X = cars["X_test"]
    np.testing.assert_allclose(served.predict_proba(X), clf.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(served.predict(X), clf.predict(X))
    with pytest.raises(ValueError, match="classifiers"):
        export_onnx(StandardScaler().fit(cars["X"]))
    from sklearn_clip import VisualPromptClassifier

    with pytest.raises(ValueError, match="VisualPromptClassifier does not convert"):
        export_onnx(VisualPromptClassifier(**TINY))
    # the command line on .npy files of embeddings
    np.save(tmp_path / "a.npy", X[:3])
    out = tmp_path / "out.jsonl"
    args = ["predict", str(path), str(tmp_path / "a.npy"), "--format", "jsonl"]
    assert main([*args, "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == [
        f"{tmp_path / 'a.npy'}:{i}" for i in range(3)
    ]
    assert [r["label"] for r in records] == clf.predict(X[:3]).tolist()


# -- pixels to probabilities --------------------------------------------------------


@pytest.fixture(scope="module")
def photos(photo_set):
    rows = photo_set("hymenoptera")
    return [path for path, _, _ in rows], [label for _, label, _ in rows]


def test_torch_free_preprocessing_gives_the_featurizers_pixels(photos):
    from sklearn_clip import CLIPFeaturizer
    from sklearn_clip._onnx import preprocess_settings

    settings = preprocess_settings(CLIPFeaturizer(**TINY))
    preprocess = load_clip(**TINY).preprocess
    paths = photos[0][::4]  # 100 photos, sizes vary; one name has a space
    for path in paths:
        expected = preprocess(load_image(path)).numpy()
        np.testing.assert_array_equal(
            preprocess_image(decode_image(path), settings), expected
        )


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_every_resize_mode_of_open_clip_gives_the_same_pixels(photos, resize_mode):
    import open_clip

    from sklearn_clip._onnx import transform_settings

    # a non-square input shows which side is kept; padding is grey
    transform = open_clip.image_transform(
        (48, 64), is_train=False, resize_mode=resize_mode, fill_color=128
    )
    settings = transform_settings(transform)
    for path in photos[0][::20]:
        expected = transform(load_image(path)).numpy()
        np.testing.assert_array_equal(
            preprocess_image(decode_image(path), settings), expected
        )
    # small images (the CIFAR-10 photos are 32 x 32) are padded
    tiny = decode_image(photos[0][0]).resize((20, 13))
    np.testing.assert_array_equal(
        preprocess_image(
            tiny,
            transform_settings(
                open_clip.image_transform(24, is_train=False, resize_mode=resize_mode)
            ),
        ),
        open_clip.image_transform(24, is_train=False, resize_mode=resize_mode)(
            tiny
        ).numpy(),
    )


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "I;16", "CMYK"])
def test_torch_free_decoding_matches_load_image(tmp_path, mode):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (12, 10), dtype=np.uint16))
    elif mode == "P":
        image = image.convert("RGB").convert("P")
    elif mode != "RGBA":
        image = image.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path, **({"transparency": 3} if mode == "P" else {}))
    np.testing.assert_array_equal(
        np.asarray(decode_image(path)), np.asarray(load_image(path))
    )


def test_training_transforms_are_refused():
    import open_clip

    from sklearn_clip._onnx import transform_settings

    with pytest.raises(ValueError, match="no torch-free equivalent"):
        transform_settings(open_clip.image_transform(64, is_train=True))


@pytest.fixture(scope="module")
def exported(photos, tmp_path_factory):
    """A tiny-CLIP pipeline fitted on photos, saved with joblib and exported
    with ``sklearn-clip export``: ``(pipeline, onnx path, photos)``."""
    paths, labels = photos
    train = paths[::8]
    pipe = make_clip_pipeline(GDAClassifier(), **TINY, progress=False).fit(
        train, np.asarray(labels[::8])
    )
    folder = tmp_path_factory.mktemp("onnx")
    joblib.dump(pipe, folder / "model.joblib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch exporter's own warnings
        status = main(
            ["export", str(folder / "model.joblib"), "-o", str(folder / "model.onnx")]
        )
    assert status == 0
    return pipe, folder / "model.onnx", paths[1::8][:24]


def test_one_graph_from_pixels_to_probabilities(exported):
    pipe, path, paths = exported
    served = OnnxClassifier(path)
    assert served.input_kind == "pixels"
    np.testing.assert_array_equal(served.classes_, pipe.classes_)
    proba = served.predict_proba(served.pixels(paths))
    np.testing.assert_allclose(proba, pipe.predict_proba(paths), atol=1e-4, rtol=0)


BLOCK_TORCH = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "open_clip", "torchvision", "skorch"):
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Blocker())
from sklearn_clip._cli import main
status = main(sys.argv[1:])
assert not {"torch", "open_clip", "skorch"} & set(sys.modules), sorted(sys.modules)
sys.exit(status)
"""


def test_predict_needs_no_torch(exported, tmp_path):
    pipe, path, paths = exported
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    inputs = [*paths[:10], str(broken), *paths[10:]]
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_TORCH,
            "predict",
            str(path),
            *inputs,
            "--batch-size",
            "7",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr  # one unreadable input
    assert "1 input(s) unreadable" in result.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == inputs
    bad = rows[10]
    assert bad["label"] == "" and "not an image file" in bad["error"]
    good = [r for r in rows if not r["error"]]
    proba = np.array([[float(r[c]) for c in pipe.classes_] for r in good])
    np.testing.assert_allclose(proba, pipe.predict_proba(paths), atol=1e-4)
    assert [r["label"] for r in good] == pipe.predict(paths).tolist()


def test_predict_writes_json_lines(exported, tmp_path, capsys):
    pipe, path, paths = exported
    assert main(["predict", str(path), *paths[:3], "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == paths[:3]
    expected = pipe.predict_proba(paths[:3])
    for record, row in zip(records, expected):
        assert record["error"] is None
        assert record["label"] == pipe.classes_[np.argmax(row)]
        got = [record["probabilities"][c] for c in pipe.classes_]
        np.testing.assert_allclose(got, row, atol=1e-4)


def test_export_reads_skops_files(cars, tmp_path, capsys):
    import skops.io

    clf = GDAClassifier(text_features=cars["text"]).fit(cars["X"], cars["y"])
    skops.io.dump(clf, tmp_path / "gda.skops")
    out = tmp_path / "gda.onnx"
    assert main(["export", str(tmp_path / "gda.skops"), "-o", str(out)]) == 0
    assert "input embeddings" in capsys.readouterr().out
    X = cars["X_test"][:30]
    np.testing.assert_allclose(
        OnnxClassifier(out).predict_proba(X), clf.predict_proba(X), atol=1e-5
    )


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.onnx"), "x.jpg"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.joblib"), "-o", "m.onnx"]) == 2


def test_sessions_do_not_spin_and_take_the_usable_cores(cars, monkeypatch):
    from sklearn_clip._onnx_runtime import inference_session, session_thread_count

    clf = ZeroShotClassifier(text_features=cars["text"]).fit(cars["X"], cars["y"])
    model = export_onnx(clf).SerializeToString()
    options = inference_session(model).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == session_thread_count() >= 1
    monkeypatch.setenv("SKLEARN_CLIP_ONNX_THREADS", "3")
    assert inference_session(model).get_session_options().intra_op_num_threads == 3
    monkeypatch.setenv("SKLEARN_CLIP_ONNX_THREADS", "many")
    with pytest.raises(ValueError, match="SKLEARN_CLIP_ONNX_THREADS"):
        session_thread_count()


def test_int8_tower_keeps_the_embeddings_on_photos(photos):
    from sklearn_clip import CLIPFeaturizer
    from sklearn_clip._onnx import image_tower_onnx, preprocess_settings
    from sklearn_clip._onnx_runtime import inference_session

    featurizer = CLIPFeaturizer(**TINY, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's and quantizer's notes
        tower = image_tower_onnx(featurizer, quantize=True, optimize=False)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {
        node.op_type for node in tower.graph.node
    }
    paths = photos[0][::16]
    settings = preprocess_settings(featurizer)
    pixels = np.stack([preprocess_image(decode_image(p), settings) for p in paths])
    session = inference_session(tower.SerializeToString())
    int8 = session.run(None, {"pixels": pixels})[0]
    fp32 = featurizer.transform(paths)
    cosine = np.sum(int8 * fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() > 0.999, cosine.min()
