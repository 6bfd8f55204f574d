"""What no behaviour test can see of the Slicer modules (CatheterSeg, HeartSeg) and their shared
widget (CardioSegUI), which need the Slicer application: the module files parse and have the
template's classes, the .ui widgets they bind exist, the parameter nodes, no heavy imports or
installs when Slicer loads them, no dispatch on task names, and the icons, metadata and CMake
lists. The Logic itself (CardioSegLib.logic and the modules' subclasses) is tested by what it
does, on slicer-core, in test_module_logic.py.

The sources are parsed (never imported: they need the app's qt/slicer), the .ui files are read
as XML, and the CMake lists are compared with the files on disk.
"""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from CardioSegLib.catheterlogic import TASK as CATHETER_TASK
from CardioSegLib.catheterlogic import TASKS as CATHETER_TASKS
from CardioSegLib.heartlogic import AUTO
from CardioSegLib.heartlogic import TASKS as HEART_TASKS
from Training.tasks import TASKS as ALL_TASKS
from Training.tasks import get_task

REPO = Path(__file__).resolve().parent.parent
SHARED_UI = REPO / "CardioSegUI"
# the shared widget: SegmentationWidgetBase (widgetbase.py) made of one mixin per panel, and its helpers
SHARED_FILES = sorted(SHARED_UI.glob("*.py"))

# Per module: its requirements file, the bound parameters beyond the common ones, its Logic in CardioSegLib.
MODULES = {
    "CatheterSeg": {
        "requirements": "Resources/requirements.txt",
        "parameters": {"threshold", "task"},
        "logic": "CatheterSegmentationLogic",
    },
    "HeartSeg": {
        "requirements": "Resources/HeartSeg-requirements.txt",
        "parameters": {"task"},
        "logic": "HeartSegmentationLogic",
    },
}
COMMON_PARAMETERS = {"inputVolume", "outputSegmentation", "device", "batch"}

# Importing any of these takes seconds or needs packages installed only on the first Segment:
# only inside functions. (The CardioSegLib and Training modules the files import at module level
# are imported without torch in test_module_logic.py.)
HEAVY = ("torch", "torchvision", "monai", "segmentation_models_pytorch", "timm", "safetensors",
         "scipy", "PyTorchUtils", "Training.predictor", "Training.modelfile", "Training.architectures")

SLICER_FILES = [REPO / name / f"{name}.py" for name in MODULES] + SHARED_FILES
LOGIC_FILES = [REPO / "CardioSegLib" / f"{name}.py" for name in ("logic", "catheterlogic", "heartlogic")]

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
    assert {"setUp", "runTest"} <= set(methods)
    called = {n.func.attr for n in ast.walk(methods["runTest"])
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    every_test = {m for m in methods if m.startswith("test_")}
    assert every_test and every_test <= called, f"runTest does not call {every_test - called}"


@module_names
def test_module_builds_on_the_shared_widget_and_the_cardioseglib_logic(trees, name):
    tree = _module_tree(trees, name)
    classes = _classes(tree)
    assert "SegmentationWidgetBase" in _base_names(classes[f"{name}Widget"])
    # the app's logic base (parameter node; it names the module after the class) and the Qt-free Logic
    assert _base_names(classes[f"{name}Logic"]) == {"ScriptedLoadableModuleLogic", MODULES[name]["logic"]}
    # the shared packages are put on sys.path before CardioSegUI or CardioSegLib is imported, by the module itself
    helper = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "_addSharedPackagesToPath")
    helper_source = _source(REPO / name / f"{name}.py", helper)
    assert all(f'"{package}"' in helper_source for package in ("CardioSegUI", "CardioSegLib", "Training"))
    call_line = next(line for fname, line in _module_level_calls(tree) if fname == "_addSharedPackagesToPath")
    shared_imports = [line for module, line in _module_level_imports(tree)
                      if module.split(".")[0] in ("CardioSegUI", "CardioSegLib", "Training")]
    assert shared_imports and min(shared_imports) > call_line
    # the widget says which module (and .ui) it is
    widget = classes[f"{name}Widget"]
    assigned = {t.id: ast.literal_eval(n.value) for n in widget.body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert assigned.get("MODULE_NAME") == name


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_heavy_packages_are_imported_only_inside_functions(trees, path):
    offenders = [(module, line) for module, line in _module_level_imports(trees[path])
                 if any(module == heavy or module.startswith(heavy + ".") for heavy in HEAVY)]
    assert not offenders, f"imported at module import time: {offenders}"


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_dependencies_are_not_installed_at_import_time(trees, path):
    calls = [(fname, line) for fname, line in _module_level_calls(trees[path])
             if fname in ("ensureDependencies", "_ensureDependencies", "pip_install", "pip_ensure", "installTorch")]
    assert not calls, f"installs at import time: {calls}"


def test_cardiosegui_is_a_package_of_slicer_code():
    assert (SHARED_UI / "__init__.py").is_file()
    names = {p.name for p in SHARED_UI.glob("*.py")}
    assert {"widgetbase.py", "modelpanel.py", "segmentpanel.py", "reviewpanel.py", "exportpanel.py",
            "longaction.py", "editorhelpers.py", "dependencies.py"} <= names


def test_widget_base_is_made_of_every_panel_mixin(trees):
    """SegmentationWidgetBase combines every mixin of CardioSegUI, and each of its methods is
    defined in one place only (two mixins with one method name: the MRO would hide one)."""
    classes = {}
    for path in SHARED_FILES:
        for cls_name, cls in _classes(trees[path]).items():
            assert cls_name not in classes, f"class {cls_name} defined twice in CardioSegUI"
            classes[cls_name] = (path, cls)
    path, base = classes["SegmentationWidgetBase"]
    assert path.name == "widgetbase.py"
    mixins = {n for n in classes if n.endswith("Mixin")}
    assert mixins and mixins <= _base_names(base), f"mixins not combined: {mixins - _base_names(base)}"
    assert {"ScriptedLoadableModuleWidget", "VTKObservationMixin"} <= _base_names(base)
    seen = {}
    for cls_name in sorted(mixins | {"SegmentationWidgetBase"}):
        for method in _methods(classes[cls_name][1]):
            assert method not in seen, f"{method} defined in both {seen[method]} and {cls_name}"
            seen[method] = cls_name


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

    # every self.ui.<name> used by the module or the shared widget (every CardioSegUI file) exists in the module's .ui
    used = _self_ui_names(_module_tree(trees, name)).union(*(_self_ui_names(trees[path]) for path in SHARED_FILES))
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
        "leastCertainFirstCheckBox": "QCheckBox",
        "markReviewedButton": "QPushButton",
        "excludeButton": "QPushButton",
        "reviewCountLabel": "QLabel",
        "segmentEditorFrame": "QFrame",
        "exportFolderPathLineEdit": "ctkPathLineEdit",
        "exportButton": "QPushButton",
        "adaptButton": "QPushButton",
        "exportProgressBar": "QProgressBar",
        "exportStatusLabel": "QLabel",
    }
    for widget_name, cls in expected.items():
        assert widget_name in widgets, f"{widget_name} missing from {name}.ui"
        assert widgets[widget_name].get("class") == cls, f"{widget_name} is a {widgets[widget_name].get('class')}, not {cls}"
    texts = {w.get("name"): w.findtext("property[@name='text']/string") for w in widgets.values()}
    assert texts["nextUnreviewedButton"] == "Next unreviewed frame"
    # the review goes to the least certain frame unless the user unticks it
    assert widgets["leastCertainFirstCheckBox"].findtext("property[@name='checked']/bool") == "true"
    assert texts["markReviewedButton"] == "Mark reviewed"
    assert texts["exportButton"] == "Export reviewed frames"
    assert texts["reviewCollapsibleButton"] == "Review and export"
    # the folder selector picks directories
    filters = widgets["exportFolderPathLineEdit"].findtext("property[@name='filters']/set") or ""
    assert "ctkPathLineEdit::Dirs" in filters and "Files" not in filters
    # the placeholder has a layout the widget adds Segment Editor to
    assert widgets["segmentEditorFrame"].find("layout") is not None


