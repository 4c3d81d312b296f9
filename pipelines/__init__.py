"""The continuous-training pipeline and the cluster objects it launches (kfp, kubernetes)."""
