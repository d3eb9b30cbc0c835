"""
``make parity``: the resumable operators run against the providers' own unit tests.

The upstream test modules come from the providers' sdists (PyPI); they run twice, once on the stock
operators and once with each stock class replaced by its resumable subclass at import time, test
bodies untouched. Modules: :mod:`.cases` (which operator, which tests), :mod:`.sources` (sdists,
scratch tree, test-only dependencies), :mod:`.plugin` (the pytest plugin of each run),
:mod:`.tokens` (the payload compared without our idempotency token), :mod:`.expectations` (the
classified differences), :mod:`.report` and :mod:`.main`.
"""
