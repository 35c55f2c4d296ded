"""Learning from unlabelled images too: a classifier refined by a Gaussian
mixture over labelled and unlabelled embeddings (after TransCLIP).
"""

from numbers import Integral, Real

import numpy as np
import torch
from scipy import sparse
from scipy.special import log_softmax
from sklearn.base import ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length

from ._base import (
    BaseCLIPEstimator,
    ClassifierOutputMixin,
    encode_labels,
    l2_normalize,
    validate_embeddings,
)
from ._compat import HasMethods, Interval, StrOptions, _fit_context
from ._torch_utils import head_threads
from ._unlabelled import UNLABELLED, labelled_mask
from ._zero_shot import ZeroShotClassifier

#: Floor of the estimator's log-probabilities: finite where one underflows.
_LOG_PROBA_FLOOR = float(np.log(np.finfo(np.float64).tiny))

#: Weights of the mixture's log-likelihood tried for new images.
_NEW_IMAGE_WEIGHTS = (0.0,) + tuple(2.0**power for power in range(-8, 1))

#: Unlabelled rows per class each half needs to cross-fit that weight (and
#: at least as many rows as dimensions).
_MIN_ROWS_PER_CLASS_AND_HALF = 4

#: Updates of the assignments per update of the mixture (TransCLIP's inner
#: block-majorise-minimise steps).
_ASSIGNMENT_STEPS = 5

_CPU = torch.device("cpu")

#: Rows per block of the similarity products (bounds their memory).
_BLOCK_ROWS = 1024

#: Pseudo-rows per class in the estimated class proportions.
_PROPORTION_PSEUDO_ROWS = 1.0

#: A pool row is off the labelled images when its cosine similarity to the
#: nearest labelled image is below this quantile of the labelled images'
#: similarities to their nearest other labelled image (see
#: benchmarks/unlabelled_safety.py for how it was chosen).
_OFF_POOL_QUANTILE = 0.01

#: A class is dominant in the pool when the estimator gives it this share
#: of the rows, and :data:`_DOMINANT_OVER_BALANCED` times a balanced share:
#: twice the largest share the estimators gave a class on the validation
#: pools (caltech101's 9.7 %, its real share; elsewhere at most 3.9 / K).
_DOMINANT_SHARE = 0.2
_DOMINANT_OVER_BALANCED = 4.0

#: Pool rows (on the labelled images) per class below which the mixture is
#: not used (benchmarks/unlabelled_safety.py).
_MIN_POOL_ROWS_PER_CLASS = 4.0


