"""Log-mel features and the Parquet shards that hold them; imports spkid.core and
spkid.data only.

    logmel    LogMelExtractor: byte-identical log-mels on every x86 CPU
    store     the shard format: ShardWriter, and FeatureStore that maps the shards
    waveform  signal processing for augmentation (speed, generated rooms, noise)
    copies    the augmented copies `features` stores: which, and how each is rendered
    blocks    the block scheduler: rows in blocks, spread over processes and ranks
"""
