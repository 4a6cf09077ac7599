"""A trained model for use outside the pipeline; imports spkid.core, data, features,
models and scoring.

    export    the submission file, provenance and the threshold a model ships with
    onnx      the embedding graph as ONNX, and ONNX Runtime inference with it
    embedder  an exported model applied to audio files (spkid embed / verify / predict)
    inputs    the files those commands take and the embeddings table they write
"""