def test_heartseg_panel_widgets_and_task_choice(trees):
    """The task choice is AUTO then HeartSeg's tasks (the order the widget labels the combo box
    in), and the .ui has the detection and measurement widgets the widget uses."""
    tree = _module_tree(trees, "HeartSeg")
    assert f"Choice({[AUTO, *HEART_TASKS]!r})" in _fields(tree, "HeartSeg")["task"]
    assert set(HEART_TASKS) <= set(ALL_TASKS)
    widgets = _ui_widgets("HeartSeg")
    texts = {w.get("name"): w.findtext("property[@name='text']/string") for w in widgets.values()}
    assert texts["goToEdButton"] == "Go to ED" and texts["goToEsButton"] == "Go to ES"
    assert widgets["taskComboBox"].get("class") == "QComboBox"
    assert widgets["taskComboBox"].findtext("property[@name='SlicerParameterName']/string") == "task"
    assert {"detectedTaskLabel", "measurementLabel", "measureButton"} <= set(widgets)


def test_catheterseg_panel_widgets_and_task_choice(trees):
    """CatheterSeg runs a grey task and a colour task: the Choice, the Logic's TASKS (the order
    the widget labels the combo box in) and Training.tasks agree; the .ui has the task combo box
    bound to the parameter and lets colour (vector) volumes be chosen, not labelmaps."""
    tree = _module_tree(trees, "CatheterSeg")
    assert CATHETER_TASKS == ("catheter", "instruments") and CATHETER_TASK == "catheter"
    assert f"Choice({list(CATHETER_TASKS)!r})" in _fields(tree, "CatheterSeg")["task"]
    assert [get_task(t).in_channels for t in CATHETER_TASKS] == [1, 3]

    widgets = _ui_widgets("CatheterSeg")
    combo = widgets["taskComboBox"]
    assert combo.get("class") == "QComboBox"
    assert combo.findtext("property[@name='SlicerParameterName']/string") == "task"
    assert widgets["taskHintLabel"].get("class") == "QLabel"
    selector = widgets["inputSelector"]
    node_types = [e.text for e in selector.findall("property[@name='nodeTypes']/stringlist/string")]
    assert set(node_types) == {"vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"}
    assert selector.findtext("property[@name='showChildNodeTypes']/bool") == "false"  # no labelmaps


@pytest.mark.parametrize("path", SLICER_FILES + LOGIC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_dispatch_on_task_names(path):
    """What differs between tasks is in their records (Training.tasks: frame_words, description,
    measure, ...): no ``x == "echo"`` in the modules, the widget or the Logic."""
    tree = _parse(path)
    offenders = [(ast.unparse(n), n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Compare)
                 and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in n.ops)
                 and any(isinstance(c, ast.Constant) and c.value in ALL_TASKS for c in [n.left, *n.comparators])]
    assert not offenders, f"compares with a task name: {offenders}"
