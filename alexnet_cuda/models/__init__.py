"""Models: the paper's AlexNet (one device or two) and the seed-style stock reference.

from alexnet_cuda.models import AlexNet
model = AlexNet()                                  # one device, fused layers
model = AlexNet(devices=("cuda:0", "cuda:1"))      # one tower per GPU, as in the paper
"""

from .alexnet import PAPER_LRN, AlexNet, LRNParams
from .reference import REFERENCE_KEY_MAP, ReferenceAlexNet, convert_reference_state_dict, reference_alexnet
from .towers import TowerPair

__all__ = [
    "AlexNet",
    "LRNParams",
    "PAPER_LRN",
    "TowerPair",
    "ReferenceAlexNet",
    "reference_alexnet",
    "REFERENCE_KEY_MAP",
    "convert_reference_state_dict",
]
