"""Shared configuration for the test suite: the hypothesis settings profiles.

Pick one with the ``HYPOTHESIS_PROFILE`` environment variable: ``default`` (quick, for local
runs), ``ci`` (what ``.ci/run`` uses) or ``thorough`` (a long hunt before a release).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=400,
    deadline=None,
    print_blob=True,
    # Shared CI machines are slow and noisy; slow data generation there is not a bug.
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None)

settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "default"))
