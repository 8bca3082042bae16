"""kmod's files depend one way: each uses only the files below it in ORDER.

A small C scan, on the sources as they are (no compiler, no kernel headers):
comments and string literals are stripped, backslash-continued lines joined;
each file's top-level definitions are found (functions, whatever line their
return type is on; variables, also those a DEFINE_/DECLARE_ macro makes;
macros) and every identifier it uses, in function bodies, initializers,
macro bodies and #if conditions, member names and struct tags aside. A
name a file uses and another file offers (a non-static function or
variable of a .c file; a function or macro of a header, static inlines
included) is an edge from the first to the second. Declarations (extern,
prototypes) are not uses. Types and enum constants are not followed: they
are data layouts, and live in the headers at the bottom.

An edge to a file above is a failure, named with both files and the name;
if the higher file also uses the lower one, it is a cycle, and the failure
says so. A lower file reaches a higher one only through a function pointer
it is given: the pool's refill, which nta_reader.c sets; the hooks'
struct nta_serving_ops, which nta_dev.c gives them. kmod/README.md
describes the files.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest

KMOD = Path(__file__).resolve().parents[1] / "kmod"

# Highest first: each file may use only those after it.
ORDER = (
    "nta_main.c",  # load and unload, debugfs
    "nta_dev.c",  # /dev/nta, the table of served devices, attaching, allocating for one
    "nta_capture.c",  # the taps
    "nta_reader.c",  # a reader's rings
    "nta_hook.c",  # the ftrace redirects; asks nta_dev.c through the ops it is given
    "nta_pool.c",  # pools of chunks; refills through the function its reader gives it
    "nta_params.c",  # the module's parameters
    "nta.h",  # the door: what each .c file offers the others
    "nta_chunk.h",  # a chunk's life, pure functions
    "nta_compat.h",  # the kernels' differences
    "nta_uapi.h",  # the ABI
)
# Modules of their own (test only, see Kbuild): they use no NTA file, and none uses them.
APART = ("nta_caller.c", "ftrace_flip.c")

_LEXEME = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.S)
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|->|\S")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_NOT_A_USE_AFTER = frozenset({".", "->", "struct", "union", "enum"})
# Kernel macros that define static objects under a name made from their argument.
_STATIC_DEFINERS = frozenset({
    "DEFINE_SHOW_ATTRIBUTE", "DEFINE_SHOW_STORE_ATTRIBUTE", "DEFINE_SIMPLE_ATTRIBUTE",
    "DEFINE_DEBUGFS_ATTRIBUTE", "DEFINE_SEQ_ATTRIBUTE",
})  # fmt: skip


class Kind(Enum):
    FUNCTION = "function"
    VARIABLE = "variable"
    MACRO = "macro"


@dataclass(frozen=True)
class Definition:
    name: str
    kind: Kind
    static: bool
    line: int


@dataclass(frozen=True)
class Use:
    name: str
    line: int


@dataclass
class Scan:
    """One file: what it defines, what it uses, and what it declares (extern, prototypes)."""

    defined: dict[str, Definition]
    uses: list[Use]
    declared: set[str]


@dataclass(frozen=True)
class Edge:
    """``user`` uses ``name``, which ``owner`` defines, at ``user``'s ``line``."""

    user: str
    owner: str
    name: str
    kind: Kind
    line: int

    def __str__(self) -> str:
        what = f"{self.name}()" if self.kind is Kind.FUNCTION else f"{self.kind.value} {self.name}"
        return f"{self.user}:{self.line} uses {what} of {self.owner}"


@dataclass(frozen=True)
class Upward:
    """An edge to a file above; ``back``: the higher file uses the lower one too (a cycle)."""

    edge: Edge
    back: Edge | None

    def __str__(self) -> str:
        e = self.edge
        said = f"{e}, which is above {e.user} in ORDER"
        if self.back:
            said += f", and {self.back}: a cycle between {e.user} and {e.owner}"
        return (f"{said}. Move {e.name} to the file whose concern it is, or give "
                f"{e.user} a function pointer to call (as the pool's refill): a lower file "
                "reaches a higher one only through one")  # fmt: skip


