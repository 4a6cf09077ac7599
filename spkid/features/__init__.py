"""Log-mel features and the Parquet shards that hold them; imports spkid.core and
spkid.data only.

    logmel    LogMelExtractor: byte-identical log-mels on every x86 CPU
    store     the shard format: ShardWriter, and FeatureStore that maps the shards
    extract   one block of the manifest made into shards (what determines their bytes)
    blocks    the block scheduler: blocks named by their content, kept between runs,
              written over processes and ranks
    waveform  waveform augmentation: generated rooms, speed, noise (the reference the
              log-mel augmentation of training is tested against)
    vad       speech detection (Silero, the vad extra): recordings cut to their speech
"""
