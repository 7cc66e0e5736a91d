"""Pure algorithm code: losses, advantages, the dual update and the discriminator. No I/O, no trainer state."""
