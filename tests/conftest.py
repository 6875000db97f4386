"""The test suite's fixtures live in :mod:`tests.support`; this file only loads them.

* :mod:`tests.support.servers`  PostgreSQL, Redis (and its leased databases), the S3 API
* :mod:`tests.support.shards`   a federation of shards as processes (``single_shard``,
                                ``federation``)

Helpers without fixtures (DICOM generators, app and cluster starters, the corpus) are
imported from :mod:`tests.support` by the modules that use them. Folder conftests add the
fixtures of one folder: ``e2e/`` (the single-shard cluster), ``browser/`` (Chromium and
OHIF), ``integration/qido/`` and ``integration/retrieve/`` (their app's ``client``).
"""

pytest_plugins = ["tests.support.servers", "tests.support.shards"]
