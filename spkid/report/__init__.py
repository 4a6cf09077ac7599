"""Pictures and the report page of a run, from plain arrays and dicts; imports spkid.core
only, so training and scoring both draw with it.

    pictures          writing a PNG reproducibly
    training_curves   the training curves
    evaluation_plots  DET curves, score histograms, t-SNE map, confused speakers
    page              the self-contained HTML report
"""
