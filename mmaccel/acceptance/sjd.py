"""SJD's probabilistic convergence criterion (Teng et al. 2024, "Accelerating Auto-regressive Text-to-Image
Generation with Training-free Speculative Jacobi Decoding")."""

from __future__ import annotations

from .exact import ExactRule


class SJDRule(ExactRule):
    """Accept a Jacobi-window token with probability ``min(1, p_t(x) / p_{t-1}(x))``.

    ``p_{t-1}`` is the distribution the token was drawn from at the previous Jacobi iteration, which the Jacobi
    drafter hands over as ``q`` (one-hot for a fresh initialisation). With that ``q`` the criterion is speculative
    sampling's test, and on rejection SJD resamples from ``norm(max(p - q, 0))``, so it keeps the exact rule's
    arithmetic and its losslessness; the name exists so that a user finds the paper's method under its name.
    """

    name = "sjd"
