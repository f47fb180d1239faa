"""Training: synthetic degradations, losses, discriminators and the training loops."""
