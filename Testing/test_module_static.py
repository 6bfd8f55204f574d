"""What can be checked about the Slicer modules (CatheterSeg, HeartSeg) and their shared widget and
logic base classes (CardioSegUI) without the Slicer application.

The sources are parsed (never imported: they need the app's qt/slicer), the .ui files are read
as XML, and the CMake lists are compared with the files on disk.
"""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_UI = REPO / "CardioSegUI"
MODULEPARTS = SHARED_UI / "moduleparts.py"

# Per module: its requirements file, the bound parameters beyond the common ones, the test methods.
MODULES = {
    "CatheterSeg": {
        "requirements": "Resources/requirements.txt",
        "parameters": {"threshold", "task"},
        "tests": {"test_segment_generated_run", "test_refuses_foreign_model_file", "test_review_and_export",
                  "test_review_panel", "test_instruments_video", "test_instruments_sequence",
                  "test_sequence_panel"},
    },
    "HeartSeg": {
        "requirements": "Resources/HeartSeg-requirements.txt",
        "parameters": {"task"},
        "tests": {"test_heart_ct", "test_echo", "test_bad_inputs", "test_review_and_export", "test_review_panel"},
    },
}
COMMON_PARAMETERS = {"inputVolume", "outputSegmentation", "device", "batch"}

# Importing any of these takes seconds or needs the PyTorch extension: only inside functions.
HEAVY = ("torch", "torchvision", "monai", "segmentation_models_pytorch", "timm", "safetensors",
         "scipy", "Training", "CardioSegLib", "PyTorchUtils")

SLICER_FILES = [REPO / name / f"{name}.py" for name in MODULES] + sorted(SHARED_UI.glob("*.py"))

module_names = pytest.mark.parametrize("name", list(MODULES))


