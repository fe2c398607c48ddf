"""acmtool: Adaptive Computation Modules for pre-trained transformers.

Building a wheel or a regular install also builds the ONNX Runtime custom-op library with CMake
(custom_ops/) and puts it into the package (acmtool/_lib/); where the build cannot run (no cmake,
compiler or ORT headers) the package installs without it and says so. Editable installs use
`make build`, whose library acmtool.runtime.library_path() finds in build/custom_ops/.

A wheel that carries the library is a platform wheel (py3-none-linux_x86_64: any Python 3, this OS
and CPU family); `make wheel` then gives it its manylinux tag with auditwheel. The sdist holds
custom_ops/ (MANIFEST.in), so `pip install acmtool-*.tar.gz` builds the library from source.
"""
import os
import runpy
import shutil
from pathlib import Path

from setuptools import Distribution, find_packages, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildWithCustomOps(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs use `make build`, found in build/custom_ops
        build = runpy.run_path(str(ROOT / "acmtool" / "runtime" / "build.py"))  # no acmtool import: no torch
        cuda = os.environ.get("ACMTOOL_CUDA", "OFF")  # ON / AUTO add the CUDA kernel (custom_ops/README.md)
        try:
            library = build["build_custom_ops"](ROOT / "build" / "custom_ops", cmake_args=[f"-DACMTOOL_CUDA={cuda}"])
        except build["BuildUnavailable"] as e:
            print(f"acmtool: the custom-op library was not built ({e}); the standard ONNX format still works")
            return
        target = Path(self.build_lib) / "acmtool" / "_lib"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, target / library.name)


class PlatformWheel(bdist_wheel):
    """A wheel with the library inside is tied to the platform, not to a Python version or ABI (the
    library never links Python): py3-none-PLATFORM. Without the library it stays py3-none-any."""

    def get_tag(self):
        _, _, platform = super().get_tag()
        build_lib = Path(self.get_finalized_command("build").build_lib)
        if not any((build_lib / "acmtool" / "_lib").glob("*acmtool_ops*")):
            return "py3", "none", "any"
        return "py3", "none", platform


class WithNativeLibrary(Distribution):
    """Built per platform (build/lib.PLATFORM, installed as platlib): the library is native code."""

    def has_ext_modules(self):
        return True


setup(
    name="acmtool",
    version=open(ROOT / "acmtool" / "_version.py").read().split('"')[1],
    description="Granular conditional computation: turn transformer blocks into Adaptive Computation Modules",
    packages=find_packages(include=["acmtool", "acmtool.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "safetensors", "click>=8", "tqdm"],
    extras_require={
        "models": ["timm>=1.0", "transformers>=4.40"],
        "onnx": ["onnx", "onnxruntime>=1.29", "onnxscript"],
        "plot": ["matplotlib>=3.5"],
        "data": ["pyarrow"],  # Parquet files and Hugging Face datasets folders
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["acmtool=acmtool.cli.main:main"]},
    cmdclass={"build_py": BuildWithCustomOps, "bdist_wheel": PlatformWheel},
    distclass=WithNativeLibrary,
)
