"""``MaxPool2d``: a drop-in for ``torch.nn.MaxPool2d`` on our kernels."""

from torch import nn

from ..ops.max_pool2d import max_pool2d


class MaxPool2d(nn.MaxPool2d):
    """Same constructor, attributes, repr and results as ``torch.nn.MaxPool2d``.

    AlexNet's overlapping pooling is ``MaxPool2d(kernel_size=3, stride=2)``. When
    ``return_indices`` is False, training saves a 1-byte window-local argmax per output
    element for backward instead of PyTorch's 8-byte index.
    """

    def forward(self, input):
        return max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )
