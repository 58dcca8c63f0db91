"""Training: the DiffusionNFT step on one process (NFTTrainer); distributed groups build on it."""
