"""Load an untrusted pickle that should hold only numpy arrays, containers and plain values.

A pickle is a program: loading one can call any function it names, and a few hundred bytes
can describe a structure of gigabytes (a list holding ten references to a list holding ten
references to ...; numpy then copies every reference when it converts the list). So a file
is read in two passes:

1. `scan` walks the opcodes without building anything. It refuses any global outside
   `ALLOWED_GLOBALS`, any opcode that makes instances of arbitrary classes or refers to
   objects outside the file, and any structure whose size, with every shared reference
   counted as a copy, is over `max_size`, or whose nesting is deeper than `max_depth`.
2. Only then does the C unpickler build it, resolving globals from the same table.

The allowed globals are the ones numpy writes for arrays and scalars under pickle protocols
2 to 5 (numpy 1 and 2 module names), wrapped so that they build nothing larger than the
bytes the file holds, plus `_codecs.encode` for latin-1 (how protocol 2 stores bytes written
by Python 3). A refusal raises `UnsafePickle`; a file that is not a valid pickle raises
whatever the unpickler raises (the caller names the file).
"""
from __future__ import annotations

import codecs
import io
import pickle
import pickletools
from typing import Callable, Dict, Tuple

import numpy as np

# Nesting a real numpy batch needs: dict > array > (args tuple > dtype > args tuple) = 5.
MAX_DEPTH = 16
# Bytes of the built structure per byte of file: a list of small ints costs 2 file bytes
# and 16 built bytes per entry; a nested list of shared references costs millions.
MAX_EXPANSION = 16
SLACK = 1 << 20
# Largest dtype item numpy's globals may build (a plain CIFAR batch uses 1 and 8).
_MAX_ITEMSIZE = 64


class UnsafePickle(pickle.UnpicklingError):
    """The pickle asks for something a data file never needs; refused before it is built."""


class RefusedGlobal(UnsafePickle):
    """The pickle names a function or class outside ALLOWED_GLOBALS (the message is its name)."""


class _NdarrayType:
    """Stands for numpy.ndarray in a pickle: passed to `_reconstruct`, never called (calling
    ndarray(shape) would allocate whatever shape the file names)."""


_NDARRAY = _NdarrayType()


def _plain_dtype(dtype) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.subdtype is not None \
            or dtype.itemsize > _MAX_ITEMSIZE:
        raise UnsafePickle(f"names numpy dtype {dtype!r} (only plain numeric dtypes are accepted)")
    return dtype


def _reconstruct(subtype, shape, dtype):
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') then BUILD with its state,
    # whose bytes must match the shape: only the empty template is built here.
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise UnsafePickle("calls numpy _reconstruct other than as numpy writes it "
                           "(ndarray, (0,), dtype)")
    return _multiarray()._reconstruct(np.ndarray, (0,), dtype)


def _frombuffer(buf, dtype, shape, order):
    # Protocol 5: the array's bytes, viewed with its dtype and shape (never more than buf).
    if not isinstance(buf, (bytes, bytearray)):
        raise UnsafePickle("calls numpy _frombuffer without the array's bytes")
    return _numeric()._frombuffer(buf, _plain_dtype(dtype), shape, order)


def _scalar(dtype, data=None):
    _plain_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickle("builds a numpy scalar without exactly its dtype's bytes")
    return _multiarray().scalar(dtype, data)


def _encode(text, encoding="utf-8", errors="strict"):
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickle(f"calls _codecs.encode with {encoding!r} (only latin-1 text is accepted)")
    return codecs.encode(text, encoding, errors)


def _multiarray():
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    return multiarray


def _numeric():
    try:
        from numpy._core import numeric
    except ImportError:  # numpy 1
        from numpy.core import numeric
    return numeric


def _allowed() -> Dict[Tuple[str, str], Callable]:
    table = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): np.dtype,
             ("_codecs", "encode"): _encode}
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{core}.multiarray", "scalar")] = _scalar
        table[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return table


ALLOWED_GLOBALS = _allowed()

_LEAVES = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING",
           "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
           "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT",
           "BINFLOAT", "NONE", "NEWTRUE", "NEWFALSE"}
_EMPTY = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"}
_FROM_MARK = {"LIST", "TUPLE", "DICT", "FROZENSET"}
_NOOPS = {"PROTO", "FRAME", "READONLY_BUFFER"}


class _Node:
    """What the scan knows of one object: its size in bytes (shared references counted as
    copies), its nesting depth, and whether it already sits inside another object."""
    __slots__ = ("size", "depth", "used", "text")

    def __init__(self, size=8, depth=0, text=None):
        self.size, self.depth, self.used, self.text = size, depth, False, text