def _parse(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _source(path, node):
    """The source text of ``node`` in ``path``, as written (quotes included)."""
    return ast.get_source_segment(path.read_text(encoding="utf-8"), node)


@pytest.fixture(scope="module")
def trees():
    return {path: _parse(path) for path in SLICER_FILES}


def _module_tree(trees, name):
    return trees[REPO / name / f"{name}.py"]


def _module_level_imports(node):
    """(module name, line) of every absolute import that runs when the module is imported."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs only when called
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield alias.name, child.lineno
        elif isinstance(child, ast.ImportFrom) and child.level == 0:
            yield child.module or "", child.lineno
        yield from _module_level_imports(child)


def _module_level_calls(node):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(child, ast.Call):
            f = child.func
            yield (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")), child.lineno
        yield from _module_level_calls(child)


def _classes(tree):
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _methods(cls):
    return {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}


def _base_names(cls):
    return {ast.unparse(b) for b in cls.bases}


def _ui_path(name):
    return REPO / name / "Resources" / "UI" / f"{name}.ui"


def _ui_widgets(name):
    root = ET.parse(_ui_path(name)).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def _self_ui_names(tree):
    return {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "ui" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}


def _fields(tree, name):
    wrapper = _classes(tree)[f"{name}ParameterNode"]
    return {n.target.id: ast.unparse(n.annotation) for n in wrapper.body if isinstance(n, ast.AnnAssign)}


@module_names
def test_module_parses_and_has_the_template_classes(trees, name):
    classes = _classes(_module_tree(trees, name))
    for suffix in ("", "ParameterNode", "Widget", "Logic", "Test"):
        assert name + suffix in classes, f"class {name + suffix} missing"
    wrapper = classes[f"{name}ParameterNode"]
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in wrapper.decorator_list)
    methods = _methods(classes[f"{name}Test"])
    assert {"setUp", "runTest"} | MODULES[name]["tests"] <= set(methods)
    called = {n.func.attr for n in ast.walk(methods["runTest"])
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    every_test = {m for m in methods if m.startswith("test_")}
    assert every_test <= called, f"runTest does not call {every_test - called}"


@module_names
def test_module_builds_on_the_shared_base_classes(trees, name):
    tree = _module_tree(trees, name)
    classes = _classes(tree)
    assert "SegmentationWidgetBase" in _base_names(classes[f"{name}Widget"])
    assert "SegmentationLogicBase" in _base_names(classes[f"{name}Logic"])
    # the shared packages are put on sys.path before CardioSegUI is imported, by the module itself
    helper = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "_addSharedPackagesToPath")
    helper_source = _source(REPO / name / f"{name}.py", helper)
    assert all(f'"{package}"' in helper_source for package in ("CardioSegUI", "CardioSegLib", "Training"))
    call_line = next(line for fname, line in _module_level_calls(tree) if fname == "_addSharedPackagesToPath")
    ui_imports = [line for module, line in _module_level_imports(tree) if module.split(".")[0] == "CardioSegUI"]
    assert ui_imports and min(ui_imports) > call_line
    # the module class names the module; the widget and logic say which module they belong to
    for cls in (classes[f"{name}Widget"], classes[f"{name}Logic"]):
        assigned = {t.id: ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        assert assigned.get("MODULE_NAME") == name, cls.name


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_heavy_packages_are_imported_only_inside_functions(trees, path):
    offenders = [(module, line) for module, line in _module_level_imports(trees[path])
                 if module.split(".")[0] in HEAVY]
    assert not offenders, f"imported at module import time: {offenders}"


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_dependencies_are_not_installed_at_import_time(trees, path):
    calls = [(fname, line) for fname, line in _module_level_calls(trees[path])
             if fname in ("ensureDependencies", "_ensureDependencies", "pip_install", "pip_ensure", "installTorch")]
    assert not calls, f"installs at import time: {calls}"


def test_cardiosegui_is_a_package_of_slicer_code():
    assert (SHARED_UI / "__init__.py").is_file()
    names = {p.name for p in SHARED_UI.glob("*.py")}
    assert {"moduleparts.py", "dependencies.py"} <= names


@module_names
def test_parameter_node_fields(trees, name):
    fields = _fields(_module_tree(trees, name), name)
    assert fields["inputVolume"] == "vtkMRMLScalarVolumeNode"
    assert fields["outputSegmentation"] == "vtkMRMLSegmentationNode"
    assert fields["modelPath"] == "str"
    assert "Choice" in fields["device"] and "'cuda'" in fields["device"]
    assert "int" in fields["batch"]
    wrapper = _classes(_module_tree(trees, name))[f"{name}ParameterNode"]
    default = next(n.value for n in wrapper.body if isinstance(n, ast.AnnAssign) and n.target.id == "task")
    if name == "CatheterSeg":
        assert "WithinRange(0.01, 0.99)" in fields["threshold"]
        assert "Choice(['catheter', 'instruments'])" in fields["task"]
        assert ast.literal_eval(default) == "catheter"  # the grey task stays the default
    else:
        assert "threshold" not in fields
        assert "Choice(['auto', 'heart-ct', 'echo'])" in fields["task"]
        assert ast.literal_eval(default) == "auto"


@module_names
def test_ui_is_valid_and_matches_the_code(trees, name):
    root = ET.parse(_ui_path(name)).getroot()
    assert root.tag == "ui"
    widgets = _ui_widgets(name)
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == name

    # every self.ui.<name> used by the module or the shared widget exists in the module's .ui
    used = _self_ui_names(_module_tree(trees, name)) | _self_ui_names(trees[MODULEPARTS])
    assert used, "the widget uses no ui widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"used by {name}.py or CardioSegUI but not in {name}.ui: {missing}"

    # every SlicerParameterName names a parameter node field
    fields = set(_fields(_module_tree(trees, name), name))
    bound = {}
    for widget_name, w in widgets.items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget_name] = prop.find("string").text
    assert set(bound.values()) <= fields, f"unknown parameters bound in the .ui: {set(bound.values()) - fields}"
    assert COMMON_PARAMETERS | MODULES[name]["parameters"] <= set(bound.values())

    # MRML selectors get the scene from the top-level widget
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)" and c.findtext("sender") == name}
    mrml = {n for n, w in widgets.items() if w.get("class", "").startswith("qMRML") and n != top.get("name")}
    assert mrml <= receivers, f"MRML widgets without a scene: {mrml - receivers}"

    # custom widget classes are declared
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {w.get("class") for w in widgets.values() if not w.get("class", "").startswith("Q")}
    assert custom <= declared, f"undeclared custom widgets: {custom - declared}"


@module_names
def test_requirements_do_not_include_torch(name):
    names = []
    for line in (REPO / name / MODULES[name]["requirements"]).read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
            assert m, f"unparsable requirement line: {line!r}"
            names.append(m.group(0).lower().replace("_", "-"))
    assert "torch" not in names and "torchvision" not in names, "torch comes from the PyTorch extension"
    assert {"segmentation-models-pytorch", "monai", "safetensors"} <= set(names)


@module_names
def test_module_finds_its_requirements_file(trees, name):
    source = (REPO / name / f"{name}.py").read_text(encoding="utf-8")
    parts = MODULES[name]["requirements"].split("/")
    assert re.search(r'REQUIREMENTS_FILE\s*=\s*MODULE_DIR\s*/\s*"Resources"\s*/\s*"' + re.escape(parts[1]) + '"',
                     source)


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


def _module_resources(name):
    text = (REPO / name / "CMakeLists.txt").read_text(encoding="utf-8")
    return [t.replace("${MODULE_NAME}", name) for t in _cmake_list(text, "MODULE_PYTHON_RESOURCES")
            if not t.startswith("${MODULE_MODEL")]


@module_names
def test_module_cmakelists_lists_existing_files(name):
    module = REPO / name
    text = (module / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"set\(MODULE_NAME\s+{name}\)", text)
    scripts = [t.replace("${MODULE_NAME}", name) for t in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = _module_resources(name)
    assert f"{name}.py" in scripts
    for rel in scripts + resources:
        assert (module / rel).is_file(), f"CMakeLists lists {rel}, which does not exist"
    assert {f"Resources/Icons/{name}.png", f"Resources/UI/{name}.ui", MODULES[name]["requirements"]} <= set(resources)
    # the model files are globbed so retrained models are packaged too
    glob_args = " ".join(_cmake_call_args(text, "file"))
    assert "Resources/Models/*.safetensors" in glob_args and "Resources/Models/*.md" in glob_args
    # every Python script of the module folder is listed
    on_disk = {p.relative_to(module).as_posix() for p in module.rglob("*.py")}
    assert on_disk <= set(scripts), f"not in MODULE_PYTHON_SCRIPTS: {on_disk - set(scripts)}"
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)


def test_module_resources_do_not_collide():
    """Every module's resources are copied into one qt-scripted-modules/Resources folder."""
    seen = {}
    for name in MODULES:
        files = _module_resources(name)
        files += [p.relative_to(REPO / name).as_posix() for p in (REPO / name / "Resources" / "Models").glob("*")
                  if p.suffix in (".safetensors", ".md")]
        for rel in files:
            assert rel not in seen, f"{name} and {seen[rel]} both install {rel}"
            seen[rel] = name


def test_top_level_cmakelists():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"project\(\s*CardioSeg\s*\)", text)
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf"set\({var}\s", text), f"{var} missing"
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"PyTorch"\)', text)
    for name in MODULES:
        assert re.search(rf"add_subdirectory\(\s*{name}\s*\)", text), f"add_subdirectory({name}) missing"
    for include in ("Slicer_USE_FILE", "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert f"include(${{{include}}})" in text
    # the shared packages are installed next to the modules
    glob_args = " ".join(_cmake_call_args(text, "file"))
    for package in ("CardioSegUI", "CardioSegLib", "Training"):
        assert f"{package}/*.py" in glob_args, f"{package}/*.py not globbed"
        assert (REPO / package / "__init__.py").is_file()
    compile_args = " ".join(_cmake_call_args(text, "ctkMacroCompilePythonScript"))
    assert "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR" in compile_args
    # icon and screenshot named in the metadata exist in the repository
    for name in re.findall(r"/main/(Resources/[\w.]+)", text):
        assert (REPO / name).is_file(), f"{name} is referenced but missing"


def test_images():
    from PIL import Image
    for name in MODULES:
        with Image.open(REPO / name / "Resources" / "Icons" / f"{name}.png") as im:
            assert im.format == "PNG" and im.size == (128, 128), name
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


@pytest.mark.parametrize("name", [*MODULES, "SegmentationLogicBase"])
def test_logic_stays_off_the_application(trees, name):
    """The Logic is what the self-tests and the Python console call: MRML and CardioSegLib only,
    never the app, the module registry or Qt."""
    if name == "SegmentationLogicBase":
        logic = _classes(trees[MODULEPARTS])[name]
    else:
        logic = _classes(_module_tree(trees, name))[f"{name}Logic"]
    offenders = sorted(set(_uses(logic, ("slicer.app", "slicer.modules", "qt", "ctk"))))
    assert not offenders, f"{logic.name} uses the application: {offenders}"


def test_cardioseglib_has_no_qt_and_no_app():
    for path in sorted((REPO / "CardioSegLib").glob("*.py")):
        tree = _parse(path)
        imports = [n for n, _line in _module_level_imports(tree)]
        imports += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imports += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [n for n in imports if n.split(".")[0] in ("qt", "ctk", "PythonQt", "CardioSegUI")]
        assert not bad, f"{path.name} imports {bad}"
        offenders = sorted(set(_uses(tree, ("slicer.app", "slicer.modules"))))
        assert not offenders, f"{path.name} uses {offenders}"


def test_training_does_not_import_the_gui_side():
    for path in sorted((REPO / "Training").glob("*.py")):
        tree = _parse(path)
        imports = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imports += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
        bad = [n for n in imports if n.split(".")[0] in ("CardioSegUI", "qt", "ctk")]
        assert not bad, f"{path.name} imports {bad}"


@module_names
def test_review_and_export_panel(name):
    widgets = _ui_widgets(name)
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
    for widget_name, cls in expected.items():
        assert widget_name in widgets, f"{widget_name} missing from {name}.ui"
        assert widgets[widget_name].get("class") == cls, f"{widget_name} is a {widgets[widget_name].get('class')}, not {cls}"
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


def test_shared_widget_embeds_segment_editor_and_remembers_the_folder(trees):
    source = MODULEPARTS.read_text(encoding="utf-8")
    widget = _classes(trees[MODULEPARTS])["SegmentationWidgetBase"]
    calls = {ast.unparse(n.func) for n in ast.walk(widget) if isinstance(n, ast.Call)}
    assert "slicer.qMRMLSegmentEditorWidget" in calls
    assert "self.segmentEditorWidget.setMRMLSegmentEditorNode" in calls
    assert "self.ui.segmentEditorFrame.layout().addWidget" in calls
    assert re.search(r'EXPORT_FOLDER_SETTING\s*=\s*"CardioSeg/ExportFolder"', source)
    assert "qt.QSettings().setValue(EXPORT_FOLDER_SETTING" in source
    assert "qt.QSettings().value(EXPORT_FOLDER_SETTING" in source
    # the red view is moved in the widget (it needs the layout manager), through the logic's geometry
    assert "JumpSliceByOffsetting" in ast.unparse(widget)
    # the .ui is the module's own
    assert 'self.resourcePath(f"UI/{self.MODULE_NAME}.ui")' in _source(MODULEPARTS, widget)


def test_export_asks_before_replacing_another_volumes_cases(trees):
    """A case image conflict (another volume of the same name) is replaced only after a Yes."""
    export = ast.unparse(_methods(_classes(trees[MODULEPARTS])["SegmentationWidgetBase"])["onExportButton"])
    handler = export[export.index("except CaseImageConflict"):]
    assert handler.index("slicer.util.confirmYesNoDisplay") < handler.index("export(True)")
    assert "replaceImages=replaceImages" in export and "caseIds = export(False)" in export
    logic = ast.unparse(_methods(_classes(trees[MODULEPARTS])["SegmentationLogicBase"])["exportReviewedFrames"])
    assert "replace_images=replaceImages" in logic


def test_review_marks_change_only_on_a_click(trees):
    """Review marks change only in the mark buttons' click handler (never after an edit or a run)."""
    widgets = [_classes(trees[MODULEPARTS])["SegmentationWidgetBase"]]
    widgets += [_classes(_module_tree(trees, name))[f"{name}Widget"] for name in MODULES]
    setters = [f.name for w in widgets for f in ast.walk(w) if isinstance(f, ast.FunctionDef)
               and "setReviewState" in ast.unparse(f)]
    assert setters == ["onMarkButton"], setters


def test_heartseg_task_detection_and_measurements(trees):
    tree = _module_tree(trees, "HeartSeg")
    classes = _classes(tree)
    logic, widget = _methods(classes["HeartSegLogic"]), classes["HeartSegWidget"]
    assert {"detectTask", "resolveTask", "process", "measure", "showAreaCurve"} <= set(logic)
    logic_source = ast.unparse(classes["HeartSegLogic"])
    for function in ("detect_task", "runModel", "structure_volumes_ml", "lv_area_curve", "show_area_curve"):
        assert function in logic_source, function
    # the DICOM modality is read in the widget's module, guarded, from the first instance
    modality = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "dicomModality")
    text = _source(REPO / "HeartSeg" / "HeartSeg.py", modality)
    assert '"DICOM.instanceUIDs"' in text and '"0008,0060"' in text and "fileForInstance" in text
    assert any(isinstance(n, ast.Try) for n in ast.walk(modality))
    # the chart goes into the layout from the widget; ED/ES buttons move the frame slider
    widget_source = ast.unparse(widget)
    assert "slicer.modules.plots.logic().ShowChartInLayout" in widget_source
    assert "self.goToFrame" in widget_source
    widgets = _ui_widgets("HeartSeg")
    texts = {w.get("name"): w.findtext("property[@name='text']/string") for w in widgets.values()}
    assert texts["goToEdButton"] == "Go to ED" and texts["goToEsButton"] == "Go to ES"
    assert widgets["taskComboBox"].get("class") == "QComboBox"
    assert {"detectedTaskLabel", "measurementLabel", "measureButton"} <= set(widgets)