class TransCLIPClassifier(
    MetaEstimatorMixin, ClassifierOutputMixin, ClassifierMixin, BaseCLIPEstimator
):
    """Improve any classifier of CLIP embeddings with unlabelled images.

    Rows of ``y`` marked ``-1`` (``"-1"`` in string labels) are unlabelled,
    as in scikit-learn's semi-supervised estimators. ``fit`` trains
    ``estimator`` on the labelled rows, then fits a Gaussian mixture (one mean
    per class, one shared covariance shrunk as :class:`GDAClassifier` shrinks
    it) to all rows, labelled rows fixed to their class, unlabelled
    rows pulled toward the estimator's prediction (a Kullback-Leibler term)
    and toward their nearest neighbours' classes (a Laplacian term), after
    TransCLIP [1]_. With no label at all, the zero-shot classifier is the
    prior.

    Two ways to use it:

    - **Transductive**: pass the images you want labelled as unlabelled rows
      to ``fit`` and read :attr:`transduction_` (or call ``predict`` on
      them). Honest when those images are the whole collection to classify,
      and no choice is made on their true labels.
    - **Inductive**: pass a pool of unlabelled images (for example the
      images nobody labelled yet), then ``predict`` new images: the mixture
      acts as a linear classifier added to the estimator's log-probabilities.
      Only the mixture's parameters are kept, never the unlabelled images.

    A safety rule decides, without any test label, which unlabelled images
    the mixture may use (``fallback="auto"``; the decision and its reason are
    in :attr:`safety_`). Label-free checks run at every shot count, zero-shot
    and 1 shot included: a pool row less similar to its nearest labelled
    image than 99 % of the labelled images are to theirs is set aside (it
    keeps the estimator's label); with fewer than 4 remaining pool rows per
    class, or when the estimator gives a class over a fifth of the pool and
    the mixture gives it less (a pool mostly of one class), the classifier
    is the estimator alone. With at least ``cv`` labelled images in every
    class, stratified folds of the labelled rows are also hidden among the
    unlabelled rows, and the mixture is kept only when it beats the
    estimator on them by more than one paired standard error. Every
    threshold was chosen on validation pools (``benchmarks/unlabelled_safety.py``).

    Parameters
    ----------
    estimator : classifier, default=None
        The inductive method, fitted on the labelled rows; any classifier
        with ``predict_proba`` (every classifier of this package,
        :class:`CLIPClassifier` included). None means
        ``ZeroShotClassifier()``.
    classes : array-like, default=None
        All class labels, for classes without a labelled image (then
        ``estimator`` must be a :class:`ZeroShotClassifier`). None means the
        labels found in ``y``. List only classes the images can belong to:
        a class with no image among them draws a few images to itself
        (measured: the test images of 40 cars classes with all 196 classes
        listed, 42.8 % against zero-shot's 54.7 %).
    prior_weight : float, default=1.0
        Weight of the estimator's log-probabilities against the mixture's
        (TransCLIP's lambda; the paper uses 0.5 with a few-shot prior and 1
        with zero-shot).
    shrinkage : float in [0, 1], default=0.4
        Weight of the isotropic target ``trace(S) / d * I`` in the mixture's
        shrunk covariance, as in :class:`GDAClassifier`, whose default it
        shares (measured best of 0.1, 0.4 and Ledoit-Wolf's estimate on the
        validation splits above).
    n_neighbors : int, default=3
        Neighbours of each image in the Laplacian term; 0 turns it off.
    n_iter : int, default=10
        Updates of the mixture's means and covariance (a fixed count).
    likelihood_weight : float, default=1.0
        Weight of the mixture's log-likelihood (an inverse temperature;
        0.3 and 0.1 gained less on the validation pools).
    class_proportions : {"estimated", "balanced"}, default="estimated"
        ``"estimated"``: the mixture learns the pool's class proportions (a
        mixing prior updated with the assignments, one pseudo-row per
        class); ``"balanced"``: TransCLIP's equal classes.
    fallback : {"auto", "never"}, default="auto"
        ``"auto"`` applies the safety rule above; ``"never"`` always uses the
        unlabelled images.
    cv : int, default=2
        Folds of the safety rule.
    random_state : int, RandomState instance or None, default=None
        Seeds the safety rule's folds.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted class labels.
    estimator_ : classifier
        ``estimator`` fitted on all labelled rows.
    uses_unlabelled_ : bool
        Whether predictions use the mixture (False: no unlabelled rows, or
        the safety rule fell back to ``estimator_``).
    safety_ : dict
        The safety rule's decision: ``uses_unlabelled``, ``reason`` (a
        sentence), ``n_unlabelled``, ``n_off_pool`` (rows set aside as unlike
        the labelled images), ``off_pool_threshold`` and
        ``dominant_classes``.
    transduction_ : ndarray of shape (n_samples,)
        The label of every row passed to ``fit``: the given label of labelled
        rows, the mixture's joint assignment for unlabelled ones (the
        estimator's for rows set aside). It is not ``predict`` on the same
        rows: ``predict`` scores each image alone, with the mixture weighted
        by ``new_image_weight_``, and the two differ on some rows.
    coef_ : ndarray of shape (n_classes, n_features) or None
        The mixture as a linear classifier (class log-likelihoods up to a
        shared term); None when not ``uses_unlabelled_``.
    intercept_ : ndarray of shape (n_classes,) or None
    new_image_weight_ : float
        Weight of the mixture for images not in ``fit`` (0: ``predict`` is
        the estimator's), cross-fitted on the unlabelled rows.
    cv_results_ : dict or None
        The safety rule's held-out accuracies per fold, ``"estimator"`` and
        ``"with_unlabelled"``; None where it did not run.
    n_features_in_ : int

    See Also
    --------
    CLIPClassifier : The inductive methods, chosen for your data.
    sklearn.semi_supervised.SelfTrainingClassifier : Self-training, the same
        ``-1`` convention.

    Notes
    -----
    Differences from [1]_, chosen on the validation splits of caltech101,
    oxford_pets and oxford_flowers and on the Stanford Cars training pool
    (never a test split): the mixture's covariance is a full one shrunk
    towards the isotropic, not a diagonal one (a diagonal covariance fitted
    to a few hundred images predicted new images at 11 % where zero-shot
    gave 58 %); and a labelled image weighs as much as an unlabelled one.

    ``score`` counts labelled rows only, so that ``cross_val_score`` and
    ``GridSearchCV`` on partly labelled ``y`` score what is known with their
    default ``scoring=None``; a named scorer (``"accuracy"``) counts the
    ``-1`` rows as errors. To tune the mixture itself, score with
    :func:`transductive_scorer`, which hides each test fold's labels inside
    a fit and scores its transduction.

    References
    ----------
    .. [1] Zanella, Gérin, Ben Ayed, "Boosting Vision-Language Models with
       Transduction", NeurIPS 2024, arXiv:2406.01837.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import TransCLIPClassifier, ZeroShotClassifier
    >>> rng = np.random.default_rng(0)
    >>> text = np.eye(2, 8)                                 # two class prototypes
    >>> X = np.repeat(text, 20, axis=0) + 0.3 * rng.normal(size=(40, 8))
    >>> y = np.full(40, -1)                                 # nothing labelled
    >>> clf = TransCLIPClassifier(
    ...     ZeroShotClassifier(text_features=text), classes=[0, 1]
    ... ).fit(X, y)
    >>> clf.uses_unlabelled_
    True
    >>> clf.transduction_.shape
    (40,)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict_proba"]), None],
        "classes": ["array-like", None],
        "prior_weight": [Interval(Real, 0, None, closed="neither")],
        "shrinkage": [Interval(Real, 0, 1, closed="right")],
        "n_neighbors": [Interval(Integral, 0, None, closed="left")],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "likelihood_weight": [Interval(Real, 0, None, closed="neither")],
        "class_proportions": [StrOptions({"estimated", "balanced"})],
        "fallback": [StrOptions({"auto", "never"})],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
    }
    _fitted_attributes = (
        "classes_",
        "n_features_in_",
        "estimator_",
        "uses_unlabelled_",
        "transduction_",
        "coef_",
        "intercept_",
        "cv_results_",
        "new_image_weight_",
        "safety_",
    )

    def __init__(
        self,
        estimator=None,
        *,
        classes=None,
        prior_weight=1.0,
        shrinkage=0.4,
        n_neighbors=3,
        n_iter=10,
        likelihood_weight=1.0,
        class_proportions="estimated",
        fallback="auto",
        cv=2,
        random_state=None,
    ):
        self.estimator = estimator
        self.classes = classes
        self.prior_weight = prior_weight
        self.shrinkage = shrinkage
        self.n_neighbors = n_neighbors
        self.n_iter = n_iter
        self.likelihood_weight = likelihood_weight
        self.class_proportions = class_proportions
        self.fallback = fallback
        self.cv = cv
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the estimator on the labelled rows, then the mixture on all.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings, labelled and unlabelled.
        y : array-like of shape (n_samples,)
            Labels; ``-1`` (``"-1"`` among strings) marks an unlabelled row.

        Returns
        -------
        self : TransCLIPClassifier
        """
        given = y
        X, y = validate_embeddings(self, X, y, reset=True)
        X = np.asarray(X, dtype=np.float64)
        # Markers are read from a list as given: validation turns a list
        # mixing strings and -1.0 into strings ("-1.0"), and one mixing
        # integers with "-1" into strings ("0", "1", ...).
        listed = _list_labels(given, y)
        labelled = labelled_mask(listed)
        y_labelled = _plain_labels(listed[labelled])
        if self.classes is not None:
            classes, _ = encode_labels(np.asarray(self.classes))
            if not labelled_mask(classes).all():
                raise ValueError(
                    "classes contains the marker of unlabelled rows (-1 or '-1'); "
                    "a class cannot be named so."
                )
            unknown = np.setdiff1d(y_labelled, classes)
            if len(unknown):
                raise ValueError(
                    f"y has labels missing from classes: {unknown.tolist()[:10]}."
                )
        elif labelled.any():
            classes, _ = encode_labels(y_labelled)
        else:
            raise ValueError(
                "Every row of y is unlabelled (-1): pass classes=[...] (and a "
                "ZeroShotClassifier as estimator) to classify them."
            )
        self.classes_ = classes
        if len(classes) < 2:
            raise ValueError(
                "TransCLIPClassifier needs samples of at least 2 classes; got 1 "
                f"class: {classes.tolist()} (rows labelled -1 are unlabelled)"
            )
        base = ZeroShotClassifier() if self.estimator is None else self.estimator
        self.estimator_ = self._fit_estimator(base, X[labelled], y_labelled)
        codes = np.searchsorted(classes, y_labelled)
        X_labelled, X_unlabelled = X[labelled], X[~labelled]
        self.coef_ = self.intercept_ = self.cv_results_ = None
        self.new_image_weight_ = 0.0
        # The estimator scores each unlabelled row once; the mixtures share it.
        log_proba = self._estimator_log_proba(self.estimator_, X_unlabelled)
        on_pool, safety = self._safety_rule(base, X_labelled, codes, X_unlabelled)
        self.uses_unlabelled_ = safety["uses_unlabelled"]
        transduction = np.empty(len(y), dtype=classes.dtype)
        transduction[labelled] = y_labelled
        unlabelled_labels = classes[log_proba.argmax(axis=1)]
        if self.uses_unlabelled_:
            assignments, self.coef_, self.intercept_ = self._mixture(
                X_labelled, codes, X_unlabelled[on_pool], log_proba[on_pool]
            )
            estimated = log_proba[on_pool].argmax(axis=1)
            mixed = assignments.argmax(axis=1)
            shrinking = self._shrinking_dominant_classes(estimated, mixed)
            if self.fallback == "auto" and len(shrinking):
                # A pool mostly of one class that the mixture spreads over
                # the others distorts every class's mean: measured, the other
                # classes lost 2-3 points when only the dominant class's rows
                # kept the estimator's labels. So nothing of the mixture is
                # kept.
                self.uses_unlabelled_ = False
                self.coef_ = self.intercept_ = None
                safety["uses_unlabelled"] = False
                safety["dominant_classes"] = classes[shrinking]
                safety["reason"] = (
                    f"the estimator gives classes {classes[shrinking].tolist()[:10]} "
                    "over a fifth of the pool and the mixture gives them less: a "
                    "pool mostly of one class, which the mixture cannot model"
                )
            else:
                unlabelled_labels[on_pool] = classes[mixed]
                self.new_image_weight_ = self._new_image_weight(
                    X_labelled, codes, X_unlabelled[on_pool], log_proba[on_pool]
                )
        transduction[~labelled] = unlabelled_labels
        self.transduction_ = transduction
        self.safety_ = safety
        return self

    def _safety_rule(self, base, X_labelled, codes, X_unlabelled):
        """``(on_pool, safety)``: which unlabelled rows the mixture may use,
        and the rule's record (see the ``safety_`` attribute).
        """
        n_classes = len(self.classes_)
        on_pool = np.ones(len(X_unlabelled), dtype=bool)
        safety = {
            "uses_unlabelled": True,
            "reason": "",
            "n_unlabelled": len(X_unlabelled),
            "n_off_pool": 0,
            "off_pool_threshold": None,
            "dominant_classes": self.classes_[:0],
        }

        def decide(uses, reason):
            safety.update(uses_unlabelled=uses, reason=reason)
            return on_pool, safety

        if not len(X_unlabelled):
            return decide(False, "no unlabelled rows")
        if self.fallback == "never":
            return decide(True, 'fallback="never": every unlabelled row is used')
        if len(X_labelled) >= 2:
            # Label-free: a pool row far from every labelled image (pet
            # photos in a cars pool) is not one of the classes; it keeps the
            # estimator's label and stays out of the mixture.
            unit_labelled = l2_normalize(X_labelled)
            with head_threads(_CPU):
                reference = _nearest_similarity(
                    unit_labelled, unit_labelled, leave_one_out=True
                )
                nearest = _nearest_similarity(l2_normalize(X_unlabelled), unit_labelled)
            threshold = float(np.quantile(reference, _OFF_POOL_QUANTILE))
            on_pool = nearest >= threshold
            safety.update(
                n_off_pool=int((~on_pool).sum()), off_pool_threshold=threshold
            )
        n_on_pool = int(on_pool.sum())
        if n_on_pool < max(1, _MIN_POOL_ROWS_PER_CLASS * n_classes):
            return decide(
                False,
                f"{n_on_pool} of {len(X_unlabelled)} unlabelled rows are as close to "
                f"the labelled images as these are to each other: fewer than "
                f"{_MIN_POOL_ROWS_PER_CLASS:g} per class",
            )
        per_class = np.bincount(codes, minlength=n_classes)
        if per_class.min() < self.cv:
            checked = (
                "the label-free checks passed"
                if len(X_labelled) >= 2
                else "no labelled images to compare the pool with"
            )
            return decide(
                True,
                f"fewer than cv={self.cv} labelled rows in some class: no "
                f"held-out check; {checked}",
            )
        helps, margin = self._held_out_check(
            base, X_labelled, codes, X_unlabelled[on_pool]
        )
        return decide(
            helps,
            f"held-out labelled rows: the mixture {'gains' if margin >= 0 else 'loses'}"
            f" {abs(margin) * 100:.2f} points against the estimator alone",
        )

    def _fit_estimator(self, base, X, y):
        """``base`` fitted on labelled rows, predicting over ``classes_``."""
        missing = np.setdiff1d(self.classes_, y)
        if not len(missing):
            return clone(base).fit(X, y)
        if not isinstance(base, ZeroShotClassifier):
            raise ValueError(
                f"Classes {missing.tolist()[:10]} have no labelled row; only a "
                f"ZeroShotClassifier can predict them, not {type(base).__name__}."
            )
        # Zero-shot learns nothing from images: one stand-in row per class.
        stand_in = np.zeros((len(self.classes_), self.n_features_in_))
        return clone(base).fit(stand_in, self.classes_)

    def _estimator_log_proba(self, estimator, X):
        if not len(X):
            return np.zeros((0, len(self.classes_)))
        with np.errstate(divide="ignore"):
            log_proba = np.log(estimator.predict_proba(X))
        return np.maximum(log_proba, _LOG_PROBA_FLOOR)

    def _shrinking_dominant_classes(self, estimated, mixed):
        """Codes of the classes to which the estimator gives a large share
        of the pool (over a fifth, and over :data:`_DOMINANT_OVER_BALANCED`
        times a balanced share) and the mixture a smaller one: a pool mostly
        of one class, which the mixture spreads over others (measured: pets,
        1 shot, 900 copies of one class and 100 others, that class fell from
        55 % to 10 %).
        """
        n_classes = len(self.classes_)
        share = np.bincount(estimated, minlength=n_classes) / len(estimated)
        mixed_share = np.bincount(mixed, minlength=n_classes) / len(mixed)
        dominant = share >= max(_DOMINANT_SHARE, _DOMINANT_OVER_BALANCED / n_classes)
        return np.flatnonzero(dominant & (mixed_share < share))

    def _held_out_check(self, base, X_labelled, codes, X_unlabelled):
        """``(helps, gain)``: stratified folds of the labelled rows, hidden
        among the unlabelled ones, classified by the estimator alone and with
        the mixture; ``gain`` is the mixture's accuracy less the estimator's,
        and ``helps`` is whether it exceeds one paired standard error.
        """
        folds = StratifiedKFold(
            self.cv, shuffle=True, random_state=check_random_state(self.random_state)
        )
        results = {"estimator": [], "with_unlabelled": []}
        differences = []  # per held-out row: mixture right - estimator right
        for train, held_out in folds.split(X_labelled, codes):
            estimator = clone(base).fit(X_labelled[train], self.classes_[codes[train]])
            hidden = np.vstack([X_labelled[held_out], X_unlabelled])
            log_proba = self._estimator_log_proba(estimator, hidden)
            assignments, _, _ = self._mixture(
                X_labelled[train], codes[train], hidden, log_proba
            )
            truth = codes[held_out]
            right_alone = log_proba[: len(held_out)].argmax(1) == truth
            right_mixture = assignments[: len(held_out)].argmax(1) == truth
            results["estimator"].append(right_alone.mean())
            results["with_unlabelled"].append(right_mixture.mean())
            differences.append(right_mixture.astype(float) - right_alone)
        self.cv_results_ = {k: np.array(v) for k, v in results.items()}
        differences = np.concatenate(differences)
        gain = float(differences.mean())
        standard_error = float(differences.std() / np.sqrt(len(differences)))
        # The mixture is kept only when it beat the estimator on the held-out
        # rows by more than one paired standard error. The check favours the
        # mixture (its estimators learn from 1 - 1/cv of the shots, so the
        # mixture corrects weaker ones): on the stanford_cars training pool
        # at 8 shots the pool lost 0.83 points where the held-out rows, with
        # no margin, kept the mixture (benchmarks/unlabelled_safety.py).
        return gain > standard_error, gain

    def _mixture(self, X_labelled, codes, X_unlabelled, log_proba):
        """Fit the mixture, with the estimator's log-probabilities of the
        unlabelled rows as prior; return the unlabelled rows' class
        assignments and the mixture as a linear classifier ``(coef, intercept)``.

        Dense algebra runs in torch on the package's head-thread policy (one
        intra-op thread in the calling thread, see :func:`head_threads`), so
        that a fit beside busy processes gets its fair share of a core.
        """
        with head_threads(_CPU):
            return self._mixture_on_one_thread(
                X_labelled, codes, X_unlabelled, log_proba
            )

    def _mixture_on_one_thread(self, X_labelled, codes, X_unlabelled, log_proba):
        n_classes = len(self.classes_)
        n_unlabelled = len(X_unlabelled)
        # Unit-norm rows, as CLIP compares them: the mixture ignores norms.
        unit = l2_normalize(np.vstack([X_unlabelled, X_labelled]))
        graph = _neighbour_graph(unit, n_unlabelled, self.n_neighbors)
        features = torch.from_numpy(unit)
        prior = torch.from_numpy(self.prior_weight * log_proba)
        # Centred, so that the scatter below does not cancel digits.
        center = features.mean(dim=0)
        centered = features - center
        total_scatter = centered.T @ centered  # the same at every update
        assignments = torch.zeros(len(features), n_classes, dtype=torch.float64)
        assignments[:n_unlabelled] = torch.softmax(prior, dim=1)
        assignments[n_unlabelled + np.arange(len(codes)), codes] = 1.0
        log_proportions = torch.zeros(n_classes, dtype=torch.float64)
        for _ in range(self.n_iter):
            mass = assignments.sum(dim=0)
            means = (assignments.T @ centered) / mass.clamp(min=1e-12)[:, None]
            covariance = _within_class_covariance(total_scatter, means, mass)
            coef, intercept = _shrunk_discriminant(means, covariance, self.shrinkage)
            coef, intercept = (
                coef * self.likelihood_weight,
                intercept * self.likelihood_weight,
            )
            if self.class_proportions == "estimated":
                log_proportions = _log_proportions(assignments[:n_unlabelled])
            log_likelihood = (
                centered[:n_unlabelled] @ coef.T + intercept + log_proportions
            )
            for _ in range(_ASSIGNMENT_STEPS):
                neighbours = torch.from_numpy(graph @ assignments.numpy())
                assignments[:n_unlabelled] = torch.softmax(
                    prior + log_likelihood + neighbours, dim=1
                )
        # On unit-norm embeddings (not centred); see _log_likelihood.
        intercept = intercept + log_proportions - coef @ center
        return (
            assignments[:n_unlabelled].numpy().copy(),
            coef.numpy(),
            intercept.numpy(),
        )

    def _new_image_weight(self, X_labelled, codes, X_unlabelled, log_proba):
        """Weight of the mixture's log-likelihood for images not in ``fit``.

        A mixture fitted to few images per class fits them, not new ones
        (measured: zero-shot's 58 % fell to 30 % on new cars images with two
        unlabelled images per class). Cross-fitted on the unlabelled rows:
        a mixture is fitted to each half; each scores the other half, and the
        weight that best reproduces the assignments the other half's own
        mixture gave is kept (1 when the mixture generalises, near 0 when it
        does not). No label is used.
        """
        half = len(X_unlabelled) // 2
        n_classes, n_features = len(self.classes_), X_unlabelled.shape[1]
        if half < max(n_features, _MIN_ROWS_PER_CLASS_AND_HALF * n_classes):
            # Too few rows for the halves' mixtures to say anything: with two
            # unlabelled cars images per class every weight above 1/128 lost
            # ground on new images, yet the cross-fit chose 1/8.
            return 0.0
        halves = next(
            KFold(
                2, shuffle=True, random_state=check_random_state(self.random_state)
            ).split(X_unlabelled)
        )
        fits = [
            self._mixture(X_labelled, codes, X_unlabelled[rows], log_proba[rows])
            for rows in halves
        ]
        prior, log_likelihood, targets = [], [], []
        # Each half's mixture scores the other half, against the assignments
        # the other half's own mixture gave it: two fits on disjoint rows.
        for (_, coef, intercept), (scored_assignments, _, _), scored in zip(
            fits, fits[::-1], halves[::-1]
        ):
            prior.append(log_proba[scored])
            log_likelihood.append(
                _log_likelihood(X_unlabelled[scored], coef, intercept)
            )
            targets.append(scored_assignments)
        prior = self.prior_weight * np.vstack(prior)
        log_likelihood, targets = np.vstack(log_likelihood), np.vstack(targets)
        losses = [
            -np.sum(targets * log_softmax(prior + weight * log_likelihood, axis=1))
            for weight in _NEW_IMAGE_WEIGHTS
        ]
        return float(_NEW_IMAGE_WEIGHTS[int(np.argmin(losses))])

    def _logits(self, X):
        X = np.asarray(X, dtype=np.float64)
        log_proba = self._estimator_log_proba(self.estimator_, X)
        if not self.uses_unlabelled_ or self.new_image_weight_ == 0:
            return log_proba
        return log_softmax(
            self.prior_weight * log_proba
            + self.new_image_weight_ * _log_likelihood(X, self.coef_, self.intercept_),
            axis=1,
        )

    def score(self, X, y, sample_weight=None):
        """Accuracy on the labelled rows of ``(X, y)`` (``-1`` rows skipped).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        check_consistent_length(X, y, sample_weight)
        y = _list_labels(y, np.asarray(y))
        keep = labelled_mask(y)
        if not keep.any():
            raise ValueError("score needs labelled rows; every row of y is -1.")
        X = X[keep] if hasattr(X, "shape") else [x for x, k in zip(X, keep) if k]
        weights = None if sample_weight is None else np.asarray(sample_weight)[keep]
        return super().score(X, _plain_labels(y[keep]), sample_weight=weights)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        base = ZeroShotClassifier() if self.estimator is None else self.estimator
        base_tags = base.__sklearn_tags__()
        tags.classifier_tags.poor_score = base_tags.classifier_tags.poor_score
        tags.input_tags.allow_nan = False
        return tags


def _plain_labels(y):
    """Labelled rows of an object array mixing strings with -1, as a plain
    array (strings or numbers).
    """
    if y.dtype != object or not len(y):
        return y
    if all(isinstance(v, str) for v in y):
        return y.astype(str)
    if all(isinstance(v, Real) and not isinstance(v, bool | np.bool_) for v in y):
        return np.asarray(y.tolist())  # integers stay integers
    return y


def _log_likelihood(X, coef, intercept):
    """The mixture's class log-likelihoods (up to a shared term) of ``X``."""
    return l2_normalize(np.asarray(X, dtype=np.float64)) @ coef.T + intercept


