"""Few-shot sampling that is reproducible and never looks at test data."""

import warnings
from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params


@validate_params(
    {
        "y": ["array-like"],
        "n_shots": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def few_shot_indices(y, n_shots, random_state=None):
    """Indices of ``n_shots`` randomly chosen samples per class.

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
        warnings.warn(
            f"{len(short)} classes have fewer than {n_shots} samples and "
            f"contribute all they have: {short[:10]}",
            UserWarning,
            stacklevel=2,
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
