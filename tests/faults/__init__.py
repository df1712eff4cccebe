"""Crash simulation and I/O fault injection over the file layer (see README.md here)."""
