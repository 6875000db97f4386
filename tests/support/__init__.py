"""What the tests share: real servers, apps, workers, clusters, DICOM generators, corpus
files. Fixture modules are loaded by ``tests/conftest.py`` (``pytest_plugins``)."""
