"""One classifier that picks, or ensembles, the package's methods by
cross-validation on the training samples alone.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
from joblib import Parallel, delayed
from joblib.parallel import get_active_backend
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.base import ClassifierMixin, clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._attention_probe import AttentionProbeClassifier
from ._base import (
    BaseCLIPEstimator,
    ClassifierOutputMixin,
    TextClassesMixin,
    encode_labels,
    text_already_checked,
    validate_embeddings,
    warn_unused_parameters,
)
from ._clip_adapter import CLIPAdapterClassifier
from ._compat import Interval, StrOptions, _fit_context
from ._docstrings import CLASS_TEXT, CLIP_MODEL, fill_doc
from ._gda import GDAClassifier
from ._linear_probe import LinearProbeClassifier
from ._tip_adapter import TipAdapterClassifier
from ._validation import TEXT_PARAMETER_CONSTRAINTS
from ._zero_shot import ZeroShotClassifier
from ._zs_linear_probe import ZSLinearProbeClassifier


@dataclass(frozen=True)
class Candidate:
    """A method the classifier may choose: ``build(text, logit_scale, seed,
    device)`` returns it unfitted (``text`` is None for image-only methods).
    """

    build: Callable
    needs_text: bool


def _standard_scaler_lr(text, logit_scale, seed, device):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _text_head(cls, **params):
    def build(text, logit_scale, seed, device):
        names = cls().get_params()
        extra = {"random_state": seed} if "random_state" in names else {}
        # The attention probe learns its own scale (setting one warns).
        if cls is not AttentionProbeClassifier:
            extra["logit_scale"] = logit_scale
        return cls(text_features=text, device=device, **extra, **params)

    return Candidate(build, needs_text=True)


#: Every method the classifier can choose from, by the names the benchmark
#: and the docs use.
CANDIDATES = {
    "zero-shot": _text_head(ZeroShotClassifier),
    "Tip-Adapter": _text_head(TipAdapterClassifier),
    "Tip-Adapter-F": _text_head(TipAdapterClassifier, fine_tune=True),
    "GDA + zero-shot": _text_head(GDAClassifier, discriminant_weight="auto"),
    "ZS linear probe": _text_head(ZSLinearProbeClassifier),
    "attention probe": _text_head(AttentionProbeClassifier),
    "CLIP-Adapter": _text_head(CLIPAdapterClassifier),
    "linear probe": Candidate(
        lambda text, scale, seed, device: LinearProbeClassifier(
            random_state=seed, device=device
        ),
        needs_text=False,
    ),
    "StandardScaler + LR": Candidate(_standard_scaler_lr, needs_text=False),
    "GDA": Candidate(
        lambda text, scale, seed, device: GDAClassifier(), needs_text=False
    ),
}
#: ``candidates="text"``: the methods for data with class text.
TEXT_CANDIDATES = (
    "zero-shot",
    "Tip-Adapter",
    "Tip-Adapter-F",
    "GDA + zero-shot",
    "ZS linear probe",
    "attention probe",
    "CLIP-Adapter",
    "linear probe",
)
#: ``candidates="image-only"``: the methods that need no class text.
#: (``"StandardScaler + LR"`` is the linear probe's model fitted by
#: scikit-learn: within 0.2 points of it on every image-only benchmark set,
#: at five times its cost, so it is a candidate only by name.)
IMAGE_ONLY_CANDIDATES = ("linear probe", "GDA")
#: Every candidate from the simplest to the most flexible, for the
#: one-standard-error rule: training-free (closed-form) methods first, then
#: trained linear models, then trained non-linear heads.
SIMPLICITY = (
    "zero-shot",
    "Tip-Adapter",
    "GDA",
    "GDA + zero-shot",
    "StandardScaler + LR",
    "linear probe",
    "ZS linear probe",
    "Tip-Adapter-F",
    "attention probe",
    "CLIP-Adapter",
)
#: With one sample in some class there is nothing to cross-validate; these
#: fixed choices were made on held-out images of the training pools
#: (stanford_cars with text; the validation splits of caltech101,
#: oxford_pets and oxford_flowers without), never on a test split.
ONE_SAMPLE_RULE = {True: "Tip-Adapter-F", False: "linear probe"}
#: Log-probabilities are clipped here so that a zero probability (-inf) in
#: one member cannot veto a class the others agree on.
LOG_PROBA_FLOOR = -50.0
MAX_ENSEMBLE_ROUNDS = 20


def _fit_predict(estimator, X, y, train, test):
    """Fit on ``train`` rows, return log-probabilities of the ``test`` rows
    and the fit's wall time.
    """
    # The class text was checked once by the classifier itself, not by every
    # candidate (a context variable: no warnings filter changes under threads).
    with text_already_checked():
        start = time.perf_counter()
        estimator.fit(X[train], y[train])
        seconds = time.perf_counter() - start
    log_proba = estimator.predict_log_proba(X[test]) if test is not None else None
    return log_proba, seconds, estimator


def _accuracy(log_proba, y):
    return float(np.mean(np.argmax(log_proba, axis=1) == y))


def _log_loss(log_proba, y):
    return float(-np.mean(log_proba[np.arange(len(y)), y]))


def _fit_temperature(log_proba, y):
    """The temperature ``T`` minimising the log-loss of
    ``softmax(log_proba / T)`` (temperature scaling, Guo et al., 2017).
    """

    def loss(log_t):
        return _log_loss(log_softmax(log_proba / np.exp(log_t), axis=1), y)

    result = minimize_scalar(
        loss, bounds=(np.log(0.01), np.log(100.0)), method="bounded"
    )
    return float(np.exp(result.x))


def _blend(members, weights):
    """Weighted mean of calibrated log-probabilities, renormalised."""
    total = sum(w * member for w, member in zip(weights, members))
    return log_softmax(total / sum(weights), axis=1)


def _select_ensemble(calibrated, y, names, rounds):
    """Greedy ensemble selection with replacement (Caruana et al., 2004) on
    the out-of-fold log-loss, started from the best single candidate;
    ``rounds=0`` keeps that one.

    Returns ``{name: count}``; counts are the members' weights.
    """
    losses = {name: _log_loss(calibrated[name], y) for name in names}
    # Ties go to the earlier candidate (the cheaper, in the default order).
    best = min(names, key=lambda n: (losses[n], names.index(n)))
    counts, current = {best: 1}, losses[best]
    for _ in range(rounds):
        trials = []
        for name in names:
            trial = dict(counts)
            trial[name] = trial.get(name, 0) + 1
            blend = _blend([calibrated[n] for n in trial], list(trial.values()))
            trials.append((_log_loss(blend, y), names.index(name), trial))
        loss, _, trial = min(trials, key=lambda t: t[:2])
        if loss >= current:
            break
        current, counts = loss, trial
    return counts


def _one_standard_error_choice(out_of_fold, y, names):
    """The simplest candidate (earliest in :data:`SIMPLICITY`) whose
    out-of-fold error rate is within one paired standard error of the
    lowest (the one-standard-error rule, Hastie et al., The Elements of
    Statistical Learning, 7.10).

    Differences between close candidates on the training samples are noise
    more often than not; the simpler one then generalises at least as well,
    and it is the safer choice when held-out images differ from the
    training ones (the benchmark's training features average augmented
    views, its test images are single views: with the lowest error alone,
    GDA lost 0.6-1.9 points on oxford_pets' validation split).
    """
    errors = {n: (np.argmax(out_of_fold[n], axis=1) != y).astype(float) for n in names}
    best = min(names, key=lambda n: (errors[n].mean(), SIMPLICITY.index(n)))
    for name in sorted(names, key=SIMPLICITY.index):
        difference = errors[name] - errors[best]
        if difference.mean() <= difference.std() / np.sqrt(len(y)):
            return name
    return best  # pragma: no cover - best itself always qualifies


def _sample_losses(log_proba, y, scoring):
    if scoring == "log_loss":
        log_proba = np.maximum(log_proba, LOG_PROBA_FLOOR)
        calibrated = log_softmax(log_proba / _fit_temperature(log_proba, y), axis=1)
        return -calibrated[np.arange(len(y)), y]
    return (np.argmax(log_proba, axis=1) != y).astype(float)


def _not_clearly_beaten(log_probas, y, scoring, z=3.0):
    """Names whose mean loss on one fold is within ``z`` paired standard
    errors of the best candidate's (per-sample loss differences on the same
    held-out rows; the log-loss after temperature scaling on that fold).
    """
    losses = {n: _sample_losses(lp, y, scoring) for n, lp in log_probas.items()}
    best = min(losses, key=lambda n: losses[n].mean())
    kept = []
    for name, loss in losses.items():
        difference = loss - losses[best]
        noise = z * difference.std() / np.sqrt(len(y))
        if difference.mean() <= noise:
            kept.append(name)
    return kept


def _auto_folds(has_text):
    """``max_folds="auto"``: 2 with text-based candidates, whose trained
    heads dominate the cost (on stanford_cars 2 folds chose at least as well
    as 3-5 at every shot count, in half the time); 3 without (the
    image-only sets' validation splits: as good as 5 folds where 2 lost up
    to a point).
    """
    return 2 if has_text else 3


def _thread_count(n_jobs):
    """``n_jobs=None``: the number of intra-op threads torch would use
    (``torch.get_num_threads()``), since every candidate fit runs on one
    thread (the heads' thread policy); inside a
    :func:`joblib.parallel_config` that sets ``n_jobs``, that value.
    """
    if n_jobs is not None or get_active_backend()[1] is not None:
        return n_jobs
    return torch.get_num_threads()


def _resolve_candidates(candidates, has_text):
    if candidates == "auto":
        return list(TEXT_CANDIDATES if has_text else IMAGE_ONLY_CANDIDATES)
    if candidates == "text":
        return list(TEXT_CANDIDATES)
    if candidates == "image-only":
        return list(IMAGE_ONLY_CANDIDATES)
    names = list(dict.fromkeys(candidates))
    unknown = [name for name in names if name not in CANDIDATES]
    if unknown or not names:
        raise ValueError(
            f"candidates has unknown method names {unknown}; choose from "
            f"{list(CANDIDATES)}, or 'auto', 'text', 'image-only'."
        )
    return names


@fill_doc(clip_model=CLIP_MODEL, class_text=CLASS_TEXT)
class CLIPClassifier(
    TextClassesMixin, ClassifierOutputMixin, ClassifierMixin, BaseCLIPEstimator
):
    """The package's few-shot methods, chosen or ensembled for your data by
    cross-validation on the training samples.

    ``fit`` scores every candidate method by stratified k-fold
    cross-validation on ``(X, y)`` alone (no validation set, never a test
    split) and calibrates each one's probabilities by temperature scaling on
    its out-of-fold predictions. With the log-loss as the score (the default
    with class text) it builds a weighted ensemble by greedy selection on the
    out-of-fold log-loss (Caruana et al., 2004), started from the best single
    method; when no blend helps, that is the best single method. With
    accuracy (the default without text) it keeps one method: the simplest
    whose out-of-fold error is within one paired standard error of the
    lowest (the one-standard-error rule). The chosen methods are then
    refitted on all samples. Candidates clearly beaten on the first fold
    (their mean loss more than three paired standard errors above the best
    one's) are not cross-validated further.

    Every candidate fit runs on one thread (the thread policy of the heads,
    see the user guide's "Devices and threads"), and the fits run in
    parallel threads, as many as torch's intra-op threads by default: the
    cores a single torch fit would use, spent on several fits at once. So
    the result does not depend on ``n_jobs``, the joblib backend or the
    machine's load.

    With class text (``text_features``, ``class_names``, or string labels,
    which are then embedded as class names with CLIP once) the candidates are
    zero-shot, Tip-Adapter, Tip-Adapter-F, GDA + zero-shot, the ZS linear
    probe, the attention probe, CLIP-Adapter and the linear probe; without,
    the linear probe and GDA (StandardScaler + LogisticRegression, the same
    model as the linear probe at five times the cost, by name only). With only
    one sample in some class nothing can be cross-validated: then a fixed
    choice, made on held-out training-pool images of the package's benchmark
    sets, is fitted (Tip-Adapter-F with text, the linear probe without).

    Parameters
    ----------
    %(clip_model)s
    candidates : "auto", "text", "image-only" or list of str, default="auto"
        Methods to choose from, by name (``CANDIDATES`` in this module lists
        them: ``"zero-shot"``, ``"Tip-Adapter"``, ``"Tip-Adapter-F"``,
        ``"GDA + zero-shot"``, ``"ZS linear probe"``, ``"attention
        probe"``, ``"CLIP-Adapter"``, ``"linear probe"``,
        ``"StandardScaler + LR"``, ``"GDA"``). ``"auto"`` is ``"text"`` when
        class text is available (``text_features`` or ``class_names`` given,
        or string labels) and ``"image-only"`` otherwise.
    ensemble : bool, default=True
        With the log-loss as the score, blend several candidates when that
        improves the out-of-fold log-loss; False keeps the single best one.
        Accuracy always keeps one candidate (it is too coarse to weigh a
        blend: on the image-only benchmark sets, blends grown on accuracy
        lost up to 1.6 points against the chosen single method).
    scoring : {"auto", "accuracy", "log_loss"}, default="auto"
        Out-of-fold score that ranks candidates. ``"auto"`` is the log-loss
        with text-based candidates and accuracy without: the text-based
        heads' calibrated probabilities rank reliably by log-loss, while
        GDA's, without text, are poorly shaped at any temperature, so that
        the log-loss passed over it where it was the most accurate
        (oxford_pets, 4 shots: 4 points lost on held-out images). Measured on
        the package's benchmark sets (see ``benchmarks/README.md``).
    max_folds : int or "auto", default="auto"
        Cross-validation folds, fewer when the smallest class has fewer
        samples (its size, at least 2). ``"auto"`` is 2 with text-based
        candidates, whose trained heads dominate the cost (stanford_cars:
        2 folds chose at least as well as 3-5 at every shot count, in half
        the time), and 3 without.
    %(class_text)s
    device : str, default="auto"
        Device of the text encoder and of the trained heads (``"auto"``:
        CUDA when available).
    n_jobs : int or None, default=None
        Threads running candidate fits at once. ``None``: as many as torch's
        intra-op threads (``torch.get_num_threads()``, the cores by default;
        joblib's worker processes lower it), or the ``n_jobs`` of an
        enclosing :func:`joblib.parallel_config`. Each fit uses one thread,
        so ``n_jobs`` changes the speed, never the result.
    random_state : int, RandomState instance or None, default=None
        Seeds the folds and the trained candidates; an int makes ``fit``
        deterministic.
    verbose : int, default=0
        joblib's progress messages for the candidate fits.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels seen in ``fit``.
    candidates_ : list of str
        The methods considered.
    chosen_ : dict
        ``{method name: weight}`` of the methods in use; the weights sum to
        one (a single method has weight 1).
    estimators_ : dict
        The fitted chosen methods (fitted on the encoded labels
        ``0 .. n_classes - 1``), by name.
    temperatures_ : dict
        The temperature dividing each chosen method's log-probabilities.
    cv_results_ : dict of ndarray
        One row per candidate (``pandas.DataFrame(cv_results_)`` shows it):
        ``method``, ``status`` (``"cross-validated"``, ``"stopped after
        fold 1"``, ``"rule"``), ``n_folds``, ``val_accuracy`` (mean
        out-of-fold accuracy over the folds it ran), ``val_log_loss``
        (calibrated; NaN when stopped early), ``temperature``,
        ``fit_seconds`` (mean per fold) and ``weight`` in the ensemble.
    scoring_ : str
        The score used (``"auto"`` resolved); absent after the one-sample
        rule.
    selection_ : str
        How the choice was made: ``"cross-validation (k folds)"`` or
        ``"rule (one sample in some class)"``.
    text_features_ : ndarray of shape (n_classes, n_features) or None
        The class text embeddings given to the text-based candidates.
    logit_scale_ : float or None
        Their temperature.
    n_features_in_ : int

    See Also
    --------
    FewShotSplit : Held-out evaluation of any classifier, this one included.

    Notes
    -----
    The choice uses the training samples only, so it suits held-out
    evaluation as is: wrap it in ``cross_val_score`` to score it honestly.
    Cross-validated folds hold ``(k - 1) / k`` of the samples, so the choice
    is made at slightly fewer shots than the final fit.

    References
    ----------
    .. [1] Caruana et al., "Ensemble Selection from Libraries of Models",
       ICML 2004.
    .. [2] Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import CLIPClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-1, 1, (6, 8)), rng.normal(1, 1, (6, 8))])
    >>> y = [0] * 6 + [1] * 6
    >>> clf = CLIPClassifier(random_state=0).fit(X, y)
    >>> sorted(clf.cv_results_["method"].tolist())
    ['GDA', 'linear probe']
    >>> round(sum(clf.chosen_.values()), 6)
    1.0
    >>> clf.predict(X[:2]).tolist()
    [0, 0]
    """

    _parameter_constraints = {
        **TEXT_PARAMETER_CONSTRAINTS,
        "candidates": [StrOptions({"auto", "text", "image-only"}), list, tuple],
        "ensemble": ["boolean"],
        "scoring": [StrOptions({"auto", "accuracy", "log_loss"})],
        "max_folds": [Interval(Integral, 2, None, closed="left"), StrOptions({"auto"})],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }
    _fitted_attributes = (
        "classes_",
        "n_features_in_",
        "candidates_",
        "chosen_",
        "estimators_",
        "temperatures_",
        "cv_results_",
        "selection_",
        "text_features_",
        "logit_scale_",
    )

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        candidates="auto",
        ensemble=True,
        scoring="auto",
        max_folds="auto",
        templates="simple",
        class_names=None,
        text_features=None,
        logit_scale=None,
        precision="auto",
        device="auto",
        n_jobs=None,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.pretrained = pretrained
        self.candidates = candidates
        self.ensemble = ensemble
        self.scoring = scoring
        self.max_folds = max_folds
        self.templates = templates
        self.class_names = class_names
        self.text_features = text_features
        self.logit_scale = logit_scale
        self.precision = precision
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _text_available(self, classes):
        return (
            self.text_features is not None
            or self.class_names is not None
            or (classes.dtype.kind in "UO" and all(isinstance(c, str) for c in classes))
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Cross-validate the candidates, choose or blend them, refit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.
        y : array-like of shape (n_samples,)
            Labels: class names, or any labels (with ``class_names`` or
            ``text_features`` for the text-based methods).

        Returns
        -------
        self : CLIPClassifier
        """
        X, y = validate_embeddings(self, X, y, reset=True)
        # float64 throughout: every member then scores a row the same way
        # whatever rows come with it (scikit-learn's float32 path does not).
        X = np.asarray(X, dtype=np.float64)
        self.classes_, y_encoded = encode_labels(y)
        names = _resolve_candidates(
            self.candidates, self._text_available(self.classes_)
        )
        self.candidates_ = names
        has_text = any(CANDIDATES[name].needs_text for name in names)
        if has_text:
            self._fit_text(X, y_encoded)
        else:
            warn_unused_parameters(
                self,
                ["templates", "class_names", "logit_scale", "precision"],
                "without text-based candidates",
            )
            self.text_features_, self.logit_scale_ = None, None
        rng = check_random_state(self.random_state)
        split_seed, model_seed = (
            int(s) for s in rng.randint(np.iinfo(np.int32).max, size=2)
        )
        device = self.device
        unfitted = {
            name: CANDIDATES[name].build(
                self.text_features_ if CANDIDATES[name].needs_text else None,
                self.logit_scale_,
                model_seed,
                device,
            )
            for name in names
        }
        max_folds = self.max_folds
        if max_folds == "auto":
            max_folds = _auto_folds(has_text)
        n_folds = min(max_folds, int(np.bincount(y_encoded).min()))
        # Threads: the fits spend their time in torch and BLAS, which release
        # the GIL, and no worker process has to import torch (measured: 31 s
        # against 38 s with processes, stanford_cars, 16 shots, n_jobs=2).
        parallel = Parallel(
            n_jobs=_thread_count(self.n_jobs), verbose=self.verbose, prefer="threads"
        )
        if n_folds < 2:
            self._choose_by_rule(names, has_text)
        else:
            folds = list(
                StratifiedKFold(n_folds, shuffle=True, random_state=split_seed).split(
                    X, y_encoded
                )
            )
            self._choose_by_cross_validation(unfitted, X, y_encoded, folds, parallel)
        everything = np.arange(len(y_encoded))
        fitted = parallel(
            delayed(_fit_predict)(clone(unfitted[name]), X, y_encoded, everything, None)
            for name in self.chosen_
        )
        self.estimators_ = {
            name: est for name, (_, _, est) in zip(self.chosen_, fitted)
        }
        return self

    def make_candidate(self, name, *, random_state=None):
        """One candidate method, unfitted, as ``fit`` builds it.

        The public way to fit one candidate yourself, to compare it with the
        classifier's choice: it gets this classifier's class text
        (``text_features_``), temperature (``logit_scale_``) and ``device``.

        Parameters
        ----------
        name : str
            A candidate's name, as ``cv_results_["method"]`` and the
            ``candidates`` parameter give them.
        random_state : int, RandomState instance or None, default=None
            Seeds the candidate's training (``fit`` draws the seeds of its
            own fits from the classifier's ``random_state``).

        Returns
        -------
        estimator : classifier
            Unfitted; it takes the same ``X`` as this classifier.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_clip import CLIPClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = np.vstack([rng.normal(-1, 1, (6, 8)), rng.normal(1, 1, (6, 8))])
        >>> y = [0] * 6 + [1] * 6
        >>> clf = CLIPClassifier(random_state=0).fit(X, y)
        >>> gda = clf.make_candidate("GDA").fit(X, y)
        >>> type(gda).__name__, gda.score(X, y)
        ('GDAClassifier', 1.0)
        """
        check_is_fitted(self)
        if name not in CANDIDATES:
            raise ValueError(
                f"no candidate method {name!r}; choose from {list(CANDIDATES)}"
            )
        candidate = CANDIDATES[name]
        if candidate.needs_text and self.text_features_ is None:
            raise ValueError(
                f"{name!r} needs class text, and this classifier was fitted "
                f"without any (its candidates: {self.candidates_}); give "
                "text_features or class_names, or use string labels"
            )
        text = self.text_features_ if candidate.needs_text else None
        return candidate.build(text, self.logit_scale_, random_state, self.device)

    def _choose_by_rule(self, names, has_text):
        if self.scoring != "auto" or not self.ensemble:
            warn_unused_parameters(
                self,
                ["scoring", "ensemble", "max_folds"],
                "with one sample in some class (nothing to cross-validate)",
            )
        rule = ONE_SAMPLE_RULE[has_text]
        name = rule if rule in names else names[0]
        self.selection_ = "rule (one sample in some class)"
        self.chosen_ = {name: 1.0}
        self.temperatures_ = {name: 1.0}
        nan = np.full(len(names), np.nan)
        self.cv_results_ = {
            "method": np.array(names, dtype=object),
            "status": np.array(
                ["rule" if n == name else "not fitted" for n in names], dtype=object
            ),
            "n_folds": np.zeros(len(names), dtype=int),
            "val_accuracy": nan,
            "val_log_loss": nan.copy(),
            "temperature": np.array([1.0 if n == name else np.nan for n in names]),
            "fit_seconds": nan.copy(),
            "weight": np.array([1.0 if n == name else 0.0 for n in names]),
        }

    def _choose_by_cross_validation(self, unfitted, X, y, folds, parallel):
        names = list(unfitted)
        n_classes = len(self.classes_)

        def run(jobs):
            return parallel(
                delayed(_fit_predict)(clone(unfitted[name]), X, y, train, test)
                for name, (train, test) in jobs
            )

        scoring = self.scoring
        if scoring == "auto":
            scoring = "log_loss" if self.text_features_ is not None else "accuracy"
        # Fold 1 for everyone, then the rest only for those not clearly beaten.
        first = dict(zip(names, run([(name, folds[0]) for name in names])))
        held_out = folds[0][1]
        accuracy = {n: _accuracy(first[n][0], y[held_out]) for n in names}
        survivors = _not_clearly_beaten(
            {n: first[n][0] for n in names}, y[held_out], scoring
        )
        rest = [(n, fold) for n in survivors for fold in folds[1:]]
        later = run(rest)
        out_of_fold = {n: np.zeros((len(y), n_classes)) for n in survivors}
        seconds = {n: [first[n][1]] for n in names}
        for n in survivors:
            out_of_fold[n][held_out] = first[n][0]
        for (n, (_, test)), (log_proba, fit_seconds, _) in zip(rest, later):
            out_of_fold[n][test] = log_proba
            seconds[n].append(fit_seconds)
        calibrated, temperature = {}, {}
        for n in survivors:
            log_proba = np.maximum(out_of_fold[n], LOG_PROBA_FLOOR)
            temperature[n] = _fit_temperature(log_proba, y)
            calibrated[n] = log_softmax(log_proba / temperature[n], axis=1)
        if scoring == "log_loss":
            counts = _select_ensemble(
                calibrated, y, survivors, MAX_ENSEMBLE_ROUNDS if self.ensemble else 0
            )
        else:
            counts = {_one_standard_error_choice(out_of_fold, y, survivors): 1}
        self.scoring_ = scoring
        total = sum(counts.values())
        self.chosen_ = {n: counts[n] / total for n in survivors if n in counts}
        self.temperatures_ = {n: temperature[n] for n in self.chosen_}
        self.selection_ = f"cross-validation ({len(folds)} folds)"
        self.cv_results_ = {
            "method": np.array(names, dtype=object),
            "status": np.array(
                [
                    "cross-validated" if n in survivors else "stopped after fold 1"
                    for n in names
                ],
                dtype=object,
            ),
            "n_folds": np.array([len(folds) if n in survivors else 1 for n in names]),
            "val_accuracy": np.array(
                [
                    _accuracy(out_of_fold[n], y) if n in survivors else accuracy[n]
                    for n in names
                ]
            ),
            "val_log_loss": np.array(
                [
                    _log_loss(calibrated[n], y) if n in survivors else np.nan
                    for n in names
                ]
            ),
            "temperature": np.array([temperature.get(n, np.nan) for n in names]),
            "fit_seconds": np.array([np.mean(seconds[n]) for n in names]),
            "weight": np.array([self.chosen_.get(n, 0.0) for n in names]),
        }

    def _logits(self, X):
        X = np.asarray(X, dtype=np.float64)  # as in fit
        # Members were fitted on encoded labels: their columns are classes_
        # (after with_classes, in the order _member_columns undoes).
        blend = sum(
            weight
            * np.maximum(self.estimators_[name].predict_log_proba(X), LOG_PROBA_FLOOR)
            / self.temperatures_[name]
            for name, weight in self.chosen_.items()
        )
        columns = getattr(self, "_member_columns", None)
        return blend if columns is None else blend[:, columns]

    def _check_open_vocabulary(self):
        check_is_fitted(self)
        if not all(hasattr(est, "with_classes") for est in self.estimators_.values()):
            raise AttributeError(
                f"CLIPClassifier chose {list(self.chosen_)}, not all of which can "
                "predict over new classes; fit with candidates=['zero-shot', "
                "'Tip-Adapter', 'CLIP-Adapter'] for open vocabulary."
            )
        return True

    def _on_classes_changed(self, previous):
        # Members were fitted on codes 0 .. n_classes - 1: a class they know
        # keeps its code (Tip-Adapter's cache keys carry it), new ones get new
        # codes; member columns come in sorted-code order. Temperatures stay.
        known = {c: i for i, c in enumerate(previous._member_classes().tolist())}
        codes, fresh = [], len(known)
        for label in self.classes_.tolist():
            if label in known:
                codes.append(known[label])
            else:
                codes.append(fresh)
                fresh += 1
        order = np.argsort(codes)
        self._member_labels = self.classes_[order]
        self._member_columns = np.argsort(order)
        self.estimators_ = {
            name: est.with_classes(
                np.asarray(codes)[order], text_features=self.text_features_[order]
            )
            for name, est in previous.estimators_.items()
        }

    def _member_classes(self):
        """The labels of the members' columns, in column order."""
        labels = getattr(self, "_member_labels", None)
        return self.classes_ if labels is None else labels
