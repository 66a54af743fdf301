"""What PyTorch's loaders would run from an uploaded file, refused before they load it.

``torch.export.load`` is documented as unsafe for untrusted files ("uses pickle under
the hood"), and reading torch 2.13's loader shows where: pickled weights, tensor
constants and example inputs go through ``torch.load(weights_only=False)`` (the example
inputs after a ``weights_only=True`` attempt fails), custom and opaque objects through
``pickle``; an AOTInductor package loads a shared library; symbolic shapes are strings
given to ``sympy.sympify``, which evaluates them as Python; a node's target is any
attribute path under ``torch``; a pytree spec may name a module to import. So before
``torch.export.load`` sees a file, ``check_export_archive`` requires, through torch's
own archive reader (the one the loader uses, so both read the same bytes): every
pickle in it loads with ``weights_only=True`` (the unpickler that builds tensors and
containers only: the same bytes then build the same tensors when the loader reads
them again), no custom or opaque objects, no compiled code, shape expressions made
of symbols, numbers and sympy's arithmetic only, targets among ATen operators (less
those that touch files), higher-order operators, ``operator``/``math`` arithmetic and
``torch.sym_*``, pytree specs of tuples, lists and dicts only.

``torch.jit.load`` (TorchScript) unpickles with TorchScript's own C++ unpickler, which
builds tensors, containers and the TorchScript classes compiled from the archive's
``code/`` (no Python import, no Python call), and the code then runs in TorchScript's
interpreter, which calls registered operators only. Some operators touch files
(``aten::save``, ``aten::from_file``, ``debugprims::load_tensor``):
``check_torchscript_archive`` refuses code that names them.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from maas.errors import UnsupportedArtifact, UntrustedArtifact

__all__ = ["check_export_archive", "check_torchscript_archive", "torch_zip_kind"]

#: Operators that read or write files, by name, in any namespace.
_FILE_OPS = frozenset({"from_file", "save", "load_tensor", "debugprims"})
_OPERATORS = frozenset(
    [
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "neg",
        "pos",
        "abs",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and_",
        "or_",
        "xor",
        "not_",
        "invert",
        "getitem",
    ]
)
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
#: The words a shape expression may use: sympy's constructors and torch's arithmetic.
_EXPR_WORDS = frozenset(
    [
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "True",
        "False",
        "positive",
        "integer",
        "nonnegative",
        "real",
        "Mod",
        "FloorDiv",
        "CeilDiv",
        "PythonMod",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "Pow",
        "PowByNatural",
        "FloatPow",
        "IntTrueDiv",
        "FloatTrueDiv",
        "TruncToInt",
        "FloorToInt",
        "CeilToInt",
        "RoundToInt",
        "ToFloat",
        "Identity",
        "ModularIndexing",
        "CleanDiv",
        "floor",
        "ceiling",
        "sqrt",
    ]
)
_EXPR_TOKEN = re.compile(
    r"\s+|'[A-Za-z_][A-Za-z0-9_]*'|[A-Za-z_][A-Za-z0-9_]*|\d+\.\d+|\d+|\*\*|//|[-+*/%(),=<>]"
)
_SYMBOL = re.compile(r"[a-z]+\d+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPEC_TYPES = frozenset(
    {
        None,
        "builtins.tuple",
        "builtins.list",
        "builtins.dict",
        "collections.OrderedDict",
        "torch.fx.immutable_collections.immutable_list",
        "torch.fx.immutable_collections.immutable_dict",
    }
)


def torch_zip_kind(path: Path) -> str | None:
    """``"export"`` (``torch.export.save``), ``"torchscript"`` (``torch.jit.save``),
    ``"pickle"`` (``torch.save``) or ``None``, from the names in a PyTorch zip: one
    top folder holding ``archive_format``; ``code/`` and ``data.pkl``; ``data.pkl``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    inner = {name.partition("/")[2] for name in names if "/" in name}
    if "archive_format" in inner:
        return "export"
    if "data.pkl" in inner:
        return "torchscript" if any(name.startswith("code/") for name in inner) else "pickle"
    return None


