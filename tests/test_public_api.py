"""The public API: every name in each package's ``__all__`` resolves, and every public object is documented."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import bfn

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(bfn.__path__, prefix="bfn.")
    if not any(part.startswith("_") for part in name.split("."))
)
PUBLIC = [name for name in MODULES if hasattr(importlib.import_module(name), "__all__")]


def test_the_packages_declare_their_api():
    assert {"bfn.flows", "bfn.sampling", "bfn.likelihood", "bfn.metrics", "bfn.nets", "bfn.data", "bfn.testing"} <= set(
        PUBLIC
    )


@pytest.mark.parametrize("module_name", ["bfn", *PUBLIC])
def test_every_exported_name_resolves_and_is_documented(module_name):
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), f"{module_name} has no module docstring"
    names = module.__all__
    assert len(names) == len(set(names)), f"{module_name}.__all__ lists a name twice"
    undocumented = []
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ lists {name!r}, which does not resolve"
        obj = getattr(module, name)
        if name.startswith("__") or not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
            continue  # constants and version strings are documented where they are defined
        if not inspect.getdoc(obj):
            undocumented.append(name)
    assert not undocumented, f"{module_name}: public objects without a docstring: {undocumented}"


@pytest.mark.parametrize("module_name", ["bfn", *PUBLIC])
def test_public_classes_document_their_public_methods(module_name):
    module = importlib.import_module(module_name)
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not inspect.isclass(obj) or obj.__module__.split(".")[0] != "bfn":
            continue
        fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
        for attr, member in vars(obj).items():
            if attr.startswith("_") or attr in fields or not inspect.isfunction(member):
                continue
            if not inspect.getdoc(getattr(obj, attr)):  # getdoc follows the documented base-class method
                missing.append(f"{name}.{attr}")
    assert not missing, f"{module_name}: public methods without a docstring: {missing}"
