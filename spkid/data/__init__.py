"""Where utterances come from and how they are split; imports only spkid.core.

    audio     finding, probing and decoding audio files (soundfile, PyAV); resampling
    manifest  what `download` found, one row per recording (Parquet)
    synthetic the embedded corpus of synthetic voices
    sources/  readers that turn a data folder or a download into manifest rows
    views     views of stored utterances and the train / val / test split
    segments  the training segment index (where crops are drawn from)
"""
