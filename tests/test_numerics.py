"""Numbers that do not depend on the CPU: a row is scored the same in any
batch, and the estimator checks pass under every kernel choice torch makes
on x86 CPUs (the machine's own, AVX2, and the portable default).
"""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sklearn_clip import CLIPFeaturizer, all_estimators

ROOT = Path(__file__).resolve().parents[1]

#: Environments forcing torch's (and MKL's, oneDNN's) kernels to one
#: instruction set: float32 sums round differently on each.
KERNEL_CHOICES = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
    "default": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
}

#: Classifiers whose X is embeddings (a 2-d array; the visual prompt takes
#: images).
EMBEDDING_CLASSIFIERS = [
    (name, cls)
    for name, cls in all_estimators("classifier")
    if cls().__sklearn_tags__().input_tags.two_d_array
]


def cpu_supports(flag, cpuinfo="/proc/cpuinfo"):
    """Whether the CPU has ``flag`` (``"avx2"``): from the kernel's CPU flags
    where there are any, else from the kernels torch picked (which an
    ``ATEN_CPU_CAPABILITY`` in this process may have lowered)."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("flags") and ":" in line:
            return flag in line.split(":", 1)[1].split()
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return {"avx2": capability in ("AVX2", "AVX512")}.get(flag, False)


def test_cpu_supports_reads_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert cpu_supports("avx2", cpuinfo) and not cpu_supports("avx512f", cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx\n")
    assert not cpu_supports("avx2", cpuinfo)


@pytest.fixture(scope="module")
def cars(load_features):
    cars = load_features("stanford_cars")
    classes = 25
    train = np.flatnonzero(cars["y_train"] < classes)
    train = train[np.argsort(cars["y_train"][train], kind="stable")]
    train = train.reshape(classes, -1)[:, :4].ravel()  # 4 shots
    test = np.flatnonzero(cars["y_test"] < classes)[:60]
    return (
        cars["X_train"][train],
        cars["y_train"][train],
        cars["X_test"][test],
        cars["text_features"][:classes],
    )


def _classifiers(text):
    from sklearn_clip import (
        TipAdapterClassifier,
        TransCLIPClassifier,
        ZeroShotClassifier,
    )

    for name, cls in EMBEDDING_CLASSIFIERS:
        if cls is TransCLIPClassifier:
            # Its mixture is fitted on the test rows as unlabelled rows
            # (see the test); its estimator is zero-shot.
            yield (
                f"{name} (transductive)",
                lambda: TransCLIPClassifier(
                    ZeroShotClassifier(text_features=text), fallback="never"
                ),
            )
            continue
        parameters = inspect.signature(cls.__init__).parameters
        kwargs = {"device": "cpu"} if "device" in parameters else {}
        if "random_state" in parameters:
            kwargs["random_state"] = 0
        if "text_features" in parameters:
            yield f"{name} (text)", lambda c=cls, k=kwargs: c(text_features=text, **k)
        if "text_features" not in parameters or name in (
            "GDAClassifier",
            "CLIPClassifier",
        ):
            yield f"{name} (image-only)", lambda c=cls, k=kwargs: c(**k)
    yield (
        "TipAdapterClassifier (fine-tuned)",
        lambda: TipAdapterClassifier(
            text_features=text, fine_tune=True, device="cpu", random_state=0
        ),
    )


@pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning")
def test_a_row_is_scored_the_same_in_any_batch(cars):
    # float32 products round differently for one row than inside a batch
    # (up to 1e-6 on probabilities, and differently per CPU); the
    # classifiers score in float64, so a row's outputs agree to ~1e-14.
    X, y, X_test, text = cars
    names = []
    for name, make in _classifiers(text):
        clf = make()
        if "transductive" in name:
            clf.fit(np.vstack([X, X_test]), np.r_[y, np.full(len(X_test), -1)])
            assert clf.uses_unlabelled_
        else:
            clf.fit(X, y)
        names.append(name)
        for method in ("predict_proba", "decision_function"):
            score = getattr(clf, method)
            full = score(X_test)
            by_row = np.concatenate([score(X_test[i : i + 1]) for i in range(12)])
            split = np.concatenate([score(X_test[:37]), score(X_test[37:])])
            scale = max(1.0, np.abs(full).max())
            np.testing.assert_allclose(
                by_row, full[:12], rtol=0, atol=1e-10 * scale, err_msg=name
            )
            np.testing.assert_allclose(
                split, full, rtol=0, atol=1e-10 * scale, err_msg=name
            )
    # Every classifier on embeddings was tried; GDA and CLIPClassifier with
    # and without text, Tip-Adapter also fine-tuned.
    assert len(names) == len(EMBEDDING_CLASSIFIERS) + 3


def test_the_featurizer_is_not_a_classifier_on_embeddings():
    # (so the list above is the classifiers whose X is embeddings)
    assert CLIPFeaturizer not in [cls for _, cls in EMBEDDING_CLASSIFIERS]
    assert "VisualPromptClassifier" not in dict(EMBEDDING_CLASSIFIERS)


def test_forced_kernels_are_in_use():
    import torch

    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if forced is None:
        pytest.skip(
            "runs in the processes of test_checks_pass_under_each_kernel_choice"
        )
    assert torch.backends.cpu.get_cpu_capability() == forced.upper()


@pytest.mark.slow
@pytest.mark.parametrize(
    "choice",
    [
        pytest.param(
            choice,
            marks=pytest.mark.skipif(
                choice == "avx2" and not cpu_supports("avx2"),
                reason="this CPU has no AVX2: torch cannot be forced to it "
                "(it reads back DEFAULT)",
            ),
        )
        for choice in sorted(KERNEL_CHOICES)
    ],
)
def test_checks_pass_under_each_kernel_choice(choice):
    # The estimator checks and the tests above, in a process whose torch,
    # MKL and oneDNN kernels are forced to one instruction set: a tolerance
    # that holds only with this machine's kernels fails here, not on a
    # user's CPU.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::pytest.PytestUnknownMarkWarning",
            "tests/test_common.py",
            "tests/test_numerics.py",
            "-k",
            "not kernel_choice",
        ],
        cwd=ROOT,
        env={**os.environ, **KERNEL_CHOICES[choice]},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "test_forced_kernels_are_in_use PASSED" in result.stdout
