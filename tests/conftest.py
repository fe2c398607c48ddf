import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_vit():
    """timm's registered test_vit: 64 wide, 6 deep, 160 px; random weights, eval mode."""
    import timm
    return timm.create_model("test_vit").eval()
