"""Modules, each a drop-in for its torch.nn counterpart."""