@dataclass(frozen=True)
class Misplaced:
    """A file ORDER and APART do not place, or place but kmod/ does not have, or an
    edge to or from a module of its own; or a name two files offer."""

    what: str

    def __str__(self) -> str:
        return self.what


def _strip(text: str) -> str:
    """Comments become as many newlines, string and character literals a 0."""

    def blank(m: re.Match[str]) -> str:
        s = m.group()
        return "\n" * s.count("\n") if s[0] == "/" else " 0 "

    return _LEXEME.sub(blank, text)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with their number, backslash-continued ones joined to the first."""
    out: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 1
    for n, line in enumerate(text.split("\n"), 1):
        if not parts:
            start = n
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        out.append((start, " ".join([*parts, line])))
        parts = []
    return out


Token = tuple[str, int]


def _uses(tokens: list[Token], but: int = -1) -> list[Use]:
    """The identifiers of ``tokens`` that name something (not members, not tags), bar
    the one at index ``but``."""
    return [
        Use(t, n)
        for i, (t, n) in enumerate(tokens)
        if i != but and _IDENT.fullmatch(t) and (i == 0 or tokens[i - 1][0] not in _NOT_A_USE_AFTER)
    ]


def _closing(tokens: list[Token], i: int) -> int:
    """The index of the brace closing the one at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += {"{": 1, "}": -1}.get(tokens[j][0], 0)
        if depth == 0:
            return j
    raise ValueError(f"line {tokens[i][1]}: unbalanced braces")


def _statement(stmt: list[Token], scan: Scan) -> None:
    """One top-level statement that is not a function definition."""
    words = [t for t, _ in stmt]
    if not words or words[0] == "extern":
        if words:
            cut = next((i for i, w in enumerate(words) if w in ("[", "(")), len(words))
            scan.declared.add(words[cut - 1])
        return
    static = "static" in words
    bare = [i for i, w in enumerate(words) if w not in ("static", "inline", "const")]
    first = bare[0] if bare else 0
    paren = words.index("(") if "(" in words else len(words)
    assign = min((words.index(w) for w in ("=", "{", "[") if w in words), default=len(words))
    if words[0] == "typedef":
        scan.uses += _uses(stmt)
    elif paren == first + 1 and _IDENT.fullmatch(words[first]):
        # A macro invocation: DEFINE_MUTEX(name), DECLARE_WORK(name, fn), module_param(...).
        args = _split_args(stmt[paren + 1 : -1] if words[-1] == ")" else stmt[paren + 1 :])
        single = [a[0] for a in args if len(a) == 1 and _IDENT.fullmatch(a[0][0])]
        macro = words[first]
        if macro.startswith(("DEFINE_", "DECLARE_")) and single:
            name, line = single[0]
            static = static or macro in _STATIC_DEFINERS
            scan.defined.setdefault(name, Definition(name, Kind.VARIABLE, static, line))
            scan.uses += [u for u in _uses(stmt) if u.name != name]
        else:
            scan.uses += _uses(stmt)
    elif paren < assign and paren > 0 and _IDENT.fullmatch(words[paren - 1]):
        scan.declared.add(words[paren - 1])  # a prototype
        scan.uses += _uses(stmt, but=paren - 1)
    else:
        head = stmt[:assign]
        last = len(head) - 1
        if last > 0 and _IDENT.fullmatch(words[last]) and words[last - 1] not in _NOT_A_USE_AFTER:
            name, line = stmt[last]
            scan.defined.setdefault(name, Definition(name, Kind.VARIABLE, static, line))
            scan.uses += _uses(stmt, but=last)
        else:
            scan.uses += _uses(stmt)  # a type's definition, a forward declaration


