"""``LocalResponseNorm``: a drop-in for ``torch.nn.LocalResponseNorm`` on our kernels."""

from torch import nn

from ..ops.lrn import local_response_norm


class LocalResponseNorm(nn.LocalResponseNorm):
    """Same constructor, ``state_dict`` (empty) and repr as ``torch.nn.LocalResponseNorm``.

    ``paper_alpha=True`` (keyword-only) uses the paper's convention, alpha applied to the
    raw sum of squares, instead of PyTorch's alpha / size. The paper's layer is
    ``LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)`` in PyTorch's convention (what
    the original code computed).
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, *, paper_alpha=False):
        super().__init__(size, alpha, beta, k)
        self.paper_alpha = paper_alpha

    def forward(self, input):
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k, paper_alpha=self.paper_alpha)

    def extra_repr(self):
        return super().extra_repr() + (", paper_alpha=True" if self.paper_alpha else "")
