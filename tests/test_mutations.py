"""The suite catches what its tests claim to: each critical path broken on
purpose in a scratch copy of the package, the tests that cover it run there
in a fresh process, and they must fail.

A mutation edits the scratch copy's source: it replaces one exact piece of
code (which must occur exactly once, so that a refactoring that moves it
fails here by name instead of silently testing nothing), or appends code that
wraps a public surface (``fit``, ``__setstate__``, ``predict_proba``) for
modules whose internals are changing.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import FEATURES, _require

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Mutation:
    """A deliberate breakage of ``module`` (a path in the package) and the
    tests that must catch it (node ids, run with ``-x``)."""

    module: str
    tests: tuple
    old: str = ""  # replaced by ``new``; empty: ``new`` is appended
    new: str = ""
    data: tuple = ()  # paths of ../shared/data the tests read

    def apply(self, package):
        path = package / self.module
        source = path.read_text()
        if self.old:
            count = source.count(self.old)
            assert count == 1, (
                f"mutation anchor found {count} times in {self.module} (expected "
                f"once): update the mutation to the code\n{self.old}"
            )
            source = source.replace(self.old, self.new)
        else:
            source += "\n\n" + textwrap.dedent(self.new)
        path.write_text(source)


TRANSCLIP_FALLBACK_NEVER_FIRES = """
    # Mutation: the safety rule never falls back (as fallback="never").
    def _mutant_fit(self, X, y, _fit=TransCLIPClassifier.fit):
        fallback = self.fallback
        self.fallback = "never"
        try:
            return _fit(self, X, y)
        finally:
            self.fallback = fallback

    TransCLIPClassifier.fit = _mutant_fit
"""

TRANSCLIP_MIXTURE_LOST_ON_LOAD = """
    # Mutation: a loaded estimator's mixture layer is zeroed.
    def _mutant_setstate(self, state, _setstate=TransCLIPClassifier.__setstate__):
        _setstate(self, state)
        if getattr(self, "coef_", None) is not None:
            self.coef_ = np.zeros_like(self.coef_)
            self.intercept_ = np.zeros_like(self.intercept_)

    TransCLIPClassifier.__setstate__ = _mutant_setstate
"""

TRANSCLIP_RETURNS_THE_ESTIMATORS_OUTPUT = """
    # Mutation: the estimator's outputs are returned unchanged, for new images
    # and for the unlabelled rows of the fit.
    def _mutant_fit(self, X, y, _fit=TransCLIPClassifier.fit):
        from ._unlabelled import labelled_mask

        _fit(self, X, y)
        unlabelled = ~labelled_mask(np.asarray(y, dtype=object))
        self.transduction_ = self.transduction_.copy()
        if unlabelled.any():
            self.transduction_[unlabelled] = self.estimator_.predict(
                np.asarray(X)[unlabelled]
            )
        return self

    TransCLIPClassifier.fit = _mutant_fit
    for _name in ("predict", "predict_proba", "predict_log_proba"):
        setattr(
            TransCLIPClassifier,
            _name,
            lambda self, X, _name=_name: getattr(self.estimator_, _name)(X),
        )
