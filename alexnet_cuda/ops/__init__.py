"""Functional ops, each a drop-in for its torch.nn.functional counterpart."""
