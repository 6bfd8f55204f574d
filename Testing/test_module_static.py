"""What can be checked about the CatheterSeg Slicer module without the Slicer application.

The module source is parsed (never imported: it needs the app's qt/slicer), the .ui file is read
as XML, and the CMake lists are compared with the files on disk.
"""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "CatheterSeg"
SCRIPT = MODULE / "CatheterSeg.py"
UI = MODULE / "Resources" / "UI" / "CatheterSeg.ui"
REQUIREMENTS = MODULE / "Resources" / "requirements.txt"

# Importing any of these takes seconds or needs the PyTorch extension: only inside functions.
HEAVY = ("torch", "torchvision", "monai", "segmentation_models_pytorch", "timm", "safetensors",
         "scipy", "Training", "CardioSegLib", "PyTorchUtils")


@pytest.fixture(scope="module")
def tree():
    return ast.parse(SCRIPT.read_text(), filename=str(SCRIPT))


def _module_level_imports(node, inside_function=False):
    """(module name, line) of every import that runs when the module is imported."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs only when called
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield alias.name, child.lineno
        elif isinstance(child, ast.ImportFrom) and child.level == 0:
            yield child.module or "", child.lineno
        yield from _module_level_imports(child)


def _classes(tree):
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _ui_widgets():
    root = ET.parse(UI).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def test_module_parses_and_has_the_template_classes(tree):
    classes = _classes(tree)
    for name in ("CatheterSeg", "CatheterSegParameterNode", "CatheterSegWidget", "CatheterSegLogic",
                 "CatheterSegTest"):
        assert name in classes, f"class {name} missing"
    wrapper = classes["CatheterSegParameterNode"]
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in wrapper.decorator_list)
    methods = {f.name for f in classes["CatheterSegTest"].body if isinstance(f, ast.FunctionDef)}
    assert {"setUp", "runTest", "test_segment_generated_run", "test_review_and_export", "test_review_panel"} <= methods
    run_test = next(f for f in classes["CatheterSegTest"].body if isinstance(f, ast.FunctionDef) and f.name == "runTest")
    called = {n.func.attr for n in ast.walk(run_test) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert {"test_segment_generated_run", "test_review_and_export", "test_review_panel"} <= called


def test_heavy_packages_are_imported_only_inside_functions(tree):
    offenders = [(name, line) for name, line in _module_level_imports(tree)
                 if name.split(".")[0] in HEAVY]
    assert not offenders, f"imported at module import time: {offenders}"


def test_dependencies_are_not_installed_at_import_time(tree):
    calls = []
    for name, line in _module_level_calls(tree):
        if name in ("ensureDependencies", "pip_install", "pip_ensure", "installTorch"):
            calls.append((name, line))
    assert not calls, f"installs at import time: {calls}"


def _module_level_calls(node):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(child, ast.Call):
            f = child.func
            yield (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")), child.lineno
        yield from _module_level_calls(child)


def test_parameter_node_fields(tree):
    wrapper = _classes(tree)["CatheterSegParameterNode"]
    fields = {n.target.id: ast.unparse(n.annotation) for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    assert fields["inputVolume"] == "vtkMRMLScalarVolumeNode"
    assert fields["outputSegmentation"] == "vtkMRMLSegmentationNode"
    assert fields["modelPath"] == "str"
    assert "Choice" in fields["device"] and "'cuda'" in fields["device"]
    assert "WithinRange(0.01, 0.99)" in fields["threshold"]
    assert "int" in fields["batch"]


def test_ui_is_valid_and_matches_the_code(tree):
    root = ET.parse(UI).getroot()
    assert root.tag == "ui"
    widgets = _ui_widgets()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"

    # every self.ui.<name> used by the module exists in the .ui
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "ui" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}
    assert used, "the widget uses no ui widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"referenced in CatheterSeg.py but not in the .ui: {missing}"

    # every SlicerParameterName names a parameter node field
    wrapper = _classes(tree)["CatheterSegParameterNode"]
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    bound = {}
    for name, w in widgets.items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert set(bound.values()) <= fields, f"unknown parameters bound in the .ui: {set(bound.values()) - fields}"
    assert {"inputVolume", "outputSegmentation", "device", "threshold", "batch"} <= set(bound.values())

    # MRML selectors get the scene from the top-level widget
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in widgets.items() if w.get("class", "").startswith("qMRML") and name != top.get("name")}
    assert mrml <= receivers, f"MRML widgets without a scene: {mrml - receivers}"

    # custom widget classes are declared
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {w.get("class") for w in widgets.values() if not w.get("class", "").startswith("Q")}
    assert custom <= declared, f"undeclared custom widgets: {custom - declared}"


def test_requirements_do_not_include_torch():
    names = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
            assert m, f"unparsable requirement line: {line!r}"
            names.append(m.group(0).lower().replace("_", "-"))
    assert "torch" not in names and "torchvision" not in names, "torch comes from the PyTorch extension"
    assert {"segmentation-models-pytorch", "monai", "safetensors"} <= set(names)


def _cmake_call_args(text, command):
    """Argument text of each ``command(...)`` call (comments removed, no nested parentheses)."""
    text = re.sub(r"#[^\n]*", "", text)
    return re.findall(rf"\b{command}\s*\(([^)]*)\)", text, re.IGNORECASE)


def _cmake_list(text, variable):
    for args in _cmake_call_args(text, "set"):
        tokens = args.split()
        if tokens and tokens[0] == variable:
            return tokens[1:]
    raise AssertionError(f"set({variable} ...) not found")


def test_module_cmakelists_lists_existing_files():
    text = (MODULE / "CMakeLists.txt").read_text()
    assert re.search(r"set\(MODULE_NAME\s+CatheterSeg\)", text)

    def expand(token):
        return token.replace("${MODULE_NAME}", "CatheterSeg")

    scripts = [expand(t) for t in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [expand(t) for t in _cmake_list(text, "MODULE_PYTHON_RESOURCES") if not t.startswith("${MODULE_MODEL")]
    assert "CatheterSeg.py" in scripts
    for rel in scripts + resources:
        assert (MODULE / rel).is_file(), f"CMakeLists lists {rel}, which does not exist"
    assert {"Resources/Icons/CatheterSeg.png", "Resources/UI/CatheterSeg.ui", "Resources/requirements.txt"} <= set(resources)
    # the model files are globbed so retrained models are packaged too
    glob_args = " ".join(_cmake_call_args(text, "file"))
    assert "Resources/Models/*.safetensors" in glob_args and "Resources/Models/*.md" in glob_args
    # every Python script of the module folder is listed
    on_disk = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py")}
    assert on_disk <= set(scripts), f"not in MODULE_PYTHON_SCRIPTS: {on_disk - set(scripts)}"
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)


def test_top_level_cmakelists():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\(\s*CardioSeg\s*\)", text)
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf"set\({var}\s", text), f"{var} missing"
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"PyTorch"\)', text)
    assert re.search(r"add_subdirectory\(\s*CatheterSeg\s*\)", text)
    for include in ("Slicer_USE_FILE", "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert f"include(${{{include}}})" in text
    # the shared packages are installed next to the modules
    glob_args = " ".join(_cmake_call_args(text, "file"))
    assert "CardioSegLib/*.py" in glob_args and "Training/*.py" in glob_args
    compile_args = " ".join(_cmake_call_args(text, "ctkMacroCompilePythonScript"))
    assert "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR" in compile_args
    for package in ("CardioSegLib", "Training"):
        assert (REPO / package / "__init__.py").is_file()
    # icon and screenshot named in the metadata exist in the repository
    for name in re.findall(r"/main/(Resources/[\w.]+)", text):
        assert (REPO / name).is_file(), f"{name} is referenced but missing"


def test_images():
    Image = pytest.importorskip("PIL.Image")
    with Image.open(MODULE / "Resources" / "Icons" / "CatheterSeg.png") as im:
        assert im.format == "PNG" and im.size == (128, 128)
    with Image.open(REPO / "Resources" / "CardioSeg.png") as im:
        assert im.format == "PNG" and im.size == (128, 128)
    with Image.open(REPO / "Resources" / "Screenshot.png") as im:
        assert im.format == "PNG" and im.size == (512, 256)


def _uses(node, names):
    """(dotted name, line) of each attribute chain in ``node`` that starts with one of ``names``."""
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute):
            dotted = ast.unparse(n)
            if any(dotted == name or dotted.startswith(name + ".") for name in names):
                yield dotted, n.lineno
        elif isinstance(n, ast.Name) and n.id in ("qt", "ctk"):
            yield n.id, n.lineno


def test_logic_stays_off_the_application(tree):
    """The Logic is what the self-test and the Python console call: MRML and CardioSegLib only,
    never the app, the module registry or Qt."""
    logic = _classes(tree)["CatheterSegLogic"]
    offenders = sorted(set(_uses(logic, ("slicer.app", "slicer.modules", "qt", "ctk"))))
    assert not offenders, f"CatheterSegLogic uses the application: {offenders}"


def test_cardioseglib_has_no_qt_and_no_app():
    for path in sorted((REPO / "CardioSegLib").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = [name for name, _line in _module_level_imports(tree)]
        imports += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imports += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [name for name in imports if name.split(".")[0] in ("qt", "ctk", "PythonQt")]
        assert not bad, f"{path.name} imports {bad}"
        offenders = sorted(set(_uses(tree, ("slicer.app", "slicer.modules"))))
        assert not offenders, f"{path.name} uses {offenders}"


def test_review_and_export_panel():
    widgets = _ui_widgets()
    expected = {
        "reviewCollapsibleButton": "ctkCollapsibleButton",
        "frameSliderWidget": "ctkSliderWidget",
        "nextUnreviewedButton": "QPushButton",
        "markReviewedButton": "QPushButton",
        "excludeButton": "QPushButton",
        "reviewCountLabel": "QLabel",
        "segmentEditorFrame": "QFrame",
        "exportFolderPathLineEdit": "ctkPathLineEdit",
        "exportButton": "QPushButton",
        "exportProgressBar": "QProgressBar",
        "exportStatusLabel": "QLabel",
    }
    for name, cls in expected.items():
        assert name in widgets, f"{name} missing from the .ui"
        assert widgets[name].get("class") == cls, f"{name} is a {widgets[name].get('class')}, not {cls}"
    texts = {w.get("name"): w.findtext("property[@name='text']/string") for w in widgets.values()}
    assert texts["nextUnreviewedButton"] == "Next unreviewed frame"
    assert texts["markReviewedButton"] == "Mark reviewed"
    assert texts["exportButton"] == "Export reviewed frames"
    assert texts["reviewCollapsibleButton"] == "Review and export"
    # the folder selector picks directories
    filters = widgets["exportFolderPathLineEdit"].findtext("property[@name='filters']/set") or ""
    assert "ctkPathLineEdit::Dirs" in filters and "Files" not in filters
    # the placeholder has a layout the widget adds Segment Editor to
    assert widgets["segmentEditorFrame"].find("layout") is not None


def test_widget_embeds_segment_editor_and_remembers_the_folder(tree):
    source = SCRIPT.read_text()
    widget = _classes(tree)["CatheterSegWidget"]
    calls = {ast.unparse(n.func) for n in ast.walk(widget) if isinstance(n, ast.Call)}
    assert "slicer.qMRMLSegmentEditorWidget" in calls
    assert "self.segmentEditorWidget.setMRMLSegmentEditorNode" in calls
    assert "self.ui.segmentEditorFrame.layout().addWidget" in calls
    assert re.search(r'EXPORT_FOLDER_SETTING\s*=\s*"CardioSeg/ExportFolder"', source)
    assert "qt.QSettings().setValue(EXPORT_FOLDER_SETTING" in source
    assert "qt.QSettings().value(EXPORT_FOLDER_SETTING" in source
    # the red view is moved in the widget (it needs the layout manager), through the logic's geometry
    assert "JumpSliceByOffsetting" in ast.unparse(widget)
    # review marks change only in the click handler of the mark buttons (never after an edit)
    setters = [f.name for f in ast.walk(widget) if isinstance(f, ast.FunctionDef)
               and "setReviewState" in ast.unparse(f)]
    assert setters == ["onMarkButton"], setters
