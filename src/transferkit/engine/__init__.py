"""The training engine: Lightning module, callbacks, run directory, ``finetune``."""
