"""acmtool: Adaptive Computation Modules for pre-trained transformers."""
from setuptools import find_packages, setup

setup(
    name="acmtool",
    version=open("acmtool/_version.py").read().split('"')[1],
    description="Granular conditional computation: turn transformer blocks into Adaptive Computation Modules",
    packages=find_packages(include=["acmtool", "acmtool.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "safetensors", "click>=8", "tqdm"],
    extras_require={
        "models": ["timm>=1.0", "transformers>=4.40"],
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["acmtool=acmtool.cli.main:main"]},
)
