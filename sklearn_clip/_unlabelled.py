"""The marker of unlabelled rows in ``y``, and splitting ``y`` by it."""

import numpy as np

#: Label of a row without a label, as scikit-learn's semi-supervised
#: estimators mark it. In string labels, the string ``"-1"`` (what
#: ``np.asarray(["cat", -1])`` makes of it).
UNLABELLED = -1


def labelled_mask(y):
    """Boolean mask of the rows of ``y`` that carry a label.

    A row is unlabelled when its label is the integer ``-1`` (also ``-1.0``
    in float labels), or the string ``"-1"`` in string labels; object arrays
    may mix strings with the integer ``-1``.

    Parameters
    ----------
    y : array-like of shape (n_samples,)

    Returns
    -------
    mask : ndarray of bool, shape (n_samples,)
        True where the row is labelled.

    Examples
    --------
    >>> labelled_mask(["cat", -1, "dog", "-1"]).tolist()
    [True, False, True, False]
    >>> labelled_mask([3, -1, 0]).tolist()
    [True, False, True]
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional; got shape {y.shape}.")
    if y.dtype.kind in "iuf":
        return y != UNLABELLED
    if y.dtype.kind == "U":
        return y != str(UNLABELLED)
    if y.dtype.kind == "S":
        return y != str(UNLABELLED).encode()
    if y.dtype.kind == "O":
        return np.array([not _is_marker(v) for v in y], dtype=bool)
    if y.dtype.kind == "b":
        return np.ones(len(y), dtype=bool)
    raise ValueError(f"Labels of dtype {y.dtype} are not supported.")


def _is_marker(value):
    if isinstance(value, str):
        return value == str(UNLABELLED)
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, int | np.integer | float | np.floating):
        return value == UNLABELLED
    return False
