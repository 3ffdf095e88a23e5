"""The predict path: resize-and-pad, decoding, and boxes back in the original image's pixels."""
import numpy as np
import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial.anchors import anchors_for
from effnet_tutorial.data.transforms import IMAGENET_MEAN, normalize, resize_and_pad


def test_resize_and_pad_keeps_aspect_and_fills_with_the_mean():
    image = torch.full((3, 100, 200), 255, dtype=torch.uint8)
    canvas, scale = resize_and_pad(image, 64)
    assert canvas.shape == (3, 64, 64) and scale == pytest.approx(200 / 64)
    assert torch.all(canvas[:, :32, :] == 255)  # the image, resized to 32 x 64, top-left
    torch.testing.assert_close(canvas[:, 40, 10], torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(normalize(canvas[None])[0, :, 40, 10], torch.zeros(3), atol=1e-6)


def test_channels_last_arrays_and_bad_images():
    canvas, _ = resize_and_pad(np.zeros((10, 20, 3), np.uint8), 32)
    assert canvas.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="3 channels"):
        resize_and_pad(torch.zeros(4, 10, 10), 32)
    with pytest.raises(ValueError, match="0-255"):
        resize_and_pad(torch.rand(3, 10, 10), 32)


def test_predicted_boxes_come_back_in_original_pixels():
    """Make the head fire on one known anchor with zero offsets: the detection must be that
    anchor, scaled from the 512 canvas back to the 1024 x 768 image."""
    model = et.create_model("tf_efficientdet_d0", num_classes=2).eval()
    anchors = anchors_for(model, (512, 512))
    target = 4321  # a P3 anchor: location 4321 // 9, anchor 4321 % 9
    level_cells = [64 * 64, 32 * 32, 16 * 16, 8 * 8, 4 * 4]

    def fake_forward(images):
        cls = [torch.full((1, 9 * 2, s, s), -20.0) for s in (64, 32, 16, 8, 4)]
        box = [torch.zeros(1, 9 * 4, s, s) for s in (64, 32, 16, 8, 4)]
        cell, a = divmod(target, 9)
        y, x = divmod(cell, 64)
        cls[0][0, a * 2 + 1, y, x] = 5.0  # class 1
        return cls, box

    model.forward = fake_forward
    assert sum(level_cells) * 9 == len(anchors)
    image = torch.zeros(3, 768, 1024, dtype=torch.uint8)
    det = model.predict(image, score_threshold=0.5)[0]
    assert det["labels"].tolist() == [1]
    expected = anchors[target] * 2.0  # 1024 / 512
    expected = torch.min(expected.clamp(min=0), torch.tensor([1024.0, 768, 1024, 768]))
    torch.testing.assert_close(det["boxes"][0], expected)
    assert det["scores"][0] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
