"""Linear discriminants of Gaussian classes with one shrunk shared covariance."""

import numpy as np


def shrunk_linear_discriminant(means, covariance, shrinkage):
    """``(coef, intercept)`` of Gaussian classes with means ``means`` and the
    shared covariance ``covariance`` shrunk towards ``trace / d * I``:
    ``coef_k = S^-1 mu_k`` and ``intercept_k = -mu_k S^-1 mu_k / 2`` (the
    class log-likelihoods up to a term shared by all classes).

    ``covariance`` is overwritten.
    """
    n_features = covariance.shape[0]
    isotropic = np.trace(covariance) / n_features
    if isotropic == 0:
        raise ValueError(
            "all training embeddings are identical; a discriminant needs spread"
        )
    covariance *= 1 - shrinkage
    covariance[np.diag_indices(n_features)] += shrinkage * isotropic
    # Solve instead of inverting: S is symmetric positive definite.
    coef = np.linalg.solve(covariance, means.T).T
    intercept = -0.5 * np.einsum("kd,kd->k", means, coef)
    return coef, intercept
