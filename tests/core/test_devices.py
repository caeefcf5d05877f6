import pytest
import torch

from barkkit import Pipeline
from barkkit.devices import check_device
from barkkit.errors import PipelineError


@pytest.mark.parametrize(("device", "message"), [
    ("gpu", "unknown device 'gpu'; use cpu, cuda"),
    pytest.param("cuda", "device 'cuda': .*; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")),
    ("cuda:99", "device 'cuda:99'"),
])
def test_a_device_this_machine_lacks_is_a_clear_error_before_any_weights_load(device: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        Pipeline.from_spec({"model": "/nonexistent/folder", "device": device})


def test_a_device_this_machine_has_is_a_torch_device() -> None:
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
