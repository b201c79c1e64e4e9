"""One module per container format, each a ``Container`` (../container.py) and its DETECTOR:
the format's name, a test of the file's first 4 KiB and last 512 bytes, and the opener."""
