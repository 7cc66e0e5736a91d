"""Orchestration: the trainer loop, the rollout engine, the batch layout, checkpoints and the trainable discriminators."""
