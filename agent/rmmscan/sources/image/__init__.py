"""Files inside an offline disk image, as candidates (rmmscan image).

Layers, each its own module: ``container.py`` (the evidence file's format, recognised by
content: a read-only, sized byte source) beside ``containers/`` (raw, EWF, VMDK, VHD/VHDX,
QCOW2), ``volumes.py`` (the partitions, or a bare volume), ``snapshots.py`` (the Volume
Shadow Copies of an NTFS volume, each a volume of its own), ``filesystem.py`` (the walk of one
file system and its files as candidates), ``registry.py`` (the machine's name and id from its
own hives) and ``evidence.py`` (the evidence id that scopes the scan cache).

Like every source it must not import ``inspect`` or anything above the sources layer: it says
where files are and how to read them, never what they are.
"""
