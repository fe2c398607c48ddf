import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state: a test that fails one run in a hundred blocks a
    landing one day. Tests that need their own seed set it after this."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_vit():
    """timm's registered test_vit: 64 wide, 6 deep, 160 px; random weights, eval mode."""
    import timm
    return timm.create_model("test_vit").eval()
