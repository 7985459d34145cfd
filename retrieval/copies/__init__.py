"""Content identity: is this the same recording, not just a similar sound?

:mod:`.features` (copy frames, computed at ingest with ``--copies``), :mod:`.match`
(alignment and verification), :mod:`.duplicates` (``retrieve duplicates``), :mod:`.locate`
(``retrieve locate --match copy``), :mod:`.frames` (frames of a named file, or filled in).
"""
