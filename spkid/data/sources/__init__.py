"""Where utterances come from: readers that turn a data folder (or a download) into
manifest rows. Each module takes paths as arguments and knows nothing about the
repository layout; the `download` stage decides where things live.

    hw4        the ML2021-2023 HW4 Kaggle folder of precomputed log-mel .pt files
    audio_dir  a folder of recordings, one subfolder per speaker
    kaldi      a Kaldi-style folder: wav.scp, utt2spk, optional spk2utt and segments
    fetch      download / check / unpack an archive and tell which of the two it holds
    unseen     the recordings of speakers outside training (data.verify_dir, evaluate.trials)
               as a manifest, and the trials scored on them
    trials     verification trial lists (VoxCeleb and Kaldi formats)
"""
