"""Loading user mechanism files: every failure is one InputError line naming the file and cause."""

from __future__ import annotations

import math
import pickle
import sys
import textwrap
from pathlib import Path

import pytest

from dpaudit.errors import InputError
from dpaudit.mechanism.loader import (
    MechanismFactory,
    construct,
    declared_sensitivity,
    declared_sigma,
    epoch_of,
    load_mechanism_class,
    parse_spec,
)
from dpaudit.run_config import RunConfig

MECHANISMS = Path(__file__).resolve().parent.parent / "mechanisms"

CONFIG = RunConfig(
    dataset_size=60000, batch_size=256, epochs=5, epsilon=3.0, delta=1e-5, noise_multiplier=0.6519
)

GOOD_BODY = """
class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params,
                 dataset_size, batch_size, epochs, target_epsilon, target_delta):
        self.sigma = noise_multiplier
    def clip_and_noise(self, per_sample_grads, step, epoch):
        return [g.sum(0) for g in per_sample_grads]
    def get_effective_sigma(self, step, epoch):
        return self.sigma
"""


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def expect_error(spec, *fragments: str) -> str:
    with pytest.raises(InputError) as info:
        load_mechanism_class(str(spec))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ----- parse_spec -----------------------------------------------------------


def test_parse_spec_default_class():
    assert parse_spec("mechanisms/dpsgd.py") == (Path("mechanisms/dpsgd.py"), "DPMechanism")


def test_parse_spec_named_class():
    assert parse_spec("a/b.py:Other") == (Path("a/b.py"), "Other")


def test_parse_spec_keeps_windows_drive():
    assert parse_spec(r"C:\work\m.py") == (Path(r"C:\work\m.py"), "DPMechanism")


