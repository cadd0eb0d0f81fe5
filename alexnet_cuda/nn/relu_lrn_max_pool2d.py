"""``ReLULRNMaxPool2d``: AlexNet's ReLU -> LRN -> overlapping max-pool stage, fused."""

from torch import nn

from ..ops.relu_lrn_max_pool2d import check_args, relu_lrn_max_pool2d


class ReLULRNMaxPool2d(nn.Module):
    """``MaxPool2d(kernel_size, stride)(LocalResponseNorm(size, alpha, beta, k)(ReLU()(x)))``
    in one kernel (forward and backward), without parameters.

    ``lrn_groups=g`` splits the channels into ``g`` equal contiguous groups and keeps every
    LRN window inside its group: ``g=2`` is the paper's per-GPU LRN on one device.
    ``paper_alpha=True`` applies ``alpha`` to the raw sum of squares (the paper's text)
    instead of ``alpha / size`` (PyTorch's convention, what the original code computed).
    The paper's stage is ``ReLULRNMaxPool2d(5, 1e-4, 0.75, 2.0, 3, 2, lrn_groups=2)``.
    Backward keeps only the input and one byte per pooled output.
    """

    def __init__(
        self, size=5, alpha=1e-4, beta=0.75, k=2.0, kernel_size=3, stride=2, *, lrn_groups=1, paper_alpha=False
    ):
        super().__init__()
        # Every argument but the input is checked now, with the op's own rules and errors,
        # so a bad layer fails where it is built, not at its first forward.
        check_args(size, alpha, beta, k, kernel_size, stride, lrn_groups)
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.lrn_groups = lrn_groups
        self.paper_alpha = paper_alpha

    def forward(self, input):
        return relu_lrn_max_pool2d(
            input,
            self.size,
            self.alpha,
            self.beta,
            self.k,
            self.kernel_size,
            self.stride,
            lrn_groups=self.lrn_groups,
            paper_alpha=self.paper_alpha,
        )

    def extra_repr(self):
        s = (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, lrn_groups={self.lrn_groups}"
        )
        return s + (", paper_alpha=True" if self.paper_alpha else "")