def _within_class_covariance(total, means, mass):
    """``sum_ik z_ik (x_i - mu_k)(x_i - mu_k)^T`` over rows less classes (the
    pooled estimate, as in LDA), from the total scatter of the centred rows;
    the total covariance where the classes leave no spread (each row its own
    class). Torch tensors.
    """
    n_rows, n_classes = float(mass.sum()), len(means)
    within = total - (means.T * mass) @ means
    within = (within + within.T) / 2  # exactly symmetric
    if float(torch.trace(within)) <= 1e-9 * float(torch.trace(total)):
        return total / n_rows
    return within / max(n_rows - n_classes, 1.0)


def _shrunk_discriminant(means, covariance, shrinkage):
    """:func:`shrunk_linear_discriminant` on torch tensors (one thread)."""
    n_features = covariance.shape[0]
    isotropic = float(torch.trace(covariance)) / n_features
    if isotropic == 0:
        raise ValueError(
            "all training embeddings are identical; a discriminant needs spread"
        )
    covariance = covariance * (1 - shrinkage)
    covariance.diagonal().add_(shrinkage * isotropic)
    coef = torch.linalg.solve(covariance, means.T).T
    intercept = -0.5 * (means * coef).sum(dim=1)
    return coef, intercept


def _log_proportions(assignments):
    """Log class proportions of the unlabelled rows' soft assignments, with
    :data:`_PROPORTION_PSEUDO_ROWS` pseudo-rows per class (a Dirichlet prior
    that keeps an emptied class able to come back), shifted to mean 0.
    """
    counts = assignments.sum(dim=0) + _PROPORTION_PSEUDO_ROWS
    log_proportions = torch.log(counts / counts.sum())
    return log_proportions - log_proportions.mean()


