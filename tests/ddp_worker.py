"""Run by tests/test_train.py under torchrun: two CPU processes (gloo) train two steps with DDP."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from effnet_tutorial import create_model
from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.data.transforms import train_transforms
from effnet_tutorial.train import SeededAugmentation, TrainConfig, Trainer

data, out = Path(sys.argv[1]), Path(sys.argv[2])
raw = CocoDetection(data / "images" / "train", data / "annotations" / "instances_train.json")
train_set = SeededAugmentation(raw, train_transforms(64, (0.5, 1.5)), seed=0)
model = create_model("tf_efficientdet_d0", num_classes=4, fpn_channels=16, fpn_repeats=1, head_repeats=1)
config = TrainConfig(epochs=1, batch_size=2, lr=0.01, num_workers=0, ema_decay=0.0, progress=False,
                     log_every=1)
trainer = Trainer(model, train_set, config, out)
trainer.fit(max_steps=2)
torch.save(trainer.model.state_dict(), out / f"rank{dist.get_rank()}.pth")
dist.destroy_process_group()
