"""Conv2d followed by ReLU as one module backed by the fused ``conv2d_relu`` op."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.conv2d_relu import conv2d_relu


class Conv2dReLU(nn.Conv2d):
    """``nn.Sequential(nn.Conv2d(...), nn.ReLU())`` in one module and one kernel on CUDA.

    Same constructor, parameters, ``state_dict`` keys (``weight``, ``bias``) and repr
    as :class:`torch.nn.Conv2d`, so checkpoints load either way. Build one from an
    existing convolution with :meth:`from_conv`.

    Layout: on CUDA channels_last input is the fast path; NCHW input is copied to NHWC
    for the kernel (the caller's tensor is not modified). The output is
    channels_last when the input or the weight is channels_last, otherwise NCHW,
    like ``nn.Conv2d`` on cuDNN. Non-"zeros" ``padding_mode`` pads the input first
    (as ``nn.Conv2d`` does) and then runs the fused op without padding.
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d_relu(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d_relu(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, share_weights: bool = True) -> "Conv2dReLU":
        """A Conv2dReLU computing ``relu(conv(x))``.

        ``share_weights=True`` (default) reuses ``conv``'s Parameter objects, so an
        optimizer or a later load into either module affects both;
        ``share_weights=False`` copies them (same layout, dtype, device, requires_grad).
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"Conv2dReLU.from_conv: conv must be an nn.Conv2d, got {type(conv).__name__}")
        # Build on the meta device (no init work), then install conv's parameters.
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
            dtype=conv.weight.dtype,
        )
        for name in ("weight", "bias"):
            param = getattr(conv, name)
            if param is not None and not share_weights:
                param = nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
            setattr(new, name, param)
        new.train(conv.training)
        return new
