"""Pick a TFLite interpreter without ever importing TensorFlow on the Pi.

ai_edge_litert is Google's maintained runtime and has wheels for aarch64 with numpy 2;
tflite_runtime is the older one (numpy<2 only) still found on many Pis; tensorflow.lite is the
last resort on a workstation that has TensorFlow and nothing else.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Where each backend's Interpreter class lives. TensorFlow's is reached through the public ``tf.lite``
# namespace: the ``tensorflow.lite`` package itself no longer holds it (TensorFlow 2.21).
BACKENDS: dict[str, tuple[str, str]] = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite_runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tensorflow": ("tensorflow", "lite.Interpreter"),
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
        module_name, attribute = BACKENDS[name]
        try:
            found: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            failures.append(f"{name}: {exc}")
            continue
        return found, name
    raise BackendError(
        "no TFLite interpreter could be imported (" + "; ".join(failures) + "); "
        "install one with: pip install ai-edge-litert"
    )


AUTO_THREADS_MAX = 4  # a 48x48 network has too little work per layer to spread over more


def interpreter_threads(requested: int, cpus: int | None = None) -> int:
    """``requested`` threads, or with 0 one fewer than the CPUs this process may run on (``cpus``; systemd's
    CPUAffinity= and containers narrow them), at most AUTO_THREADS_MAX: the spare core keeps capture and MQTT
    running while a frame's faces are classified, and on a CPU without int8 dot-product instructions (a
    Pi 4 or Zero 2 W) the classifier is most of a frame's time."""
    if requested > 0:
        return requested
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(AUTO_THREADS_MAX, cpus - 1))