def _module_constant(tree, name):
    return next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name) and t.id == name)


def test_catheterseg_task_choice_grey_and_colour(trees):
    """CatheterSeg runs a grey task and a colour task: the Choice, the module's TASKS (the order
    the widget labels the combo box in) and Training.tasks agree; the .ui has the task combo box
    bound to the parameter and lets colour (vector) volumes be chosen, not labelmaps; the widget
    passes the task to the logic and exports for the segmentation's task."""
    from Training.tasks import get_task

    tree = _module_tree(trees, "CatheterSeg")
    tasks = _module_constant(tree, "TASKS")
    assert tasks == ("catheter", "instruments") and _module_constant(tree, "TASK") == "catheter"
    assert f"Choice({list(tasks)!r})" in _fields(tree, "CatheterSeg")["task"]
    assert [get_task(t).in_channels for t in tasks] == [1, 3]

    widgets = _ui_widgets("CatheterSeg")
    combo = widgets["taskComboBox"]
    assert combo.get("class") == "QComboBox"
    assert combo.findtext("property[@name='SlicerParameterName']/string") == "task"
    assert widgets["taskHintLabel"].get("class") == "QLabel"
    selector = widgets["inputSelector"]
    node_types = [e.text for e in selector.findall("property[@name='nodeTypes']/stringlist/string")]
    assert set(node_types) == {"vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"}
    assert selector.findtext("property[@name='showChildNodeTypes']/bool") == "false"  # no labelmaps

    classes = _classes(tree)
    widget = _methods(classes["CatheterSegWidget"])
    assert {"modelTasks", "modelTask", "exportTask", "prepareRun", "runSegmentation", "updateChoiceLabels",
            "onCaseLoaded"} <= set(widget)
    run = ast.unparse(widget["runSegmentation"])
    assert "task=node.task" in run and "self.logic.process" in run
    assert "inputProblem" in ast.unparse(widget["prepareRun"])  # the wrong kind is said before a model loads
    assert "segmentationTask" in ast.unparse(widget["exportTask"])
    logic = _methods(classes["CatheterSegLogic"])
    assert [a.arg for a in logic["process"].args.args[:4]] == ["self", "inputNode", "outputSegmentation", "task"]
    assert "channel_problem" in ast.unparse(logic["inputProblem"])
    # the self-test's instruments case builds an RGB vector volume and checks the export round trip
    test = ast.unparse(_methods(classes["CatheterSegTest"])["test_instruments_video"])
    for needle in ("vtkMRMLVectorVolumeNode", "task='instruments'", "exportReviewedFrames", "loadCase",
                   "read_training_folder", "InputError"):
        assert needle in test, needle


