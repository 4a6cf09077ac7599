"""Scoring a trained model; imports spkid.core, data, features, models and report.

    metrics     EER, minDCF, the DET curve (RankedTrials: one sort, many weightings)
    bootstrap   seeded resampling of speakers or trials for 95 % intervals
    calibration scores to LLRs (with an optional duration quality measure), Cllr, actual DCF
    trials      which pairs are scored (sampled, or a trial list's)
    norm        score normalisation: training-mean subtraction, AS-norm
    embedding   a model on stored views and on recordings (Scoring)
    evaluation  the metrics of each role and of the unseen speakers
"""
