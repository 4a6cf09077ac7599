"""A trained model for use outside the pipeline; imports spkid.core, data, features,
models and scoring.

    export    the submission file, provenance and the threshold a model ships with
    onnx      the embedding graph as ONNX, and ONNX Runtime inference with it
    embedder  SpeakerModel, the Python API: a model applied to audio (spkid embed / verify / predict)
    gallery   enrolled speakers and identification (spkid enroll / identify)
    inputs    the files those commands take and the embeddings table they write
"""