def _list_labels(given, validated):
    """The labels of ``validated``, but from ``given`` where that is a flat
    list or tuple mixing strings with numbers (kept an object array, so that
    -1.0 stays a number rather than the string "-1.0").
    """
    if not isinstance(given, list | tuple) or len(given) != len(validated):
        return validated
    kinds = {isinstance(v, str) for v in given}
    if len(kinds) < 2 or any(isinstance(v, list | tuple) for v in given):
        return validated
    return np.asarray(given, dtype=object)


def _neighbour_graph(unit, n_rows, n_neighbors):
    """Sparse affinities of the first ``n_rows`` rows of ``unit`` (unit-norm
    rows) to all rows: each one's ``n_neighbors`` nearest other rows (cosine),
    weighted by their non-negative cosine similarity; shape
    ``(n_rows, len(unit))``. Torch on the calling thread's intra-op threads,
    in blocks: no n x n matrix is built.
    """
    n_neighbors = min(n_neighbors, len(unit) - 1)
    if n_neighbors <= 0 or n_rows == 0:
        return sparse.csr_matrix((n_rows, len(unit)))
    others = torch.from_numpy(unit.astype(np.float32))
    index = np.empty((n_rows, n_neighbors), dtype=np.int64)
    for start in range(0, n_rows, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n_rows)
        similarity = others[start:stop] @ others.T
        # Never a row's own entry (rows may repeat).
        similarity[torch.arange(stop - start), torch.arange(start, stop)] = -np.inf
        index[start:stop] = similarity.topk(n_neighbors, dim=1).indices.numpy()
    similarity = np.einsum("id,ikd->ik", unit[:n_rows], unit[index]).clip(min=0)
    rows = np.repeat(np.arange(n_rows), n_neighbors)
    return sparse.csr_matrix(
        (similarity.ravel(), (rows, index.ravel())), shape=(n_rows, len(unit))
    )