def _split_args(tokens: list[Token]) -> list[list[Token]]:
    """A macro invocation's arguments, split at its top-level commas."""
    args: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        depth += {"(": 1, ")": -1}.get(tok[0], 0)
        if tok[0] == "," and depth == 0:
            args.append([])
        else:
            args[-1].append(tok)
    return args


def scan_file(path: Path) -> Scan:
    header = path.suffix == ".h"
    scan = Scan({}, [], set())
    tokens: list[Token] = []
    for n, line in _logical_lines(_strip(path.read_text())):
        d = re.match(r"\s*#\s*(\w+)(.*)", line)
        if not d:
            tokens += [(t, n) for t in _TOKEN.findall(line)]
        elif d[1] == "define":
            m = re.match(r"\s*([A-Za-z_]\w*)(.*)", d[2])
            if m:
                scan.defined.setdefault(m[1], Definition(m[1], Kind.MACRO, not header, n))
                scan.uses += _uses([(t, n) for t in _TOKEN.findall(m[2])])
        elif d[1] in ("if", "elif", "ifdef", "ifndef"):
            scan.uses += _uses([(t, n) for t in _TOKEN.findall(d[2]) if t != "defined"])
    stmt: list[Token] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i][0]
        if tok == "{" and stmt and stmt[-1][0] == ")" and "(" in (t for t, _ in stmt):
            # A function's body; its name is what the first parenthesis follows.
            end = _closing(tokens, i)
            k = [t for t, _ in stmt].index("(") - 1
            name, at = stmt[k]
            static = "static" in (t for t, _ in stmt[:k])
            scan.defined.setdefault(name, Definition(name, Kind.FUNCTION, static, at))
            scan.uses += _uses(stmt, but=k) + _uses(tokens[i + 1 : end])
            stmt, i = [], end + 1
        elif tok == "{":
            end = _closing(tokens, i)
            stmt += tokens[i : end + 1]
            i = end + 1
        elif tok == ";":
            _statement(stmt, scan)
            stmt, i = [], i + 1
        else:
            stmt.append(tokens[i])
            i += 1
    _statement(stmt, scan)
    return scan


def offered(file: str, d: Definition) -> bool:
    """What other files may use: a .c file's non-static names, all of a header's."""
    return file.endswith(".h") or not d.static


def scan_tree(kmod: Path) -> dict[str, Scan]:
    return {p.name: scan_file(p) for p in sorted([*kmod.glob("*.c"), *kmod.glob("*.h")])}


def edges(scans: dict[str, Scan]) -> tuple[list[Edge], list[Misplaced]]:
    """Every use of a name another file offers; and every name two files offer."""
    owner: dict[str, str] = {}
    twice = []
    for file, scan in scans.items():
        for d in scan.defined.values():
            if not offered(file, d):
                continue
            if d.name in owner:
                twice.append(Misplaced(f"{d.name} is defined in {owner[d.name]} and {file}"))
            owner.setdefault(d.name, file)
    found = []
    for file, scan in scans.items():
        seen = set()
        for u in scan.uses:
            other = owner.get(u.name)
            if other and other != file and u.name not in scan.defined and u.name not in seen:
                seen.add(u.name)
                found.append(Edge(file, other, u.name, scans[other].defined[u.name].kind, u.line))
    return found, twice


