"""modelexport: PyTorch / Hugging Face models to ONNX, every node tagged with the nn.Module that produced it."""

__version__ = "0.1.0"