def _nearest_similarity(rows, references, leave_one_out=False):
    """Cosine similarity of each of ``rows`` to its nearest row of
    ``references`` (both unit-norm); with ``leave_one_out`` (``rows`` is
    ``references``), to its nearest other row. Torch, in blocks.
    """
    rows = torch.from_numpy(np.asarray(rows, dtype=np.float32))
    references = torch.from_numpy(np.asarray(references, dtype=np.float32))
    nearest = np.empty(len(rows))
    for start in range(0, len(rows), _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, len(rows))
        similarity = rows[start:stop] @ references.T
        if leave_one_out:
            block = torch.arange(stop - start)
            similarity[block, block + start] = -np.inf
        nearest[start:stop] = similarity.max(dim=1).values.numpy()
    return nearest


class TransductiveScorer:
    """Score a :class:`TransCLIPClassifier` (or a pipeline ending in one)
    transductively: the labelled rows of the test fold are hidden among the
    unlabelled rows of one fit on all of ``X``, and its ``transduction_`` of
    them is scored.

    ``score`` (and ``scoring=None``) score ``predict`` on the test fold, the
    inductive use, where a small pool gives new images no mixture weight: so
    settings of the mixture (``n_neighbors``, ``shrinkage``, ...) tie there.
    This scorer measures the mixture itself. Make it with
    :func:`transductive_scorer` on the same ``X, y`` given to ``fit`` of the
    search; the test fold's rows are found in ``X`` by their values.

    Each call fits a clone of the estimator once more, on all rows.
    """

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def __call__(self, estimator, X_test, y_test):
        X_all = np.asarray(self.X)
        y_all = _list_labels(self.y, np.asarray(self.y))
        rows = _rows_of(X_all, np.asarray(X_test))
        y_test = _list_labels(y_test, np.asarray(y_test))
        keep = labelled_mask(y_test)
        if not keep.any():
            raise ValueError("the test fold has no labelled row to score")
        marker = "-1" if y_all.dtype.kind in "US" else UNLABELLED
        y_hidden = np.array(y_all, dtype=object)
        y_hidden[rows] = marker
        if y_all.dtype != object:
            y_hidden = y_hidden.astype(y_all.dtype)
        fitted = clone(estimator).fit(X_all, y_hidden)
        final = fitted.steps[-1][1] if hasattr(fitted, "steps") else fitted
        labels = final.transduction_[rows[keep]]
        truth = _plain_labels(y_test[keep])
        return float(np.mean(labels == truth))