def _single_root(path: Path) -> list[str]:
    """The member names, all in one top folder and each once: torch's reader and
    Python's would otherwise be free to disagree on which bytes a name holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsupportedArtifact(
            f"not a readable PyTorch archive ({type(exc).__name__})"
        ) from None
    roots = {name.partition("/")[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise UnsupportedArtifact("a PyTorch archive keeps its files in one top folder")
    if len(set(names)) != len(names):
        raise UnsupportedArtifact("the PyTorch archive names a file twice")
    return names


def _refuse(why: str) -> UntrustedArtifact:
    return UntrustedArtifact(
        f"the torch.export archive holds {why}, which loading would run as code; maas "
        "loads exported programs of ATen operators with tensor weights only",
        details={"refused": why},
    )


def _check_pickle(data: bytes, what: str) -> None:
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:
        raise _refuse(f"a pickle that is not plain tensors ({what})") from None


def _check_target(target: str) -> None:
    if not _TARGET.fullmatch(target):
        raise _refuse(f"the call target {target[:100]!r}")
    parts = target.split(".")
    if parts[0] == "_operator" and len(parts) == 2 and parts[1] in _OPERATORS:
        return
    if parts[0] == "math" and len(parts) == 2:
        return
    if parts[0] == "torch" and len(parts) == 2 and parts[1].startswith(("sym_", "_sym_")):
        return
    operator = parts[:3] in (["torch", "ops", "aten"], ["torch", "ops", "higher_order"])
    if operator and not _FILE_OPS & set(parts):
        return
    raise _refuse(f"the call target {target[:100]!r}")


def _check_expr(expr: str) -> None:
    for token in _EXPR_TOKEN.findall(expr):
        word = token.strip("'")
        if _WORD.fullmatch(word) and word not in _EXPR_WORDS and not _SYMBOL.fullmatch(word):
            raise _refuse(f"the shape expression {expr[:100]!r}")
    if "".join(_EXPR_TOKEN.findall(expr)) != expr:
        raise _refuse(f"the shape expression {expr[:100]!r}")


def _check_spec(spec: Any) -> None:
    """A pytree spec: a tree of nodes of the plain container types; contexts are JSON
    (dict keys), where an ``__enum__`` object would import the module it names."""
    if isinstance(spec, list):
        for item in spec:
            _check_spec(item)
        return
    if not isinstance(spec, dict):
        return
    if "__enum__" in spec:
        raise _refuse("an enum in a pytree spec")
    if "type" in spec and spec["type"] not in _SPEC_TYPES:
        raise _refuse(f"the pytree type {str(spec['type'])[:100]!r}")
    context = spec.get("context")
    if isinstance(context, str):
        try:
            _check_spec(json.loads(context))
        except ValueError:
            raise _refuse("an unreadable pytree context") from None
    for child in spec.get("children_spec", []):
        _check_spec(child)


def _check_program(node: Any) -> None:
    """Walk a serialized program: every target, shape expression and pytree spec."""
    if isinstance(node, list):
        for item in node:
            _check_program(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("as_custom_obj", "class_fqn", "as_opaque_obj"):
            raise _refuse("a custom object")
        if key in ("target", "as_operator") and isinstance(value, str):
            _check_target(value)
        elif key == "expr_str" and isinstance(value, str):
            _check_expr(value)
        elif key in ("in_spec", "out_spec") and isinstance(value, str):
            try:
                _check_spec(json.loads(value))
            except ValueError:
                raise _refuse("an unreadable pytree spec") from None
        else:
            _check_program(value)


def _check_payloads(reader: Any, config_name: str, folder: str, what: str) -> None:
    from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX

    if config_name not in reader.get_file_names():
        raise UnsupportedArtifact(f"the torch.export archive lacks {config_name}")
    config = json.loads(reader.read_string(config_name)).get("config", {})
    for entry in config.values():
        name = str(entry.get("path_name", ""))
        if what == "constants" and not name.startswith(TENSOR_CONSTANT_FILENAME_PREFIX):
            raise _refuse("a custom object")
        if entry.get("use_pickle"):
            _check_pickle(reader.read_bytes(folder + name), what)


def check_export_archive(path: Path) -> None:
    """Refuse a ``torch.export.save`` archive that ``torch.export.load`` would run code
    from (see the module's docstring); a damaged one is ``UnsupportedArtifact``."""
    from torch.export.pt2_archive import constants as pt2
    from torch.export.pt2_archive._package import PT2ArchiveReader

    _single_root(path)
    try:
        with PT2ArchiveReader(str(path)) as reader:
            names = list(reader.get_file_names())
            if reader.read_string(pt2.ARCHIVE_FORMAT_PATH).strip() != pt2.ARCHIVE_FORMAT_VALUE:
                raise UnsupportedArtifact("not a torch.export archive")
            if reader.read_string(pt2.ARCHIVE_VERSION_PATH) != pt2.ARCHIVE_VERSION_VALUE:
                raise UnsupportedArtifact(
                    "the torch.export archive is of another version than this server's "
                    "torch reads; export it again with torch==2.13"
                )
            compiled = (pt2.AOTINDUCTOR_DIR, pt2.EXECUTORCH_DIR, pt2.MTIA_DIR)
            if any(name.startswith(compiled) for name in names):
                raise _refuse("compiled code (AOTInductor, ExecuTorch)")
            models = [n for n in names if n.startswith(pt2.MODELS_DIR) and n.endswith(".json")]
            if not models:
                raise UnsupportedArtifact("the torch.export archive holds no program")
            for name in models:
                model = name[len(pt2.MODELS_DIR) : -len(".json")]
                legacy = (f"{pt2.WEIGHTS_DIR}{model}.pt", f"{pt2.CONSTANTS_DIR}{model}.pt")
                if any(file in names for file in legacy):
                    raise _refuse("weights in the legacy pickled format")
                _check_program(json.loads(reader.read_string(name)))
                weights = pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model)
                _check_payloads(reader, weights, pt2.WEIGHTS_DIR, "weights")
                constants = pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model)
                _check_payloads(reader, constants, pt2.CONSTANTS_DIR, "constants")
                inputs = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
                if inputs in names:
                    _check_pickle(reader.read_bytes(inputs), "example inputs")
    except (UnsupportedArtifact, UntrustedArtifact):
        raise
    except Exception as exc:  # torch's reader on a damaged zip, a bad JSON, a missing file
        raise UnsupportedArtifact(
            f"not a readable torch.export archive ({type(exc).__name__})"
        ) from None


_FILE_OP_WORD = re.compile(r"\b(" + "|".join(sorted(_FILE_OPS)) + r")\b")


def check_torchscript_archive(path: Path) -> None:
    """Refuse TorchScript whose code names an operator that touches files."""
    names = _single_root(path)
    with zipfile.ZipFile(path) as archive:
        for name in names:
            if "/code/" in name and name.endswith(".py"):
                text = archive.read(name).decode("utf-8", "replace")
                if match := _FILE_OP_WORD.search(text):
                    raise UntrustedArtifact(
                        f"the TorchScript code calls {match.group(1)!r}, an operator that "
                        "reads or writes files; maas refuses it",
                        details={"refused": match.group(1)},
                    )
