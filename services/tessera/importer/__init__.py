"""``tessera store``: bulk import of DICOM files from disk into an archive over STOW-RS.

Walks folders, zip files and DICOMDIRs (:mod:`.files`), sends the instances found in
STOW-RS requests of several instances each, several at once (:mod:`.upload`), shows
progress, resumes after an interruption without re-sending what the archive already
acknowledged (a journal beside the report), and ends with a summary of the failures and
their reasons, also written as JSON (``--report``).
"""