def transductive_scorer(X, y):
    """A scorer for :class:`~sklearn.model_selection.GridSearchCV` (and
    ``cross_val_score``) that tunes :class:`TransCLIPClassifier`'s mixture.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        All rows given to the search's ``fit``.
    y : array-like of shape (n_samples,)
        Their labels, ``-1`` for unlabelled rows.

    Returns
    -------
    scorer : TransductiveScorer
        ``scorer(estimator, X_test, y_test)``: the accuracy of a fit on all
        of ``X`` with the test fold's labels hidden, on the test fold's
        labelled rows.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import GridSearchCV, StratifiedKFold
    >>> from sklearn_clip import TransCLIPClassifier, transductive_scorer
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> X = np.repeat(np.eye(2, 8), 30, axis=0) + 0.3 * rng.normal(size=(60, 8))
    >>> y = np.repeat([0, 1], 30)
    >>> y[::3] = -1
    >>> search = GridSearchCV(
    ...     TransCLIPClassifier(LogisticRegression(), fallback="never"),
    ...     {"n_neighbors": [0, 3]},
    ...     scoring=transductive_scorer(X, y),
    ...     cv=StratifiedKFold(2),
    ... ).fit(X, y)
    >>> search.best_params_["n_neighbors"] in (0, 3)
    True
    """
    return TransductiveScorer(X, y)


def _rows_of(X_all, X_part):
    """Indices in ``X_all`` of the rows of ``X_part`` (by value; a repeated
    row takes the next unused copy).
    """
    where = {}
    for index, row in enumerate(X_all):
        where.setdefault(row.tobytes(), []).append(index)
    rows = []
    for row in np.asarray(X_part, dtype=X_all.dtype):
        copies = where.get(row.tobytes())
        if not copies:
            raise ValueError(
                "a test row is not among the rows given to transductive_scorer: "
                "give it the same X as the search's fit"
            )
        rows.append(copies.pop(0))
    return np.asarray(rows, dtype=np.int64)
