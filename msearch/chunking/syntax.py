"""Source code as a syntax tree: which language a file is, and its definitions.

Why a syntax tree: a passage that is one function (or a class with its
first methods) answers a question about that function; a passage cut at
a token count starts in one function and ends in the next. And the tree
says which symbols each passage defines, so that a query naming a symbol
finds its definition rather than its uses.

Grammars come prebuilt with ``tree-sitter-language-pack`` (no compiler at
install), imported only when a code file is chunked: never on the query
path. A language without a grammar here, or a file the parser cannot read,
is chunked as plain text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# File extension (lower case) -> the grammar's name in tree-sitter-language-pack.
EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".java": "java",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".sc": "scala",
    ".rs": "rust",
    ".rb": "ruby",
    ".rake": "ruby",
    ".gemspec": "ruby",
    ".ex": "elixir",
    ".exs": "elixir",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".c++": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
    ".h++": "cpp",
    ".ipp": "cpp",
    ".cs": "csharp",
    ".swift": "swift",
    ".lua": "lua",
    ".sh": "bash",
    ".bash": "bash",
    ".bats": "bash",
    ".zsh": "bash",
    ".php": "php",
    ".dart": "dart",
    ".zig": "zig",
    ".hs": "haskell",
    ".ml": "ocaml",
    ".mli": "ocaml_interface",
    ".erl": "erlang",
    ".hrl": "erlang",
    ".clj": "clojure",
    ".cljs": "clojure",
    ".cljc": "clojure",
    ".jl": "julia",
    ".r": "r",
    ".pl": "perl",
    ".pm": "perl",
    ".groovy": "groovy",
    ".gradle": "groovy",
    ".m": "objc",
    ".mm": "objc",
    ".vue": "vue",
    ".svelte": "svelte",
}
# Files known by name rather than extension.
FILENAMES: dict[str, str] = {
    "Rakefile": "ruby",
    "Gemfile": "ruby",
    "Makefile": "make",
}

# Definitions: node types whose name is a symbol a query may ask for.
# Types a grammar does not have are left out of its query.
DEFINITIONS: dict[str, tuple[str, ...]] = {
    "python": ("function_definition", "class_definition"),
    "javascript": (
        "function_declaration",
        "generator_function_declaration",
        "class_declaration",
        "method_definition",
    ),
    "typescript": (
        "function_declaration",
        "generator_function_declaration",
        "function_signature",
        "class_declaration",
        "abstract_class_declaration",
        "method_definition",
        "method_signature",
        "abstract_method_signature",
        "interface_declaration",
        "type_alias_declaration",
        "enum_declaration",
        "internal_module",
    ),
    "go": ("function_declaration", "method_declaration", "type_spec", "type_alias"),
    "java": (
        "class_declaration",
        "interface_declaration",
        "enum_declaration",
        "record_declaration",
        "annotation_type_declaration",
        "method_declaration",
        "constructor_declaration",
    ),
    "kotlin": ("class_declaration", "object_declaration", "function_declaration", "type_alias"),
    "scala": (
        "class_definition",
        "object_definition",
        "trait_definition",
        "enum_definition",
        "function_definition",
        "function_declaration",
        "given_definition",
        "type_definition",
    ),
    "rust": (
        "function_item",
        "function_signature_item",
        "struct_item",
        "enum_item",
        "union_item",
        "trait_item",
        "impl_item",
        "mod_item",
        "macro_definition",
        "type_item",
        "const_item",
        "static_item",
    ),
    "ruby": ("method", "singleton_method", "class", "module"),
    "c": (
        "function_definition",
        "struct_specifier",
        "enum_specifier",
        "union_specifier",
        "type_definition",
        "preproc_function_def",
    ),
    "cpp": (
        "function_definition",
        "struct_specifier",
        "enum_specifier",
        "union_specifier",
        "class_specifier",
        "type_definition",
        "namespace_definition",
        "alias_declaration",
        "concept_definition",
        "preproc_function_def",
    ),
    "csharp": (
        "class_declaration",
        "struct_declaration",
        "interface_declaration",
        "enum_declaration",
        "record_declaration",
        "method_declaration",
        "constructor_declaration",
        "property_declaration",
        "delegate_declaration",
        "namespace_declaration",
        "file_scoped_namespace_declaration",
    ),
    "swift": (
        "class_declaration",
        "protocol_declaration",
        "function_declaration",
        "protocol_function_declaration",
        "init_declaration",
        "typealias_declaration",
    ),
    "lua": ("function_declaration",),
    "bash": ("function_definition",),
    "php": (
        "function_definition",
        "class_declaration",
        "interface_declaration",
        "trait_declaration",
        "enum_declaration",
        "method_declaration",
        "namespace_definition",
    ),
    "dart": ("class_definition", "function_signature", "method_signature", "enum_declaration"),
    "zig": ("function_declaration",),
    "haskell": ("function", "data_type", "newtype", "class", "type_synomym"),
    "ocaml": ("value_definition", "type_definition", "module_definition", "class_definition"),
    "erlang": ("fun_decl", "record_decl", "type_alias"),
    "julia": ("function_definition", "struct_definition", "module_definition", "macro_definition"),
    "groovy": ("class_declaration", "method_declaration", "function_definition"),
    "objc": ("class_interface", "class_implementation", "method_definition", "function_definition"),
}
DEFINITIONS["tsx"] = DEFINITIONS["typescript"]
DEFINITIONS["ocaml_interface"] = DEFINITIONS["ocaml"]
DEFINITIONS["elixir"] = ("call",)  # only calls of ELIXIR_DEFINERS (see _query)
# Elixir defines with macro calls: ``def name(args) do ... end``.
ELIXIR_DEFINERS = frozenset(
    {
        "def",
        "defp",
        "defmacro",
        "defmacrop",
        "defguard",
        "defguardp",
        "defdelegate",
        "defmodule",
        "defprotocol",
        "defimpl",
        "defstruct",
        "defexception",
    }
)
# Node types holding the name of what a definition defines, where the
# grammar gives it no ``name`` field.
_NAME_TYPES = frozenset(
    {
        "identifier",
        "type_identifier",
        "simple_identifier",
        "field_identifier",
        "property_identifier",
        "constant",
        "scope_resolution",
        "qualified_identifier",
        "destructor_name",
        "operator_name",
        "name",
        "word",
    }
)
# Separators of qualified names, written as "." in symbols.
_QUALIFIERS = ("::", "->", "\\", ":")


def is_code_path(path: str) -> bool:
    """Whether a file's name says it is source code (no grammar loaded: the
    query path asks this of every file)."""
    base = path.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base in FILENAMES or (dot > 0 and base[dot:].lower() in EXTENSIONS)


def language_of(path: str) -> str | None:
    """The grammar for a file, by its name; None for anything else (prose,
    data, a language without a grammar here)."""
    base = os.path.basename(path)
    if base in FILENAMES:
        lang: str | None = FILENAMES[base]
    else:
        lang = EXTENSIONS.get(os.path.splitext(base)[1].lower())
    return lang if lang is not None and lang in DEFINITIONS and _available(lang) else None


@cache
def _available(lang: str) -> bool:
    try:
        _parser(lang)
    except Exception:  # not installed, or no such grammar in this version
        return False
    return True


@cache
def _parser(lang: str) -> Any:
    from tree_sitter_language_pack import get_parser

    return get_parser(lang)  # type: ignore[arg-type]


@cache
def _query(lang: str) -> Any:
    """One query capturing every definition node of the language (run in C:
    a walk of every node in Python costs seconds on a large repository)."""
    from tree_sitter import Query
    from tree_sitter_language_pack import get_language

    language = get_language(lang)  # type: ignore[arg-type]
    if lang == "elixir":
        return Query(language, "((call target: (identifier) @kw) @def)")
    if lang in ("javascript", "typescript", "tsx"):
        # ``const handler = (req) => ...``: a function with a name.
        extra = (
            "(variable_declarator name: (identifier) value: "
            "[(arrow_function) (function_expression) (generator_function)]) @def"
        )
    else:
        extra = ""
    types = [t for t in DEFINITIONS[lang] if language.id_for_node_kind(t, True)]
    pattern = "[" + " ".join(f"({t})" for t in types) + "] @def"
    return Query(language, pattern + ("\n" + extra if extra else ""))


@dataclass
class Definition:
    """A definition in a file: lines 0-based, inclusive."""

    name: str  # as written ("Rack::Builder", "get_user"); qualifiers normalized to "."
    kind: str  # the node type
    first: int  # first line of the node (with its decorators, where the grammar includes them)
    name_line: int  # the line holding the name: the signature line
    last: int
    parent: Definition | None = None
    children: list[Definition] = field(default_factory=list)

    def qualified(self) -> list[str]:
        """The name with each chain of enclosing names before it: "call",
        "Builder.call", "Rack.Builder.call"."""
        out = [self.name]
        prefix = self.name
        node = self.parent
        while node is not None:
            prefix = f"{node.name}.{prefix}"
            out.append(prefix)
            node = node.parent
        return out


@dataclass
class Tree:
    """A parsed file: its root node and definitions, outermost first."""

    root: Any
    definitions: list[Definition]
    lang: str


def parse(text: str, lang: str) -> Tree | None:
    """The syntax tree of ``text`` and its definitions; None when the parser
    gives up (a grammar's limits, a timeout)."""
    data = text.encode("utf-8", "surrogatepass")
    try:
        root = _parser(lang).parse(data).root_node
    except Exception:
        return None
    if root is None:
        return None
    return Tree(root, definitions(root, data, lang), lang)


def definitions(root: Any, data: bytes, lang: str) -> list[Definition]:
    """Every named definition under ``root``, each linked to the definition
    enclosing it; in source order."""
    from tree_sitter import QueryCursor

    caps = QueryCursor(_query(lang)).captures(root)
    nodes = caps.get("def", [])
    found: list[tuple[int, int, Any, str]] = []
    for node in nodes:
        name = _name(node, data, lang)
        if name:
            found.append((node.start_byte, -node.end_byte, node, name))
    found.sort(key=lambda f: (f[0], f[1]))
    out: list[Definition] = []
    stack: list[tuple[int, Definition]] = []  # (end byte, definition)
    for start, neg_end, node, name in found:
        while stack and stack[-1][0] <= start:
            stack.pop()
        parent = stack[-1][1] if stack else None
        name_node = node.child_by_field_name("name")
        d = Definition(
            name=name,
            kind=node.type,
            first=node.start_point[0],
            name_line=(name_node or node).start_point[0],
            last=extent(node)[1],
            parent=parent,
        )
        if parent is not None:
            parent.children.append(d)
        out.append(d)
        stack.append((-neg_end, d))
    return out


def _text(node: Any, data: bytes) -> str:
    return data[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _name(node: Any, data: bytes, lang: str) -> str:
    """What a definition node defines, or "" when it has no name (an
    anonymous class, a ``def`` call that is not a definition)."""
    if lang == "elixir":
        return _elixir_name(node, data)
    if node.type == "impl_item":  # Rust: ``impl Trait for Type``: the type
        target = node.child_by_field_name("type")
        return _clean(_text(target, data)) if target is not None else ""
    named = node.child_by_field_name("name")
    if named is None and node.type in ("function_definition", "type_definition"):
        named = _declarator_name(node)  # C and C++: the name is in the declarator
    if named is None:
        for child in node.named_children:
            if child.type in _NAME_TYPES:
                named = child
                break
    if named is None:
        return ""
    return _clean(_text(named, data))


def _declarator_name(node: Any) -> Any:
    """The identifier at the bottom of a C declarator chain
    (``static int *foo(int)`` -> ``foo``)."""
    decl = node.child_by_field_name("declarator")
    while decl is not None:
        inner = decl.child_by_field_name("declarator")
        if inner is None:
            return decl
        decl = inner
    return None


def _elixir_name(node: Any, data: bytes) -> str:
    target = node.child_by_field_name("target")
    if target is None or _text(target, data) not in ELIXIR_DEFINERS:
        return ""
    args = next((c for c in node.named_children if c.type == "arguments"), None)
    if args is None or not args.named_children:
        return "" if _text(target, data) != "defstruct" else "__struct__"
    first = args.named_children[0]
    while first is not None and first.type in ("binary_operator", "call"):
        # ``def name(a) when guard``: the call left of ``when``; ``name(a)``: its target.
        if first.type == "binary_operator":
            first = first.child_by_field_name("left")
        else:
            first = first.child_by_field_name("target")
    return _clean(_text(first, data)) if first is not None else ""


def _clean(name: str) -> str:
    """One line, qualifiers written as "."."""
    name = name.strip().split("\n", 1)[0].strip()
    for sep in _QUALIFIERS:
        name = name.replace(sep, ".")
    return name.strip(".")[:200]


def extent(node: Any) -> tuple[int, int]:
    """First and last line (0-based, inclusive) of a node, without the
    comments some grammars attach to its end (a doc comment that belongs to
    the next definition)."""
    last_node = node
    while True:
        # The last child that is not extra (one node object a step: building
        # every child was a tenth of chunking's time).
        k = last_node.child_count
        child = None
        while k:
            k -= 1
            child = last_node.child(k)
            if not child.is_extra:
                break
            child = None
        if child is None:
            break
        last_node = child
    end_row, end_col = last_node.end_point
    if end_col == 0 and end_row > node.start_point[0]:
        end_row -= 1
    return node.start_point[0], max(end_row, node.start_point[0])


def symbol_names(defs: Sequence[Definition]) -> list[str]:
    """The symbols a passage defines, as a query may name them: each simple
    and qualified ("call", "Builder.call"), the last part of a dotted name
    ("Query" for ``defmodule Ecto.Query``), and a name without its sigil
    ("ZodError" for ``$ZodError``)."""
    out: list[str] = []

    def add(name: str) -> None:
        if name and name not in out:
            out.append(name)

    for d in defs:
        if "." in d.name:
            add(d.name.rsplit(".", 1)[1])
        for n in d.qualified():
            add(n)
        bare = d.name.lstrip("$_@")
        if bare != d.name and not bare.startswith("."):
            add(bare)
    return out
