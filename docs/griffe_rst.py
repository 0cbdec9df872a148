"""A griffe extension for the API reference: the docstrings' Sphinx markup
as Markdown.

pykregistry's docstrings (the Python modules' and those of the native
module's stubs, ``pykregistry/_native.pyi``) are written for readers of the
source and for Sphinx-style tools: roles such as :class:`Span`, literal
blocks introduced by ``::``, links written `text <url>`_, doctest examples.
mkdocstrings renders Markdown, so before it does, this extension rewrites
every docstring of the package:

- a role (``:class:``, ``:meth:``, ``:func:``, ``:attr:``, ``:data:``,
  ``:mod:``, ``:exc:``, ``:obj:``) becomes a cross-reference to the object
  it names, resolved the way Python would from the docstring's own scope;
  ``~`` shows only the last part of the name. A name inside pykregistry
  must be on a page of the reference (``mkdocs build --strict`` fails if
  not); a name outside it (``sys.unraisablehook``) is shown as code and
  linked only if some page documents it.
- `text <url>`_ becomes a Markdown link, and an escaped space (a
  backslash and a space, which RST needs after ``code`` directly followed
  by text) goes;
- a paragraph ending in ``::`` ends in ``:``, and the indented block after
  it, or any indented block of ``>>>`` examples, becomes a fenced code
  block (``pycon`` for examples, ``python`` for what parses as Python,
  ``text`` otherwise).

A function a stub declares only by its overloads is documented with
them (griffe waits for an implementation, which stubs do not have).
A native class's constructor is ``__new__`` in its stub; it is shown as
``__init__``, so that the reference writes it as the class's signature.

It also documents functions a module makes at import time (the level
shortcuts of ``pykregistry.shortcuts``, ``info_span = _span_at(Level.INFO)``):
read statically, they are attributes without a docstring, so a public name
of a module's ``__all__`` that the source shows as such an attribute is
replaced by what inspecting the imported module finds, its signature and
docstring. Everything else is read statically, the native module from its
stubs (``allow_inspection: false``).

Loaded by mkdocs.yml (``extensions: [docs/griffe_rst.py]``).
"""

from __future__ import annotations