_MARK = object()


def scan(data: bytes, max_size: int, max_depth: int = MAX_DEPTH) -> None:
    """Walk the opcodes of `data`; raise UnsafePickle if building it could need more than
    `max_size` bytes or `max_depth` levels, or would name a global or an opcode that a data
    file never needs. Builds nothing but this bookkeeping (O(opcodes))."""
    stack: list = []
    memo: dict = {}

    def pop_to_mark():
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1:]
                del stack[i:]
                return items
        raise UnsafePickle("pops to a MARK that is not there")

    def pop():
        if not stack or stack[-1] is _MARK:
            raise UnsafePickle("pops from an empty stack")
        return stack.pop()

    def top():
        if not stack or stack[-1] is _MARK:
            raise UnsafePickle("uses an empty stack")
        return stack[-1]

    def grow(parent: _Node, children) -> _Node:
        if parent.used:
            # An object changed after it was put inside another one: sizes already counted
            # would be wrong (and a list that holds itself is infinitely deep).
            raise UnsafePickle("changes an object after using it (or holds itself)")
        for c in children:
            if c is _MARK:
                raise UnsafePickle("holds a MARK as an object")
            if c is parent:
                raise UnsafePickle("holds itself")
            c.used = True
            parent.size += c.size + 8
            parent.depth = max(parent.depth, c.depth + 1)
        if parent.size > max_size:
            raise UnsafePickle(f"describes a structure of more than {max_size} bytes "
                               f"(shared references counted as copies)")
        if parent.depth > max_depth:
            raise UnsafePickle(f"nests deeper than {max_depth} levels")
        return parent

    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in _NOOPS:
            continue
        if name == "STOP":
            break
        if name in _LEAVES:
            size = len(arg) if isinstance(arg, (bytes, str)) else 8
            stack.append(_Node(size + 8, text=arg if isinstance(arg, str) else None))
        elif name == "MARK":
            stack.append(_MARK)
        elif name in _EMPTY:
            stack.append(_Node())
        elif name in _FROM_MARK:
            stack.append(grow(_Node(), pop_to_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = [pop() for _ in range(int(name[-1]))][::-1]
            stack.append(grow(_Node(), items))
        elif name == "APPEND":
            item = pop()
            grow(top(), [item])
        elif name == "SETITEM":
            value, key = pop(), pop()
            grow(top(), [key, value])
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            items = pop_to_mark()
            grow(top(), items)
        elif name == "POP":
            if not stack:
                raise UnsafePickle("pops from an empty stack")
            stack.pop()
        elif name == "POP_MARK":
            pop_to_mark()
        elif name == "DUP":
            stack.append(top())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            # Picklers number memo entries 0, 1, 2...; a far larger index makes the C
            # unpickler grow its memo table to it (an 8-byte file could ask for 16 GB).
            if not isinstance(arg, int) or arg > len(memo):
                raise UnsafePickle(f"stores memo entry {arg} out of sequence")
            memo[arg] = top()
        elif name == "MEMOIZE":
            memo[len(memo)] = top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise UnsafePickle(f"refers to memo entry {arg}, which it never stored")
            stack.append(memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, _, attr = arg.partition(" ")
            else:
                attr_node, module_node = pop(), pop()
                module, attr = module_node.text, attr_node.text
            if (module, attr) not in ALLOWED_GLOBALS:
                raise RefusedGlobal(f"{module}.{attr}")
            stack.append(_Node())
        elif name == "REDUCE":
            args = pop()
            pop()
            stack.append(grow(_Node(), [args]))
        elif name == "BUILD":
            state = pop()
            grow(top(), [state])
        elif name == "NEXT_BUFFER":
            raise UnsafePickle("keeps its data outside the file (out-of-band buffers)")
        else:  # PERSID, BINPERSID, EXT1/2/4, INST, OBJ, NEWOBJ, NEWOBJ_EX
            raise UnsafePickle(f"uses the {name} opcode, which no data file needs")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise UnsafePickle("refers to an object outside the file (a persistent id)")


def load(data: bytes, *, max_size: int | None = None, max_depth: int = MAX_DEPTH,
         encoding: str = "bytes"):
    """`scan` then unpickle `data`; max_size defaults to MAX_EXPANSION x len(data) + 1 MiB.
    encoding="bytes" keeps Python 2 strings (the CIFAR batches' keys) as bytes."""
    if max_size is None:
        max_size = MAX_EXPANSION * len(data) + SLACK
    scan(data, max_size, max_depth)
    return _Unpickler(io.BytesIO(data), encoding=encoding).load()
