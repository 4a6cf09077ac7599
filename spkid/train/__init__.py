"""Training a speaker model; imports spkid.core, data, features, models and report.

    batches      training batches: random crops, a pure function of (seed, step)
    augment      augmentation of training batches on the device (SpecAugment, noise)
    schedule     the learning rate and the loss margin by step
    state        what a run carries from step to step (RunState), saved as one snapshot
    validation   closed-set accuracy on a seeded sample of val views
    loop         the training loop
    checkpoints  whether a checkpoint may be resumed (its fingerprint)
    averaging    the weights at the last N validations, averaged
    curves       dvclive's per-validation curves
    run          one run around the loop: how it begins, what it leaves
    warm_start   a run started from a trained model (train.init_from, freeze_steps)
"""