import ast
import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|mod|exc|obj):`(?P<target>[^`]+)`")
LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>[^>`]+)>`_{1,2}")


class SphinxToMarkdown(griffe.Extension):
    """Rewrites every docstring of the loaded package (see the module)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            _overloads_only(obj)
            if isinstance(obj, griffe.Module):
                _inspect_generated(obj)
            elif isinstance(obj, griffe.Class):
                _new_as_init(obj)
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj, loader)


def _objects(obj: griffe.Object) -> list[griffe.Object]:
    """The object and every object it defines (aliases are not followed:
    the object they point to is converted where it is defined)."""
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found.extend(_objects(member))
    return found


def _inspect_generated(module: griffe.Module) -> None:
    """Public attributes of ``module`` that are functions at run time, as
    the functions inspection finds."""
    public = set(module.exports or ())
    generated = [
        name
        for name, member in module.members.items()
        if name in public and not member.is_alias and member.is_attribute and not member.docstring
    ]
    if not generated:
        return
    runtime = griffe.inspect(module.path, filepath=module.filepath)
    for name in generated:
        found = runtime.members.get(name)
        if isinstance(found, griffe.Function):
            found.parent = module
            module.set_member(name, found)


def _overloads_only(obj: griffe.Object) -> None:
    """A function that a stub declares only by ``@overload`` variants
    (``Registry.instrument``, ``Span.record``): griffe keeps them aside,
    waiting for an implementation that a stub does not have. The last one
    (its docstring, or the one that has a docstring) becomes the member, the
    others its overloads."""
    if not isinstance(obj, (griffe.Module, griffe.Class)):
        return
    for name, overloads in obj.overloads.items():
        if name in obj.members or not overloads:
            continue
        documented = [f for f in overloads if f.docstring] or overloads
        main = documented[-1]
        main.overloads = [f for f in overloads if f is not main]
        obj.set_member(name, main)


def _new_as_init(cls: griffe.Class) -> None:
    """A native class's constructor, ``__new__`` in its stub, shown as its
    ``__init__``, which the reference merges into the class's signature
    (``Registry(*, level=None, ...)``) and docstring."""
    new = cls.members.get("__new__")
    if not isinstance(new, griffe.Function) or "__init__" in cls.members:
        return
    cls.del_member("__new__")
    new.name = "__init__"
    new.returns = None
    if new.parameters and new.parameters[0].name == "cls":
        new.parameters[0].name = "self"
    cls.set_member("__init__", new)


def convert(text: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str:
    """``text`` with its Sphinx markup as Markdown (see the module)."""
    text = _blocks(text)
    # Roles and links only outside code: split on fences and inline code.
    parts = re.split(r"(```.*?```|``.+?``)", text, flags=re.S)
    for i in range(0, len(parts), 2):
        part = ROLE.sub(lambda m: _reference(m["target"], scope, loader), parts[i])
        part = LINK.sub(lambda m: f"[{m['text']}]({m['url']})", part)
        parts[i] = part.replace("\\ ", "")  # "``await``\\ s": RST's escaped space
    return "".join(parts)


def _reference(target: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str:
    shown = target.lstrip("~")
    if target.startswith("~"):
        shown = shown.rsplit(".", 1)[-1]
    path = _resolve(target.lstrip("~").removesuffix("()"), scope, loader)
    code = f"<code>{html.escape(shown)}</code>"
    if path is None:
        return code
    # Required (a missing page fails the build) inside pykregistry, for
    # public names; optional for the rest.
    public = path.startswith("pykregistry.") and not any(
        part.startswith("_") and part != "_native" for part in path.split(".")
    )
    optional = "" if public else " optional"
    return f'<autoref identifier="{html.escape(path)}"{optional}>{code}</autoref>'


def _resolve(name: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    """The full path ``name`` stands for in ``scope``, or None."""
    head, _, rest = name.partition(".")
    origin: griffe.Object | None = scope
    while origin is not None:
        try:
            found = origin.resolve(head)
        except griffe.NameResolutionError:
            origin = origin.parent
            continue
        path = f"{found}.{rest}" if rest else found
        try:
            obj = loader.modules_collection[path]
        except KeyError:
            return path if not path.startswith("pykregistry") else None
        return str(obj.path)
    # An absolute name (``pykregistry.Span``, ``sys.unraisablehook``).
    try:
        return str(loader.modules_collection[name].path)
    except KeyError:
        return None if name.startswith("pykregistry") else name


def _language(code: str) -> str:
    """``python`` for a block that parses as Python, ``text`` for the rest
    (a formula, a report)."""
    try:
        ast.parse(code)
    except SyntaxError:
        return "text"
    return "python"


def _blocks(text: str) -> str:
    """Literal blocks after ``::`` and doctest blocks as fenced code."""
    lines = text.splitlines()
    out: list[str] = []
    literal = False  # the last paragraph ended in "::"
    i = 0
    while i < len(lines):
        line = lines[i]
        starts_block = line.startswith("    ") and (literal or line.lstrip().startswith(">>>"))
        if starts_block and (not out or not out[-1].strip()):
            block: list[str] = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            while not block[-1].strip():
                block.pop()
            lang = "pycon" if block[0].startswith(">>>") else _language("\n".join(block))
            out.extend([f"```{lang}", *block, "```", ""])
            literal = False
            continue
        if line.strip():
            literal = line.rstrip().endswith("::")
            if literal:
                # "text::" reads "text:", "text ::" reads "text".
                head = line.rstrip()[:-2]
                line = head.rstrip() if head.endswith(" ") or not head else head + ":"
        out.append(line)
        i += 1
    return "\n".join(out)