def check(kmod: Path) -> list[Upward | Misplaced]:
    """Every way kmod's files break ORDER and APART."""
    scans = scan_tree(kmod)
    found, twice = edges(scans)
    out: list[Upward | Misplaced] = [*twice]
    placed = (*ORDER, *APART)
    out += [Misplaced(f"kmod/{f} is in neither ORDER nor APART of tests/test_kmod_layers.py: "
                      "place it") for f in scans if f not in placed]  # fmt: skip
    out += [Misplaced(f"tests/test_kmod_layers.py places {f}, which kmod/ does not have")
            for f in placed if f not in scans]  # fmt: skip
    rank = {f: i for i, f in enumerate(ORDER)}
    for e in found:
        if e.user in APART or e.owner in APART:
            out.append(Misplaced(f"{e}: {e.user if e.user in APART else e.owner} is a module "
                                 "of its own (APART)"))  # fmt: skip
        elif e.user in rank and e.owner in rank and rank[e.owner] < rank[e.user]:
            back = next((b for b in found if (b.user, b.owner) == (e.owner, e.user)), None)
            out.append(Upward(e, back))
    return out


def test_kmod_files_depend_one_way() -> None:
    problems = check(KMOD)
    assert problems == [], "\n".join(map(str, problems))


def test_the_scan_finds_every_definition_the_door_declares() -> None:
    """What nta.h declares is what NTA's .c files offer, both ways: the scan misses no
    definition (a return type on the line before, a DEFINE_ macro) and makes up none."""
    scans = scan_tree(KMOD)
    c_files = [f for f in ORDER if f.endswith(".c")]
    defined = {n for f in c_files for n, d in scans[f].defined.items() if offered(f, d)}
    assert defined == scans["nta.h"].declared
    assert scans["nta_reader.c"].defined["nta_reader_drain_locked"].kind is Kind.FUNCTION
    assert scans["nta_dev.c"].defined["nta_readers_lock"].kind is Kind.VARIABLE
    assert scans["nta_hook.c"].defined["nta_hooks_lock"].static  # static DEFINE_MUTEX


def test_the_scan_sees_the_known_edges() -> None:
    found, twice = edges(scan_tree(KMOD))
    pairs = {(e.user, e.owner, e.name) for e in found}
    assert twice == []
    assert ("nta_dev.c", "nta_reader.c", "nta_reader_drain_locked") in pairs
    assert ("nta_dev.c", "nta_capture.c", "nta_tap_rcv") in pairs  # named, not called
    assert ("nta_capture.c", "nta_chunk.h", "nta_chunk_publishable") in pairs  # an inline
    assert ("nta_hook.c", "nta_compat.h", "NTA_NAPI_ALLOC_HAS_GFP") in pairs  # in an #if
    assert ("nta_pool.c", "nta_params.c", "nta_node_order") in pairs
    # What the pool knows of its reader is the function pointer it is given.
    assert {e.owner for e in found if e.user == "nta_pool.c"} == {
        "nta_params.c", "nta.h", "nta_chunk.h",
    }  # fmt: skip


def test_the_readme_lists_the_files_in_this_order() -> None:
    readme = (KMOD / "README.md").read_text()
    table = readme.split("## Files, each using only those after it")[1].split("\n## ")[0]
    listed = [n for cell in re.findall(r"^\| (.+?) \|", table, re.M)
              for n in re.findall(r"`([^`]+)`", cell)]  # fmt: skip
    assert [n for n in listed if n in ORDER] == list(ORDER)
    assert set(APART) <= set(listed)


def _plant(tmp_path: Path, edits: list[tuple[str, str, str]]) -> Path:
    """A copy of kmod/ with each (file, old, new) edit made; old "" appends new."""
    kmod = tmp_path / "kmod"
    kmod.mkdir()
    for p in [*KMOD.glob("*.c"), *KMOD.glob("*.h")]:
        shutil.copy(p, kmod / p.name)
    for file, old, new in edits:
        path = kmod / file
        text = path.read_text() if path.exists() else ""
        assert old in text, (file, old)
        path.write_text(text.replace(old, new, 1) if old else text + new)
    return kmod


REFILL = "pool->refill(pool, holds);"
DRAIN = "nta_reader_drain_locked(container_of(pool, struct nta_reader, pool), holds, 64);"


