"""Python source code from the standard library, for tuning the code sibling of chapter 6.

The paper compares Llama-2 with CodeLlama, Llama-2 trained on a large code corpus. Our stand-in
for that corpus is the source every Python installation carries: the pure-Python modules of the
standard library listed in MODULES. The chapter tunes the Gemma base on it with the ordinary
language-modelling loss (every token of a chunk is a target), so the sibling learns "the text
is code" as CodeLlama did, at a far smaller dose.

The text depends on the Python version that runs this (3.11 here), so the data is identified by
the SHA-256 of what was read (`version`), and that hash is part of the tuned model's cache key:
a machine with another Python tunes, and records, a model of its own.
"""
from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cpbook import cache

# Plain modules present as single files in every Python from 3.10 to 3.13.
MODULES = ("argparse", "base64", "bisect", "calendar", "colorsys", "configparser", "contextlib", "copy",
           "csv", "dataclasses", "difflib", "enum", "fnmatch", "fractions", "functools", "gettext", "glob",
           "graphlib", "heapq", "ipaddress", "json/decoder", "json/encoder", "numbers", "pprint", "queue",
           "random", "sched", "selectors", "shlex", "shutil", "statistics", "string", "tempfile",
           "textwrap", "threading", "timeit", "tokenize", "uuid", "weakref")
# Chapter 6's larger dose reads these too (about 9,600 chunks against 3,081), so that ten times
# the recipe's tokens are still drawn without replacement; also single files from 3.10 to 3.13.
LARGE_MODULES = MODULES + (
    "_pydecimal", "abc", "ast", "bz2", "cmd", "code", "codecs", "codeop", "collections/__init__", "dis",
    "doctest", "email/message", "filecmp", "ftplib", "getopt", "gzip", "hmac", "http/client", "imaplib",
    "inspect", "linecache", "locale", "logging/__init__", "lzma", "mailbox", "mimetypes", "netrc", "ntpath",
    "operator", "optparse", "os", "pdb", "pickle", "plistlib", "poplib", "posixpath", "pstats", "pydoc",
    "quopri", "reprlib", "rlcompleter", "runpy", "secrets", "smtplib", "socket", "socketserver", "ssl",
    "stat", "subprocess", "tabnanny", "tarfile", "token", "trace", "traceback", "types", "typing",
    "urllib/parse", "wave", "webbrowser", "zipapp", "zipimport")
CHUNK_CHARS = 400      # about 120 Gemma tokens: whole lines up to this many characters
MIN_CHARS = 80         # shorter chunks (a file's tail) are dropped
DATA_VERSION = 1       # bump when the chunking changes; the text itself is hashed


def stdlib_folder() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@lru_cache(maxsize=2)
def sources(modules: tuple[str, ...] = MODULES) -> tuple[tuple[str, str], ...]:
    """(file name, text) of every module in `modules`, read from this Python's standard library."""
    folder = stdlib_folder()
    missing = [m for m in modules if not (folder / f"{m}.py").is_file()]
    if missing:
        raise FileNotFoundError(f"the standard library at {folder} lacks {', '.join(missing)}.py; "
                                f"cpbook.llm.code_data.MODULES lists the modules it tunes on")
    return tuple((f"{m}.py", (folder / f"{m}.py").read_text(encoding="utf-8")) for m in modules)


def split_lines(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Consecutive whole lines, at most `limit` characters a chunk (a longer line is cut)."""
    chunks, current = [], ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            chunks.append(current)
            current = ""
        current += line
    if current:
        chunks.append(current)
    return chunks


@lru_cache(maxsize=2)
def chunks(modules: tuple[str, ...] = MODULES) -> tuple[tuple[str, str], ...]:
    """(file name, chunk) pairs in file order; chunks of mostly blank lines are left out."""
    return tuple((name, c) for name, text in sources(modules) for c in split_lines(text)
                 if len(c.strip()) >= MIN_CHARS)


def version(modules: tuple[str, ...] = MODULES) -> dict:
    """What identifies the data: the chunking version and the SHA-256 of the text read."""
    digest = cache.sha256_bytes(name.encode() + b"\0" + text.encode() + b"\0" for name, text in sources(modules))
    return {"code_data_version": DATA_VERSION, "python": sysconfig.get_python_version(),
            "sources_sha256": digest, "chunks": len(chunks(modules))}


def example(seed: int, index: int, modules: tuple[str, ...] = MODULES) -> dict:
    """Example `index` of the stream named by `seed`: every chunk once per epoch, in an order
    drawn from (seed, epoch). The prompt names the file (context, not a target); the chunk is
    the target, with no end-of-sequence token after it (a chunk is not the end of a file)."""
    pool = chunks(modules)
    epoch, i = divmod(index, len(pool))
    order = np.random.default_rng([seed, epoch]).permutation(len(pool))
    name, text = pool[order[i]]
    return {"kind": "code", "prompt": f"# Python standard library: {name}\n", "answer": text, "eos": False}


def examples(seed: int, start: int, n: int) -> list[dict]:
    return [example(seed, i) for i in range(start, start + n)]


@dataclass(frozen=True)
class Corpus:
    """The stream over another list of modules: a tuning set like the module itself
    (`examples` and `version`)."""
    modules: tuple[str, ...]

    def examples(self, seed: int, start: int, n: int) -> list[dict]:
        return [example(seed, i, self.modules) for i in range(start, start + n)]

    def version(self) -> dict:
        return {**version(self.modules), "modules": len(self.modules)}


LARGE = Corpus(LARGE_MODULES)   # chapter 6's tenfold dose
