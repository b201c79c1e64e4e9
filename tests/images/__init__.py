"""Test helpers for offline images: the Windows-like tree of samples (tree.py), a writer of
registry hives (hive.py) and builders of volumes, partitioned disks and forensic containers
(build.py), all made at test time from real tools without mounting; and their own tests."""
