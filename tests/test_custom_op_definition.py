"""One op definition for every kernel of ai.acmtool::DynamicLearners.

custom_ops/dynamic_learners/op_definition.{h,cc} holds the schema, the attribute, the input views and
every input check; the CPU and CUDA kernels hold only their compute. Copies of the checks drifted
before (a token limit in one kernel only), so these tests read the sources and fail when a kernel
grows its own copy again. Standard library only: runs on any machine, GPU or not.
"""
from __future__ import annotations

import pytest

from acmtool.runtime.build import SOURCE_DIR

DEFINITION = (SOURCE_DIR / "dynamic_learners" / "op_definition.h", SOURCE_DIR / "dynamic_learners" / "op_definition.cc")
KERNELS = {
    "CPU": (SOURCE_DIR / "dynamic_learners" / "dynamic_learners.cc",
            SOURCE_DIR / "dynamic_learners" / "dynamic_learners.h"),
    "CUDA": (SOURCE_DIR / "cuda" / "dynamic_learners_cuda.cc", SOURCE_DIR / "cuda" / "dynamic_learners_cuda.h"),
}
# A piece of each check's message and of the glue: each must be written once, in the definition.
SHARED = (
    "are required inputs", "K must be int64", "must share one dtype", "W1 and W2 must be [N, Din, h]",
    "does not match W1", "X must be [...", "K must have X's shape", "B1 must be [", "B2 must be [",
    "K must lie in [0, ", "tokens per call", "the string attribute 'activation' is required", "activation '",
    '"float64"', "KernelInfoGetAttribute_string", "struct InputView", "INPUT_OUTPUT_OPTIONAL",
)
# What each kernel must call instead.
USES = ("dynamic_learners::ViewInputs(", "dynamic_learners::CheckInputs(", "dynamic_learners::CheckKRange(",
        "dynamic_learners::ReadActivation(", "dynamic_learners::Op<")


def _text(paths) -> str:
    return "".join(p.read_text() for p in paths)


@pytest.mark.parametrize("fragment", SHARED)
def test_each_check_is_written_once_in_the_definition(fragment):
    assert fragment in _text(DEFINITION), f"{fragment!r} is no longer in op_definition.h or .cc"
    for kernel, paths in KERNELS.items():
        assert fragment not in _text(paths), (
            f"the {kernel} kernel has its own copy of {fragment!r}; use op_definition.h instead")


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_each_kernel_uses_the_definition(kernel):
    source = _text(KERNELS[kernel])
    missing = [use for use in USES if use not in source]
    assert not missing, f"the {kernel} kernel does not call {missing} (custom_ops/dynamic_learners/op_definition.h)"
