"""The shipped injection model read from disk once per test session rather than at every gateway build.

Every Guard reads it (gateway/guard.py injection_detector: InjectionModel.load(), a 1.8 MB gzip, ~13 ms of
CPU), so a directory that builds a gateway in each test read it thousands of times in `make test`. `install`
makes InjectionModel.load keep what it read by file (path, mtime, size) in `loaded` (a session fixture's dict),
and hand out a fresh InjectionModel over the same frozen heads each time: the guard's own code (its cascades,
with_cascade) runs as before, and the weights are made read-only, so a test that wrote to them would fail loudly
rather than change another test's model. A file that does not load (a bad format) raises as before, each time.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel

Loaded = dict[tuple[str, int, int], InjectionModel]


def install(monkeypatch: pytest.MonkeyPatch, loaded: Loaded) -> None:
    """InjectionModel.load, for the rest of the test, reads each model file once into `loaded`."""
    real = InjectionModel.load

    def load(path: Path = DEFAULT_MODEL_PATH) -> InjectionModel:
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
        base = loaded.get(key)
        if base is None:
            base = real(path)
            for head in (base.prompt, base.document):
                head.weights.flags.writeable = False
                if head.weights.base is not None:  # the array it is a view of (load reads both heads as one)
                    head.weights.base.flags.writeable = False
            loaded[key] = base
        return InjectionModel(base.prompt, base.document, base.dim, copy.deepcopy(base.meta))

    monkeypatch.setattr(InjectionModel, "load", staticmethod(load))