"""

CARS = FEATURES / "stanford_cars.npz"
PETS = FEATURES / "oxford_pets.npz"
TRANSCLIP = "tests/test_transclip.py::"
DAMAGED_PAGE = (
    "tests/distributed/test_format.py::test_a_damaged_data_page_is_never_returned"
)

MUTATIONS = {
    "Parquet pages written without checksums": Mutation(
        "distributed/_format.py",
        (DAMAGED_PAGE,),
        old="write_table(table, sink, write_page_checksum=True)",
        new="write_table(table, sink, write_page_checksum=False)",
    ),
    "Parquet page checksums not verified on read": Mutation(
        "distributed/_format.py",
        (DAMAGED_PAGE,),
        old="page_checksum_verification=True",
        new="page_checksum_verification=False",
    ),
    "heads keep torch's thread count": Mutation(
        "_torch_utils.py",
        (
            "tests/test_threads.py::"
            "test_a_head_trains_and_predicts_with_one_thread_and_restores_the_setting",
            "tests/test_threads.py::test_the_setting_is_restored_when_a_fit_fails",
        ),
        old="    if not value:\n        return 1\n",
        new="    if not value:\n        return None\n",
    ),
    "an estimator module imports another room's private name absolutely": Mutation(
        "_gda.py",
        ("tests/test_layout.py",),
        new="""
        def _mutant():
            from sklearn_clip._bench import _check_source

            return _check_source
        """,
    ),
    "TransCLIP's fallback never fires": Mutation(
        "_transclip.py",
        (
            TRANSCLIP + "test_a_pool_of_other_things_is_set_aside_without_labels",
            TRANSCLIP + "test_a_pool_mostly_of_one_class_falls_back",
        ),
        new=TRANSCLIP_FALLBACK_NEVER_FIRES,
        data=(CARS, PETS),
    ),
    "TransCLIP returns the estimator's output unchanged": Mutation(
        "_transclip.py",
        (
            TRANSCLIP + "test_few_shot_gains_from_the_unlabelled_images",
            TRANSCLIP + "test_inductive_use_predicts_new_images",
        ),
        new=TRANSCLIP_RETURNS_THE_ESTIMATORS_OUTPUT,
        data=(CARS,),
    ),
    "TransCLIP's mixture lost on load": Mutation(
        "_transclip.py",
        (TRANSCLIP + "test_the_mixture_survives_saving_and_loading",),
        new=TRANSCLIP_MIXTURE_LOST_ON_LOAD,
        data=(CARS,),
    ),
}

#: Mutations today's tests let through, each waiting for the test that
#: catches it (strict: the case fails once it is caught, to be flipped).
NOT_CAUGHT_YET = {}


def scratch_copy(tmp_path):
    """The package, its tests and pyproject.toml copied to ``tmp_path/repo``,
    with ../shared beside it as beside the repository."""
    repo = tmp_path / "repo"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "sklearn_clip", repo / "sklearn_clip", ignore=skip)
    shutil.copytree(ROOT / "tests", repo / "tests", ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", repo)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (tmp_path / "shared").symlink_to(shared)
    return repo


def run_tests(repo, tests):
    """pytest on ``tests`` in ``repo`` (its package first on the path) in a
    fresh process; ``(exit code, output)``."""
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        + ["-p", "no:randomly", "-W", "ignore::pytest.PytestUnknownMarkWarning"]
        + list(tests),
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_scratch_copy_is_what_its_tests_import(tmp_path):
    repo = scratch_copy(tmp_path)
    code = "import sklearn_clip, sys; print(sklearn_clip.__file__)"
    imported = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(imported) == repo / "sklearn_clip" / "__init__.py"


def test_every_mutation_applies_to_todays_code(tmp_path):
    repo = scratch_copy(tmp_path)
    for name, mutation in MUTATIONS.items():
        before = (repo / "sklearn_clip" / mutation.module).read_text()
        mutation.apply(repo / "sklearn_clip")
        after = (repo / "sklearn_clip" / mutation.module).read_text()
        assert after != before, name
        compile(after, mutation.module, "exec")  # still valid Python
        (repo / "sklearn_clip" / mutation.module).write_text(before)


def test_every_mutation_names_tests_that_exist(tmp_path):
    # A renamed test would leave its mutation untested (pytest exits 4 or 5,
    # which the xfail case would take for "not caught yet").
    repo = scratch_copy(tmp_path)
    tests = sorted({test for m in MUTATIONS.values() for test in m.tests})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"]
        + ["-p", "no:cacheprovider", *tests],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def mutant_runs(tmp_path_factory):
    """``{mutation name: (exit code, output)}``, None where the data its tests
    read is absent; the mutants run two at a time (each is a fresh process
    importing torch: the suite itself keeps one core busy)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(name):
        mutation = MUTATIONS[name]
        if not all(path.exists() for path in mutation.data):
            return None
        repo = scratch_copy(tmp_path_factory.mktemp("mutant"))
        mutation.apply(repo / "sklearn_clip")
        return run_tests(repo, mutation.tests)

    workers = min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(MUTATIONS, pool.map(run, MUTATIONS)))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(strict=True, reason=NOT_CAUGHT_YET[name])]
            if name in NOT_CAUGHT_YET
            else [],
        )
        for name in MUTATIONS
    ],
)
def test_the_tests_covering_a_path_fail_when_it_is_broken(name, mutant_runs):
    if mutant_runs[name] is None:
        for path in MUTATIONS[name].data:
            _require(path)  # skips, or fails under CI=true
    code, output = mutant_runs[name]
    assert code not in (4, 5), f"{name}: its tests were not found\n{output}"
    # 1: tests ran and failed (2-5: interrupted, internal or usage error, or
    # nothing collected: the mutant was not tested).
    assert code == 1, f"{name}: the tests let it through (exit {code})\n{output}"
    assert "FAILED" in output or " failed" in output, output
