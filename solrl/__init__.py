"""solrl: FP4 explore, BF16 train. Distributed RL post-training of text-to-image flow models."""

__version__ = "0.1.0"
