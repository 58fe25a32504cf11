"""Makes this Python look like the lent GPU machine's, for `bash bench/gpu_check.sh --cpu-smoke`: Ray,
onnx2torch and lpips are not installed there, so here they cannot be imported either.

The shell puts this folder first on PYTHONPATH, and Python imports `sitecustomize` at start-up (child
processes too, as they inherit PYTHONPATH). A finder placed first on `sys.meta_path` answers every import of
those packages, and of their submodules, with the ModuleNotFoundError a missing package gives.
"""
import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("ray", "onnx2torch", "lpips")


class NotOnTheGpuMachine(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named '{name}' (blocked by bench/device_python: the GPU "
                                      "machine does not have it)", name=name)
        return None


sys.meta_path.insert(0, NotOnTheGpuMachine())
