"""Slicer-side shared code for the CardioSeg modules (MRML only, no Qt)."""
