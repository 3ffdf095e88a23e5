"""Freezing for fine-tuning: same outputs, no gradients, statistics that no batch changes."""
import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial.finetune import FrozenBatchNorm2d, count_trainable, freeze

from .helpers import randomize_


def test_frozen_network_computes_what_it_did_in_eval_mode():
    torch.manual_seed(0)
    model = randomize_(et.create_model("efficientnet_lite0", num_classes=5, dropout=0.0,
                                       drop_path_rate=0.0)).eval()  # training mode adds no noise
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    freeze(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert count_trainable(model) == 0
    with torch.no_grad():
        after = model.train()(x)  # training mode: the same map, up to float32 rounding of the
    # folded scale and shift, which grows with the size of the logits (up to ~40 here)
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


def test_frozen_backbone_does_not_move_while_the_rest_trains():
    torch.manual_seed(0)
    detector = et.create_model("tf_efficientdet_lite0", num_classes=2, image_size=128)
    frozen_state = {k: v.clone() for k, v in freeze(detector.backbone).state_dict().items()}
    head_before = detector.class_head.predict.pointwise.weight.clone()
    assert 0 < count_trainable(detector) < et.count_parameters(detector)
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.1)
    cls, box = detector.train()(torch.randn(2, 3, 128, 128))
    (sum(c.square().mean() for c in cls) + sum(b.square().mean() for b in box)).backward()
    optimizer.step()
    assert all(torch.equal(v, frozen_state[k]) for k, v in detector.backbone.state_dict().items())
    assert not torch.equal(detector.class_head.predict.pointwise.weight, head_before)
    assert all(p.grad is None for p in detector.backbone.parameters())


def test_freeze_explains_a_lone_batch_norm():
    with pytest.raises(ValueError, match="holds this BatchNorm2d"):
        freeze(torch.nn.BatchNorm2d(3))
    assert "eps=1e-05" in repr(FrozenBatchNorm2d(torch.nn.BatchNorm2d(3)))
