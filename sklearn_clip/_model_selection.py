"""Few-shot sampling that is reproducible and never looks at test data."""

from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state

from ._compat import Interval, validate_params
from ._warnings import warn


@validate_params(
    {
        "y": ["array-like"],
        "n_shots": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def few_shot_indices(y, n_shots, random_state=None):
    """Draw ``n_shots`` random sample indices per class.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels.
    n_shots : int
        Samples per class. A class with fewer samples contributes all of them
        (a warning names it).
    random_state : int, RandomState instance or None, default=None
        Seed of the draw; the same seed gives the same indices.

    Returns
    -------
    indices : ndarray of int
        Sorted indices into ``y``.

    Examples
    --------
    >>> from sklearn_clip import few_shot_indices
    >>> few_shot_indices([0, 0, 0, 1, 1, 1], n_shots=2, random_state=0).size
    4
    """
    y = np.asarray(y)
    rng = check_random_state(random_state)
    chosen, short = [], []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if members.size < n_shots:
            short.append(label)
            chosen.append(members)
        else:
            chosen.append(rng.choice(members, size=n_shots, replace=False))
    if short:
        warn(
            f"{len(short)} classes have fewer than {n_shots} samples and "
            f"contribute all they have: {np.asarray(short[:10]).tolist()}"
            f"{' ...' if len(short) > 10 else ''}",
            UserWarning,
        )
    return np.sort(np.concatenate(chosen))


def sample_few_shot(X, y, n_shots, random_state=None):
    """Draw ``n_shots`` labelled examples per class from a training pool.

    Parameters
    ----------
    X : array-like or sequence of length n_samples
        Embeddings or images.
    y : array-like of shape (n_samples,)
        Labels.
    n_shots : int
        Samples per class.
    random_state : int, RandomState instance or None, default=None
        Seed of the draw.

    Returns
    -------
    X_few, y_few
        The sampled rows, in their original order.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import sample_few_shot
    >>> X, y = np.arange(12).reshape(6, 2), np.array([0, 0, 0, 1, 1, 1])
    >>> X_few, y_few = sample_few_shot(X, y, n_shots=1, random_state=0)
    >>> y_few.tolist()
    [0, 1]
    """
    indices = few_shot_indices(y, n_shots, random_state)
    if isinstance(X, np.ndarray) or hasattr(X, "iloc"):
        X_few = X[indices] if isinstance(X, np.ndarray) else X.iloc[indices]
    else:
        X_few = [X[i] for i in indices]
    return X_few, np.asarray(y)[indices]


class FewShotSplit:
    """Cross-validation splitter for few-shot model selection.

    Each split trains on ``n_shots`` randomly drawn samples per class and
    validates on the rest of the data it is given. Give it only your
    labelled pool (never the test set): ``GridSearchCV(head,
    grid, cv=FewShotSplit(4))`` then selects hyperparameters the way they
    will be used, with ``n_shots`` examples per class, and the test split
    stays untouched.

    Parameters
    ----------
    n_shots : int
        Training samples per class in each split.
    n_splits : int, default=5
        Number of random splits.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws; an int makes the splits reproducible.

    See Also
    --------
    sample_few_shot : Draw one few-shot training set.
    sklearn.model_selection.GridSearchCV : Use this splitter as its ``cv``.

    References
    ----------
    .. [1] Zhou et al., "Learning to Prompt for Vision-Language Models",
       IJCV 2022 (the few-shot protocol: k labelled images per class, several
       random draws).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import FewShotSplit
    >>> y = np.repeat([0, 1, 2], 4)
    >>> cv = FewShotSplit(n_shots=1, n_splits=2, random_state=0)
    >>> [(len(train), len(valid)) for train, valid in cv.split(y, y)]
    [(3, 9), (3, 9)]
    """

    def __init__(self, n_shots, n_splits=5, random_state=None):
        if not isinstance(n_shots, Integral) or n_shots < 1:
            raise ValueError(f"n_shots must be a positive integer, got {n_shots!r}")
        if not isinstance(n_splits, Integral) or n_splits < 1:
            raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}")
        self.n_shots = n_shots
        self.n_splits = n_splits
        self.random_state = random_state

    def split(self, X, y, groups=None):
        """Yield ``(train, validation)`` index arrays.

        Parameters
        ----------
        X : array-like or None
            Ignored; only ``y`` decides the splits.
        y : array-like of shape (n_samples,)
            Labels: each split trains on ``n_shots`` samples of every class.
        groups : None
            Ignored.

        Yields
        ------
        train : ndarray of int
            ``n_shots`` indices per class.
        validation : ndarray of int
            The remaining indices.

        Raises
        ------
        ValueError
            If a class has no more than ``n_shots`` samples: nothing would be
            left to validate it on.
        """
        y = np.asarray(y)
        labels, counts = np.unique(y, return_counts=True)
        short = labels[counts <= self.n_shots]
        if short.size:
            raise ValueError(
                f"FewShotSplit(n_shots={self.n_shots}) needs more than "
                f"{self.n_shots} samples of every class to leave some for "
                f"validation; these classes have too few: {short[:10].tolist()}"
            )
        rng = check_random_state(self.random_state)
        every = np.arange(len(y))
        for _ in range(self.n_splits):
            train = few_shot_indices(y, self.n_shots, random_state=rng)
            yield train, np.setdiff1d(every, train)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Return the number of splits.

        Parameters
        ----------
        X, y, groups : object
            Ignored.

        Returns
        -------
        int
            ``n_splits``.
        """
        return self.n_splits

    def __repr__(self):
        return (
            f"FewShotSplit(n_shots={self.n_shots}, n_splits={self.n_splits}, "
            f"random_state={self.random_state!r})"
        )
