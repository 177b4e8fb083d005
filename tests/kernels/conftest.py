"""Kernel tests: a faster Triton interpreter for nested @triton.jit calls.

Triton's interpreter re-patches the language modules on every call of a nested jit function
(`InterpretedFunction.__call__` -> `_patch_lang`, about 1 ms each), including tl.sum and tl.max,
which are jit functions themselves; the kernels make thousands of such calls per launch. The
patch is the same every time within one launch (and is never undone for nested calls), so here
it runs once per function per launch. Semantics are unchanged; if Triton's internals differ
from what this expects, nothing is patched and the tests just run slower.
"""
import os


def pytest_configure(config):
    # .ci/run runs `-m every_kernel` under the lowest and the highest supported Triton.
    config.addinivalue_line(
        "markers", "every_kernel: the fast subset that launches every kernel (and compiles the "
        "top-K ones for sm_90); CI runs it under each end of the supported Triton range")


if os.environ.get("TRITON_INTERPRET") == "1":
    try:
        import triton.runtime.interpreter as _ti
        _patch_lang = _ti._patch_lang
        _grid_call = _ti.GridExecutor.__call__
        _fn_call = _ti.InterpretedFunction.__call__
        _rewrite = _ti.InterpretedFunction.rewrite
        _error = _ti.InterpreterError
    except (ImportError, AttributeError):
        _ti = None

    if _ti is not None:
        _patched = set()

        def _launch(self, *args, **kwargs):
            _patched.clear()
            return _grid_call(self, *args, **kwargs)

        def _nested(self, *args, **kwargs):
            if id(self.fn) not in _patched:
                _patch_lang(self.fn)
                _patched.add(id(self.fn))
            fn = self.rewrite()
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                raise _error(repr(e)) from e

        _ti.GridExecutor.__call__ = _launch
        _ti.InterpretedFunction.__call__ = _nested
