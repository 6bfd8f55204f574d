"""Qt/Slicer parts shared by the CardioSeg modules: dependency installation, and the widget and
logic base classes that CatheterSeg and HeartSeg specialise.

Layering: modules -> CardioSegUI -> CardioSegLib -> Training. This package may import qt, ctk,
vtk and slicer at module level (CardioSegLib must not); torch, MONAI, Training and CardioSegLib
are imported only inside functions, because Slicer imports the modules at start-up.
"""
