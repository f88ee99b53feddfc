"""What every room shares, below data and models: the checkpoint format (checkpoint), atomic file
writing without torch (files), the exit codes and one-line errors (errors), the normalisation
arithmetic (normalize), device and precision (runtime), the confusion-matrix metrics (metrics),
sliding windows (sliding), pictures (visualize), torchrun helpers (distributed), the caffemodel
reader (caffemodel) and downloading (downloads: fetch, a lock per file, SHA-256 recorded on first
download, sidecars of converted files).

Imports fcn.config and nothing else of fcn. Nothing is imported here: ``import fcn.core`` stays cheap
and each module says what it costs (files, errors and normalize import no torch)."""
