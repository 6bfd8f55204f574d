"""Qt/Slicer parts shared by the CardioSeg modules: dependency installation, and the widget base
class that CatheterSeg and HeartSeg specialise (their Logic lives in CardioSegLib, without Qt).

Layering: modules -> CardioSegUI -> CardioSegLib -> Training. This package may import qt, ctk,
vtk, slicer and CardioSegLib at module level (CardioSegLib must not import qt or ctk); torch,
MONAI and the model code (Training.predictor, Training.modelfile) are imported only inside
functions, because Slicer imports the modules at start-up, before they are installed.
"""
