"""``python -m effnet_tutorial.benchmark``: the benchmark against timm, torchvision and effdet."""
from .command import main

main()