@pytest.mark.parametrize("spec, fragment", [("m.py:", "empty class name"), ("m.py:1x", "not a valid")])
def test_parse_spec_rejects_bad_class(spec, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_spec(spec)


def test_parse_spec_rejects_empty():
    with pytest.raises(InputError, match="empty"):
        parse_spec("  ")


# ----- load errors ------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.py"
    expect_error(path, str(path), "does not exist")


def test_not_a_py_file(tmp_path):
    path = write(tmp_path, "mech.txt", GOOD_BODY)
    expect_error(path, str(path), "not a .py file")


def test_directory(tmp_path):
    path = tmp_path / "dir.py"
    path.mkdir()
    expect_error(path, str(path), "not a file")


def test_import_raises(tmp_path):
    path = write(tmp_path, "broken.py", "import math\nx = foo + 1\n")
    expect_error(
        path, str(path), "import failed: NameError: name 'foo' is not defined", "(line 2)"
    )


def test_syntax_error(tmp_path):
    path = write(tmp_path, "syntax.py", "def f(:\n    pass\n")
    expect_error(path, str(path), "import failed: SyntaxError")


def test_missing_dependency(tmp_path):
    path = write(tmp_path, "dep.py", "import no_such_module_for_dpaudit_tests\n")
    expect_error(path, str(path), "ModuleNotFoundError", "no_such_module_for_dpaudit_tests")


def test_sys_exit_at_import(tmp_path):
    path = write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    expect_error(path, str(path), "import failed: SystemExit")


def test_class_missing_lists_classes(tmp_path):
    path = write(tmp_path, "other.py", "from pathlib import Path\nclass Foo: pass\nclass Bar: pass\n")
    message = expect_error(path, str(path), "class DPMechanism not found", "Bar, Foo")
    assert "Path" not in message  # only classes defined in the file


def test_class_missing_no_classes(tmp_path):
    path = write(tmp_path, "empty.py", "x = 1\n")
    expect_error(path, "class DPMechanism not found", "none")


def test_named_class_missing(tmp_path):
    path = write(tmp_path, "good.py", GOOD_BODY)
    expect_error(f"{path}:Other", str(path), "class Other not found", "DPMechanism")


def test_name_is_not_a_class(tmp_path):
    path = write(tmp_path, "fn.py", "def DPMechanism(): pass\n")
    expect_error(path, "DPMechanism is not a class")


@pytest.mark.parametrize("method", ["clip_and_noise", "get_effective_sigma"])
def test_class_lacks_method(tmp_path, method):
    body = GOOD_BODY.replace(f"def {method}", f"def _{method}")
    path = write(tmp_path, "partial.py", body)
    expect_error(path, str(path), f"lacks {method}")


def test_named_class_loads(tmp_path):
    path = write(tmp_path, "named.py", GOOD_BODY.replace("class DPMechanism", "class Mine"))
    cls = load_mechanism_class(f"{path}:Mine")
    assert cls.__name__ == "Mine"


def test_sibling_import_and_path_restored(tmp_path):
    write(tmp_path, "helper_for_dpaudit_test.py", "FACTOR = 2.5\n")
    path = write(
        tmp_path,
        "uses_helper.py",
        "from helper_for_dpaudit_test import FACTOR\n" + GOOD_BODY.replace("return self.sigma", "return self.sigma * FACTOR"),
    )
    before = list(sys.path)
    cls = load_mechanism_class(str(path))
    assert sys.path == before
    mech = construct(cls, CONFIG)
    assert mech.get_effective_sigma(0, 0) == pytest.approx(0.6519 * 2.5)
    sys.modules.pop("helper_for_dpaudit_test", None)


def test_each_load_is_a_fresh_module(tmp_path):
    path = write(tmp_path, "stateful.py", "COUNT = []\n" + GOOD_BODY)
    a = load_mechanism_class(str(path))
    b = load_mechanism_class(str(path))
    assert a is not b and a.__module__ != b.__module__


def test_dataclass_in_user_file(tmp_path):
    body = "from dataclasses import dataclass\n@dataclass\nclass Cfg:\n    beta: float = 0.9\n" + GOOD_BODY
    path = write(tmp_path, "dc.py", body)
    assert load_mechanism_class(str(path)).__name__ == "DPMechanism"


# ----- construct and the factory ------------------------------------------------


def test_construct_passes_seed_arguments(tmp_path):
    body = GOOD_BODY.replace("self.sigma = noise_multiplier", "self.args = dict(locals()); self.sigma = noise_multiplier")
    cls = load_mechanism_class(str(write(tmp_path, "args.py", body)))
    mech = construct(cls, CONFIG)
    mech.args.pop("self")
    assert mech.args == CONFIG.seed_arguments()


def test_construct_error_names_file_and_exception(tmp_path):
    body = GOOD_BODY.replace(
        "self.sigma = noise_multiplier", "raise ValueError('batch_size too small for the count noise')"
    )
    path = write(tmp_path, "raises.py", body)
    cls = load_mechanism_class(str(path))
    with pytest.raises(InputError) as info:
        construct(cls, CONFIG)
    assert str(info.value) == (
        f"{path}: DPMechanism(...) raised ValueError: batch_size too small for the count noise"
    )


def test_construct_wrong_signature(tmp_path):
    body = GOOD_BODY.replace("dataset_size, batch_size, epochs, target_epsilon, target_delta", "dataset_size")
    path = write(tmp_path, "sig.py", body)
    with pytest.raises(InputError, match=r"DPMechanism\(\.\.\.\) raised TypeError"):
        construct(load_mechanism_class(str(path)), CONFIG)


def test_factory_gives_fresh_instances_and_pickles(tmp_path):
    path = write(tmp_path, "good.py", GOOD_BODY)
    factory = MechanismFactory.load(str(path), CONFIG)
    a, b = factory.new(), factory.new()
    assert a is not b and type(a) is factory.cls
    assert factory.path == path
    clone = pickle.loads(pickle.dumps(factory))
    assert clone.spec == factory.spec and clone.config == CONFIG
    assert clone.new().get_effective_sigma(0, 0) == pytest.approx(0.6519)


def test_factory_load_surfaces_constructor_error(tmp_path):
    body = GOOD_BODY.replace("self.sigma = noise_multiplier", "raise RuntimeError('no')")
    path = write(tmp_path, "bad_init.py", body)
    with pytest.raises(InputError, match=f"{path.name}: DPMechanism\\(\\.\\.\\.\\) raised RuntimeError: no"):
        MechanismFactory.load(str(path), CONFIG)


# ----- declarations -------------------------------------------------------------


class _Mech:
    def __init__(self, sigma, sensitivity=None):
        self.sigma = sigma
        if sensitivity is not None:
            self.get_sensitivity = lambda step, epoch: sensitivity

    def clip_and_noise(self, grads, step, epoch):
        return grads

    def get_effective_sigma(self, step, epoch):
        if isinstance(self.sigma, Exception):
            raise self.sigma
        return self.sigma


def test_declared_sigma_value():
    assert declared_sigma(_Mech(0.7), 3, 0) == 0.7


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_declared_sigma_rejects_non_positive(bad):
    with pytest.raises(InputError) as info:
        declared_sigma(_Mech(bad), 17, 1)
    message = str(info.value)
    assert "get_effective_sigma(step=17, epoch=1)" in message and "step 17" in message
    assert "test_loader.py" in message


def test_declared_sigma_rejects_non_number():
    with pytest.raises(InputError, match="must be a number"):
        declared_sigma(_Mech("high"), 0, 0)


def test_declared_sigma_reports_exception():
    with pytest.raises(InputError, match=r"step=5, epoch=0\) raised KeyError"):
        declared_sigma(_Mech(KeyError(5)), 5, 0)


def test_declared_sensitivity_default_and_hook():
    assert declared_sensitivity(_Mech(1.0), 0, 0, default=2.0) == 2.0
    assert declared_sensitivity(_Mech(1.0, sensitivity=0.5), 0, 0, default=2.0) == 0.5


@pytest.mark.parametrize("bad", [math.nan, 0.0, -0.1])
def test_declared_sensitivity_rejects(bad):
    with pytest.raises(InputError, match=r"get_sensitivity\(step=9, epoch=0\).*step 9"):
        declared_sensitivity(_Mech(1.0, sensitivity=bad), 9, 0, default=1.0)


def test_epoch_of():
    assert CONFIG.steps_per_epoch == 234
    assert [epoch_of(s, CONFIG) for s in (0, 233, 234, 1169)] == [0, 0, 1, 4]


# ----- the reference mechanisms ---------------------------------------------------


@pytest.mark.parametrize("path", sorted(MECHANISMS.glob("*.py")), ids=lambda p: p.name)
def test_reference_mechanisms_load(path):
    factory = MechanismFactory.load(str(path), CONFIG)
    mech = factory.new()
    sigma = declared_sigma(mech, 0, 0)
    assert sigma > 0
    assert declared_sensitivity(mech, 0, 0, CONFIG.max_grad_norm) > 0


def test_reference_mechanisms_present():
    names = {p.name for p in MECHANISMS.glob("*.py")}
    assert {
        "dpsgd.py", "autos.py", "adaptive_clip_noised.py", "decreasing_sigma.py",
        "centered_quantile_clip.py", "cosine_schedule.py", "lr_adaptive.py", "realised_batch_norm.py",
    } <= names
