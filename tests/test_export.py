"""ONNX export: static "same" padding, raw outputs, onnxruntime agrees with PyTorch."""
from __future__ import annotations


import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial import export
from effnet_tutorial.layers import Conv2dSame

from .helpers import randomize_

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_static_padding_copy_removes_dynamic_padding_and_keeps_outputs():
    torch.manual_seed(0)
    model = randomize_(et.create_model("tf_efficientnet_b0", num_classes=10)).eval()
    static = export.static_padding_copy(model, 96)
    assert any(isinstance(m, Conv2dSame) for m in model.modules())
    assert not any(isinstance(m, Conv2dSame) for m in static.modules())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_b0"])
def test_efficientnet_onnx_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_(et.create_model(name)).eval()
    path = export.export_onnx(model, tmp_path / f"{name}.onnx", 224)
    assert export.check_onnx(model, path, 224) <= 1e-4


@pytest.mark.slow
def test_efficientdet_onnx_has_raw_level_outputs_and_matches(tmp_path):
    import onnx

    torch.manual_seed(0)
    model = randomize_(et.create_model("tf_efficientdet_d0")).eval()
    path = export.export_onnx(model, tmp_path / "d0.onnx", 256)
    graph = onnx.load(path).graph
    assert [o.name for o in graph.output] == export.output_names(model)
    assert len(graph.output) == 10
    ops = {n.op_type for n in graph.node}
    assert "NonMaxSuppression" not in ops  # NMS stays outside the graph
    assert "Shape" not in ops  # no shape arithmetic: padding and upsampling are static
    assert export.check_onnx(model, path, 256) <= 1e-4


