"""The file backend: a store directory on local disks (see ``_backend``)."""

from ._backend import FileBackend as FileBackend

__all__ = ["FileBackend"]
