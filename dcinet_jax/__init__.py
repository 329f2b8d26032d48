"""dcinet-jax: cross-modal retrieval methods (DCINet, FGCrossNet, DSFFN, HSLM) on one JAX trainer.

Everything here runs on the accelerator side and never imports TensorFlow; the README's
tour maps the packages, docs/ explains what each computes.
"""
