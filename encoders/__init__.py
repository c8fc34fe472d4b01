"""Text -> word, sentence and document vectors with ONNX-exported BERT encoders.

Runtime needs only onnxruntime, tokenizers and numpy; building the ONNX files
(`interest-stream export-model`) additionally needs the `export` extra.
"""

from encoders.encoder import EmptyTextError, EncodedText, Encoder
from encoders.models import MODELS, ModelSpec, get_spec

__all__ = ["MODELS", "EmptyTextError", "EncodedText", "Encoder", "ModelSpec", "get_spec"]
