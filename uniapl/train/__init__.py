"""Orchestration: the trainer loop, the batch layout, checkpoints and the trainable discriminators."""