@pytest.mark.parametrize(
    ("edits", "found"),
    [
        pytest.param(
            [("nta_pool.c", REFILL, DRAIN)],
            "nta_pool.c:{} uses nta_reader_drain_locked() of nta_reader.c, which is above "
            "nta_pool.c in ORDER, and nta_reader.c:{} uses nta_...() of nta_pool.c: a cycle "
            "between nta_pool.c and nta_reader.c.",
            id="the-pool-calls-its-reader-a-cycle",
        ),
        pytest.param(
            [
                ("nta_reader.c", "void nta_reader_drain_locked(", "void\nnta_reader_drain_locked("),
                ("nta_hook.c", "nta_ops = ops;", "nta_ops = ops;\n\t" + DRAIN),
            ],
            "nta_hook.c:{} uses nta_reader_drain_locked() of nta_reader.c, which is above",
            id="a-return-type-on-the-line-before",
        ),
        pytest.param(
            [
                (
                    "nta.h",
                    "#endif /* _NTA_H */",
                    "#define NTA_TAKE_BACK(r, h) \\\n\tnta_reader_drain_locked(r, h, 64)\n#endif",
                )
            ],
            "nta.h:{} uses nta_reader_drain_locked() of nta_reader.c",
            id="a-header-macro",
        ),
        pytest.param(
            [
                (
                    "nta_chunk.h",
                    "#endif /* _NTA_CHUNK_H */",
                    "static inline void nta_chunk_drop(void *p, void *c)\n"
                    "{\n\tnta_pool_untake_locked(p, c);\n}\n#endif",
                )
            ],
            "nta_chunk.h:{} uses nta_pool_untake_locked() of nta_pool.c",
            id="a-header-inline",
        ),
        pytest.param(
            [("nta_pool.c", REFILL, "nta_pool_reclaim_all(&nta.common);")],
            "nta_pool.c:{} uses variable nta of nta_dev.c",
            id="a-variable-above",
        ),
        pytest.param(
            [("nta_params.c", "", "\nvoid nta_late(void)\n{\n\tnta_stats_sum(0);\n}\n")],
            "nta_params.c:{} uses nta_stats_sum() of nta_dev.c",
            id="the-lowest-c-file",
        ),
        pytest.param(
            [("nta_caller.c", "", "\nvoid nta_caller_more(void)\n{\n\tnta_hooks_put();\n}\n")],
            "nta_caller.c:{} uses nta_hooks_put() of nta_hook.c: nta_caller.c is a module of",
            id="a-module-of-its-own",
        ),
        pytest.param(
            [("nta_new.c", "", "int nta_new(void)\n{\n\treturn 0;\n}\n")],
            "kmod/nta_new.c is in neither ORDER nor APART",
            id="an-unplaced-file",
        ),
    ],
)
def test_the_check_fails_on_a_planted_wrong_way_use(
    tmp_path: Path, edits: list[tuple[str, str, str]], found: str
) -> None:
    problems = [str(p) for p in check(_plant(tmp_path, edits))]
    pattern = re.escape(found).replace(re.escape("{}"), r"\d+").replace(re.escape("..."), r"\w+")
    assert len(problems) == 1 and re.match(pattern, problems[0]), problems


def test_what_is_not_a_use_passes(tmp_path: Path) -> None:
    """A higher file's names in a comment, a string, as a member or a struct tag, and a
    lower file's static function of the same name as a higher one's, are no edges."""
    kmod = _plant(tmp_path, [
        ("nta_pool.c", REFILL, REFILL + " /* not nta_reader_drain_locked() */\n"
         '\tpr_debug("nta_reader_drain_locked %d\\n", pool->nta_stats_sum);\n'
         "\t{ struct nta_tap_rcv *t = NULL; (void)t; }\n"
         "\tnta_stats_add(0);"),
        ("nta_pool.c", "", "\nstatic void nta_stats_add(void *s)\n{\n}\n"),
    ])  # fmt: skip
    assert check(kmod) == []
