"""Pick a TFLite interpreter without ever importing TensorFlow on the Pi.

ai_edge_litert is Google's maintained runtime and has wheels for aarch64 with numpy 2;
tflite_runtime is the older one (numpy<2 only) still found on many Pis; tensorflow.lite is the
last resort on a workstation that has TensorFlow and nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS: dict[str, str] = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}


class BackendError(RuntimeError):
    """No usable TFLite interpreter for the requested backend."""


def interpreter_class(backend: str = "auto") -> tuple[Any, str]:
    """Return (Interpreter class, backend name) for ``backend`` or the first that imports."""
    if backend != "auto" and backend not in BACKENDS:
        raise BackendError(f"unknown TFLite backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}")
    names = list(BACKENDS) if backend == "auto" else [backend]
    failures = []
    for name in names:
        try:
            module = importlib.import_module(BACKENDS[name])
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        return module.Interpreter, name
    raise BackendError(
        "no TFLite interpreter could be imported (" + "; ".join(failures) + "); "
        "install one with: pip install ai-edge-litert"
    )
