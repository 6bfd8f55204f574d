"""CardioSeg training and inference: pure Python, no Slicer."""
