"""Benchmark harness: Tessera against Debian's Orthanc + DICOMweb plugin (``make bench``).

Modules: :mod:`bench.dataset` (seeded synthetic DICOM set, cached under ``bench/.data``),
:mod:`bench.orthanc` (the baseline server), :mod:`bench.cluster` (the Tessera cluster),
:mod:`bench.workloads` (STOW / QIDO / WADO measurements), :mod:`bench.report` (tables and
result files) and :mod:`bench.run` (the command line).
"""
