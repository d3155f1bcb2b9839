"""Training: tokenizer, packed pre-training data, SFT data with masked loss, the training loop, LoRA.

Everything here is plain PyTorch on our `Llama`; the `ember train ...` commands in platform/cli/train.py
drive it. Nothing in this package reads files it was not handed or environment variables.
"""
