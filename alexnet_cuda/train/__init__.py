"""Training AlexNet the paper's way: ``python -m alexnet_cuda.train --help``.

Importable API::

    from alexnet_cuda.train import TrainConfig, train
    result = train(TrainConfig(data="/data/imagenet", epochs=90))   # or train(cfg, model=my_module)

See README.md here for the recipe, resuming and the demo. Modules: data (ImageFolder
decoding, 256x256 preprocessing, mean/PCA cache), augment (GPU crops/flips/PCA noise, 10-crop views), optim (the paper's SGD, lr schedules), evaluate
(centre and 10-crop top-1/top-5), checkpoint (atomic, exact resume), distributed (torchrun,
DDP), training_run (data, model, optimiser, resume), loop (epochs, evaluation, checkpoint and
stop), monitor (the NaN/inf guard), resume (what a resume may change), model_factory (model factory, the demo's SmallAlexNet), demo
(scikit-learn digits as an ImageFolder), logs (progress, CSV, TensorBoard, curves).
"""

from .config import TrainConfig
from .loop import train
from .model_factory import SmallAlexNet, build_model
from .monitor import NonFiniteLossError
from .optim import MilestoneSchedule, PaperSGD, PlateauSchedule

__all__ = [
    "TrainConfig",
    "train",
    "NonFiniteLossError",
    "build_model",
    "SmallAlexNet",
    "PaperSGD",
    "PlateauSchedule",
    "MilestoneSchedule",
]
