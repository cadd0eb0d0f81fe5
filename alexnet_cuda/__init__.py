"""alexnet_cuda: AlexNet (Krizhevsky, Sutskever, Hinton 2012) with custom CUDA and Triton kernels.

import alexnet_cuda
y = alexnet_cuda.ops.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=2.0)
layer = alexnet_cuda.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
y = alexnet_cuda.ops.max_pool2d(x, kernel_size=3, stride=2)
y = alexnet_cuda.ops.conv2d_relu(x, weight, bias, stride=4)
y = alexnet_cuda.ops.relu_lrn_max_pool2d(x, 5, 1e-4, 0.75, 2.0, 3, 2, lrn_groups=2)
model = alexnet_cuda.models.AlexNet()          # the paper's two-tower network
model = alexnet_cuda.convert(stock_model)      # swap stock layers for fused ones
alexnet_cuda.onnx.export(model, (x,), "m.onnx")  # after `import alexnet_cuda.onnx` (extra)
"""

from . import _extension  # noqa: F401  (loads the compiled ops first)
from . import config, ops, nn  # noqa: F401
from . import models  # noqa: F401
from .convert import convert  # noqa: F401
from ._extension import has_cuda_kernels, library_path  # noqa: F401

__version__ = "0.1.0"
