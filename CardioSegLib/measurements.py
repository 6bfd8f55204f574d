"""HeartSeg's measurements on a segmentation in the scene: structure volumes in mL (CT), and the
LV area per frame with the end-diastolic and end-systolic frames (echo), shown as a plot.

The numbers come from Training.measure; this file only reads the labels and spacing out of MRML
and writes table, plot series and chart nodes (no Qt).
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk

from Training import measure

from .scene import labels_from_segmentation


def _spacing_zyx(volume) -> tuple:
    return tuple(reversed(volume.GetSpacing()))


def structure_volumes_ml(segmentation_node, volume_node, classes) -> dict:
    """{segment name: volume in mL} of each class, on the volume's voxel grid."""
    labels = labels_from_segmentation(segmentation_node, volume_node, classes)
    return measure.structure_volumes(labels, _spacing_zyx(volume_node), classes)["volumes_ml"]


def lv_area_curve(segmentation_node, volume_node, classes, lv_name: str = measure.LV_CLASS) -> dict:
    """LV area per frame of a clip whose slices are frames (``Training.measure.lv_area_curve``)."""
    labels = labels_from_segmentation(segmentation_node, volume_node, classes)
    return measure.lv_area_curve(labels, _spacing_zyx(volume_node), classes, lv_name)


def _node(scene, cls: str, name: str):
    """The scene's node of this class and name, created if absent (so a rerun updates it)."""
    nodes = scene.GetNodesByClassByName(cls, name)
    node = nodes.GetItemAsObject(0) if nodes.GetNumberOfItems() else None
    return node or scene.AddNewNodeByClass(cls, name)


def _fill_table(table_node, columns: dict) -> None:
    table = table_node.GetTable()
    with slicer.util.NodeModify(table_node):
        table.Initialize()
        for name, values in columns.items():
            array = vtk.vtkFloatArray()
            array.SetName(name)
            for v in values:
                array.InsertNextValue(float(v))
            table.AddColumn(array)
        table_node.Modified()


def _series(scene, name, table_node, y_column, color, line: bool):
    series = _node(scene, "vtkMRMLPlotSeriesNode", name)
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName("Frame")
    series.SetYColumnName(y_column)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid if line else slicer.vtkMRMLPlotSeriesNode.LineStyleNone)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle if line else slicer.vtkMRMLPlotSeriesNode.MarkerStyleSquare)
    series.SetMarkerSize(4 if line else 10)
    series.SetColor(*color)
    return series


def show_area_curve(curve: dict, name: str, scene=None):
    """Table, plot series (LV area; ED and ES markers) and chart nodes named after ``name``,
    created or updated. Returns the vtkMRMLPlotChartNode (show it with the Plots module)."""
    scene = scene or slicer.mrmlScene
    area = np.asarray(curve["area_mm2"], float)
    table = _node(scene, "vtkMRMLTableNode", f"{name} LV area")
    _fill_table(table, {"Frame": np.arange(len(area)), "LV area (mm2)": area})
    marks = [k for k in (curve.get("ed_frame"), curve.get("es_frame")) if k is not None]
    marker_table = _node(scene, "vtkMRMLTableNode", f"{name} ED ES")
    _fill_table(marker_table, {"Frame": marks, "LV area (mm2)": area[marks] if marks else []})
    chart = _node(scene, "vtkMRMLPlotChartNode", f"{name} LV area chart")
    with slicer.util.NodeModify(chart):
        chart.RemoveAllPlotSeriesNodeIDs()
        chart.AddAndObservePlotSeriesNodeID(_series(scene, f"{name} LV area", table, "LV area (mm2)",
                                                    (0.85, 0.2, 0.2), line=True).GetID())
        chart.AddAndObservePlotSeriesNodeID(_series(scene, f"{name} ED and ES", marker_table, "LV area (mm2)",
                                                    (0.1, 0.1, 0.1), line=False).GetID())
        ed, es = curve.get("ed_frame"), curve.get("es_frame")
        chart.SetTitle(f"LV area: ED frame {ed}, ES frame {es}" if marks else "LV area (ED/ES not found)")
        chart.SetXAxisTitle("frame")
        chart.SetYAxisTitle("LV area (mm2)")
    return chart