def test_catheterseg_takes_a_sequence_through_its_proxy_volume(trees):
    """A browser's proxy volume stands for its whole sequence: the logic segments what
    CardioSegLib.review.segmentation_input says, the panel says so, and the shared widget
    reviews and exports through the logic's reviewSubject (the two sequences), following the
    browser; the self-test builds a browser and segments its proxy."""
    classes = _classes(_module_tree(trees, "CatheterSeg"))
    logic = _methods(classes["CatheterSegLogic"])
    process = ast.unparse(logic["process"])
    assert "segmentation_input(inputNode)" in process and "browser=browser" in process
    assert "segmentation_target" in process
    assert "segmentation_input" in ast.unparse(logic["inputProblem"])  # the sequence's channels
    assert "describe_input" in ast.unparse(logic["inputDescription"])
    widget = _methods(classes["CatheterSegWidget"])
    assert "inputDescription" in ast.unparse(widget["updateTaskInfo"])
    assert "reviewSubject" in ast.unparse(widget["exportTask"])

    shared = _classes(trees[MODULEPARTS])
    base_logic = _methods(shared["SegmentationLogicBase"])
    assert {"reviewSubject", "browserOfProxy", "showSequenceFrame", "sequenceFrameShown",
            "shownSegmentation"} <= set(base_logic)
    base = _methods(shared["SegmentationWidgetBase"])
    for method in ("onMarkButton", "onNextUnreviewedButton", "onExportButton"):
        assert "self.reviewSubject()" in ast.unparse(base[method]), method
    assert "shownSegmentation" in ast.unparse(base["onApplyButton"])
    assert "observeBrowser" in ast.unparse(base["updateReviewGUI"])
    assert "showSequenceFrame" in ast.unparse(base["showFrame"])

    test = _methods(classes["CatheterSegTest"])
    built = ast.unparse(test["colourSequence"])
    assert "vtkMRMLSequenceBrowserNode" in built and "GetProxyNode" in built
    sequence_test = ast.unparse(test["test_instruments_sequence"])
    assert "logic.process(proxy" in sequence_test and "GetNumberOfDataNodes()" in sequence_test
